"""Publishes the portal-assertion public keys as a JWK Set at ``/.well-known/jwks.json``."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .assertions.keyring import AssertionKeyRing
from .assertions.timing import JWKS_MAX_AGE_SECONDS

JWKS_PATH = "/.well-known/jwks.json"


def build_jwks_router(get_ring: Callable[[], AssertionKeyRing]) -> APIRouter:
    """``get_ring`` is called per request, so a rotated ring is served as soon as it is returned.

    Keep the ``next`` key published for at least the ``max-age`` below before rotating to it
    (:meth:`AssertionKeyRing.rotate` enforces this by default).
    """
    router = APIRouter(include_in_schema=False)

    @router.get(JWKS_PATH)
    def jwks() -> JSONResponse:
        return JSONResponse(get_ring().jwks(), headers={
            "Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}",
            "X-Content-Type-Options": "nosniff",
        })

    return router
