"""What the Graph endpoints share: the bearer-token check and error responses in Meta's shape."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import GraphError

JSON = "application/json"


def error_response(error: GraphError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=JSON,
                    headers={"WWW-Authenticate": "OAuth"} if error.status == 401 else None)


def bearer_check(config: EmulatorConfig) -> Callable[[Request], bool]:
    """``Authorization: Bearer <token>`` or ``?access_token=``, compared in constant time."""
    expected = f"Bearer {config.access_token}".encode()

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = request.query_params.get("access_token")
        given = header.encode() if header else f"Bearer {token}".encode() if token else b""
        return hmac.compare_digest(given, expected)

    return authorised
