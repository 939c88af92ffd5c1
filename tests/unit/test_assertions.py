"""Portal hand-off assertions: key ring, issuer, the reference verifier and the JWKS route."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from portal_links.assertions.issuer import AssertionIssuer
from portal_links.assertions.jwk import jwk_thumbprint
from portal_links.assertions.keyring import AssertionKeyRing, KeyState
from portal_links.assertions.timing import MAX_ASSERTION_LIFETIME
from portal_links.assertions.verifier import AssertionRefused, AssertionVerifier
from portal_links.jwks import JWKS_PATH, build_jwks_router
from tests.support.asgi_server import serve_in_thread

ISS = "https://bridge.example-hospital.test"
AUD = "https://portal.example-hospital.test"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=10)  # the next key has been published longer than the JWKS max-age


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(now: datetime = T0, **overrides: Any) -> dict[str, Any]:
    iat = int(now.timestamp())
    base: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "pseudo-7f3a", "iat": iat, "nbf": iat, "exp": iat + 60,
                            "jti": b64(os.urandom(16))}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(ring: AssertionKeyRing, payload: dict[str, Any], **header: Any) -> str:
    key = ring.active_key
    return jwt.encode(payload, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "JWT", **header})


@pytest.fixture
def ring() -> AssertionKeyRing:
    return AssertionKeyRing.generate(T0)


@pytest.fixture
def issuer(ring: AssertionKeyRing) -> AssertionIssuer:
    return AssertionIssuer(ring, ISS, AUD)


def verifier_for(ring: AssertionKeyRing, **kw: Any) -> AssertionVerifier:
    return AssertionVerifier(ring.jwks(), ISS, AUD, **kw)


def refused(verifier: AssertionVerifier, token: str, now: datetime = T0) -> str:
    with pytest.raises(AssertionRefused) as info:
        verifier.verify(token, now=now)
    if token:
        assert token not in str(info.value)
    return info.value.reason


# --- the happy path ---------------------------------------------------------------------------


def test_a_valid_assertion_verifies(ring: AssertionKeyRing, issuer: AssertionIssuer) -> None:
    token = issuer.issue("pseudo-7f3a", now=T0)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": ring.active_key.kid, "typ": "JWT"}
    got = verifier_for(ring).verify(token, now=T0 + timedelta(seconds=30))
    assert got["iss"] == ISS and got["aud"] == AUD and got["sub"] == "pseudo-7f3a"
    assert got["nbf"] == got["iat"] == int(T0.timestamp()) and got["exp"] == got["iat"] + 60
    assert len(base64.urlsafe_b64decode(got["jti"] + "==")) == 16
    assert set(got) == {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"}


def test_each_assertion_has_a_fresh_jti(issuer: AssertionIssuer) -> None:
    jtis = {jwt.decode(issuer.issue("p1", now=T0), options={"verify_signature": False})["jti"] for _ in range(50)}
    assert len(jtis) == 50


def test_kid_is_the_rfc7638_thumbprint(ring: AssertionKeyRing) -> None:
    key = ring.active_key
    x = b64(key.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    expected = b64(hashlib.sha256(('{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}').encode()).digest())
    assert key.kid == expected == jwk_thumbprint(key.private_key.public_key())


def test_issuer_limits_lifetime_and_subject(ring: AssertionKeyRing) -> None:
    with pytest.raises(ValueError):
        AssertionIssuer(ring, ISS, AUD, lifetime=MAX_ASSERTION_LIFETIME + timedelta(seconds=1))
    with pytest.raises(ValueError):
        AssertionIssuer(ring, ISS, AUD, lifetime=timedelta(0))
    AssertionIssuer(ring, ISS, AUD, lifetime=MAX_ASSERTION_LIFETIME)
    issuer = AssertionIssuer(ring, ISS, AUD)
    for bad in ("Patient/123", "", "a b", "x" * 256):
        with pytest.raises(ValueError):
            issuer.issue(bad, now=T0)


# --- refusals -----------------------------------------------------------------------------------


def test_alg_none_is_refused(ring: AssertionKeyRing) -> None:
    token = f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': ring.active_key.kid})}.{b64json(claims())}."
    assert refused(verifier_for(ring), token) == "alg_not_allowed"
    unsigned_same_alg = f"{b64json({'alg': 'EdDSA', 'typ': 'JWT', 'kid': ring.active_key.kid})}.{b64json(claims())}."
    assert refused(verifier_for(ring), unsigned_same_alg) in {"bad_signature", "malformed"}


@pytest.mark.parametrize("secret_form", ["raw", "x", "pem"])
def test_hs256_forged_with_the_public_key_is_refused(ring: AssertionKeyRing, secret_form: str) -> None:
    public = ring.active_key.private_key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    secret = {"raw": raw, "x": b64(raw).encode(),
              "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)}
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': ring.active_key.kid})}.{b64json(claims())}"
    mac = hmac.new(secret[secret_form], signing_input.encode(), hashlib.sha256).digest()
    assert refused(verifier_for(ring), f"{signing_input}.{b64(mac)}") == "alg_not_allowed"


def test_unknown_kid_is_refused(ring: AssertionKeyRing) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), stranger, algorithm="EdDSA",
                       headers={"kid": jwk_thumbprint(stranger.public_key()), "typ": "JWT"})
    assert refused(verifier_for(ring), token) == "unknown_kid"


def test_a_known_kid_with_another_keys_signature_is_refused(ring: AssertionKeyRing) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), stranger, algorithm="EdDSA", headers={"kid": ring.active_key.kid, "typ": "JWT"})
    assert refused(verifier_for(ring), token) == "bad_signature"


@pytest.mark.parametrize("kid", ["../x", "/", "a/b", "a\\b", "..\\..\\etc", "k" * 65, "abc=", "a.b", "a b",
                                 "ключ", "", 123, None])
def test_odd_kids_are_refused_before_any_lookup(ring: AssertionKeyRing, kid: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = verifier_for(ring)

    def no_lookup(_kid: str) -> None:
        raise AssertionError("looked up a malformed kid")

    monkeypatch.setattr(verifier, "_public_key", no_lookup)
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    token = f"{signing_input}.{b64(ring.active_key.private_key.sign(signing_input.encode()))}"
    assert refused(verifier, token) == "bad_kid"


def test_wrong_audience_or_issuer_is_refused(ring: AssertionKeyRing) -> None:
    verifier = verifier_for(ring)
    assert refused(verifier, AssertionIssuer(ring, ISS, "https://other-portal.test").issue("p", T0)) == "wrong_audience"
    assert refused(verifier, AssertionIssuer(ring, "https://evil.test", AUD).issue("p", T0)) == "wrong_issuer"
    assert refused(verifier, sign(ring, claims(aud=[AUD, "https://other.test"]))) == "wrong_audience"


def test_missing_claims_are_refused(ring: AssertionKeyRing) -> None:
    for name in ("iss", "aud", "sub", "iat", "nbf", "exp", "jti"):
        payload = claims()
        del payload[name]
        assert refused(verifier_for(ring), sign(ring, payload)) == "missing_claim", name


def test_expired_is_refused_after_the_leeway(ring: AssertionKeyRing, issuer: AssertionIssuer) -> None:
    token = issuer.issue("p", now=T0)
    assert verifier_for(ring).verify(token, now=T0 + timedelta(seconds=64))
    assert refused(verifier_for(ring), token, now=T0 + timedelta(seconds=65)) == "expired"


def test_future_dated_is_refused(ring: AssertionKeyRing, issuer: AssertionIssuer) -> None:
    verifier = verifier_for(ring)
    assert refused(verifier, issuer.issue("p", now=T0 + timedelta(seconds=30))) == "not_yet_valid"
    iat = int(T0.timestamp())
    assert refused(verifier, sign(ring, claims(nbf=iat + 20))) == "not_yet_valid"
    assert refused(verifier, sign(ring, claims(iat=iat + 20, nbf=iat, exp=iat + 60))) == "not_yet_valid"
    # Inside the leeway a slightly fast clock is tolerated.
    assert verifier.verify(issuer.issue("p", now=T0 + timedelta(seconds=5)), now=T0)


def test_lifetime_over_120_seconds_is_refused(ring: AssertionKeyRing) -> None:
    iat = int(T0.timestamp())
    verifier = verifier_for(ring)
    assert refused(verifier, sign(ring, claims(exp=iat + 121))) == "lifetime_too_long"
    assert refused(verifier, sign(ring, claims(nbf=iat - 100, exp=iat + 60))) == "lifetime_too_long"
    assert verifier.verify(sign(ring, claims(exp=iat + 120)), now=T0)


def test_non_numeric_dates_are_refused(ring: AssertionKeyRing) -> None:
    assert refused(verifier_for(ring), sign(ring, claims(exp="soon"))) == "bad_claim"
    assert refused(verifier_for(ring), sign(ring, claims(iat=True))) == "bad_claim"


def test_a_replayed_jti_is_refused(ring: AssertionKeyRing, issuer: AssertionIssuer) -> None:
    verifier = verifier_for(ring)
    token = issuer.issue("p", now=T0)
    verifier.verify(token, now=T0)
    assert refused(verifier, token, now=T0 + timedelta(seconds=1)) == "replayed"
    same_jti = sign(ring, claims(jti=jwt.decode(token, options={"verify_signature": False})["jti"]))
    assert refused(verifier, same_jti) == "replayed"


def test_the_replay_cache_is_bounded_and_forgets_expired_jtis(ring: AssertionKeyRing,
                                                              issuer: AssertionIssuer) -> None:
    verifier = verifier_for(ring, replay_cache_size=2)
    verifier.verify(issuer.issue("p", now=T0), now=T0)
    verifier.verify(issuer.issue("p", now=T0), now=T0)
    # Full of live jtis: fail closed rather than forget one (which would allow its replay).
    assert refused(verifier, issuer.issue("p", now=T0)) == "replay_cache_full"
    later = T0 + timedelta(seconds=70)
    verifier.verify(issuer.issue("p", now=later), now=later)  # expired entries were purged


def test_garbage_is_malformed(ring: AssertionKeyRing) -> None:
    for token in ("", "abc", "a.b.c", "x" * 5000, "..", "eyJ.eyJ.sig"):
        assert refused(verifier_for(ring), token) == "malformed"


def test_crit_or_odd_typ_header_is_refused(ring: AssertionKeyRing) -> None:
    assert refused(verifier_for(ring), sign(ring, claims(), typ="at+jwt")) == "bad_header"
    assert refused(verifier_for(ring), sign(ring, claims(), crit=["exp"])) == "bad_header"


# --- rotation -----------------------------------------------------------------------------------


def test_next_key_is_published_before_it_signs(ring: AssertionKeyRing) -> None:
    nxt = ring.next_key
    assert nxt is not None
    assert nxt.kid in {k["kid"] for k in ring.jwks()["keys"]}
    rotated = ring.rotate(LATER)
    assert rotated.active_key.kid == nxt.kid
    # A verifier holding the JWKS fetched *before* rotation accepts what the new active key signs.
    old_view = verifier_for(ring)
    assert old_view.verify(AssertionIssuer(rotated, ISS, AUD).issue("p", now=LATER), now=LATER)


def test_rotation_refuses_a_next_key_portals_may_not_have_cached_yet(ring: AssertionKeyRing) -> None:
    with pytest.raises(ValueError):
        ring.rotate(T0 + timedelta(seconds=60))
    assert ring.rotate(T0 + timedelta(seconds=60), min_published=timedelta(0)).active_key.kid == ring.next_key.kid  # type: ignore[union-attr]


def test_assertion_from_before_rotation_verifies_until_pruned(ring: AssertionKeyRing) -> None:
    old_kid = ring.active_key.kid
    token = AssertionIssuer(ring, ISS, AUD, lifetime=MAX_ASSERTION_LIFETIME).issue("p", now=LATER)
    rotated = ring.rotate(LATER + timedelta(seconds=1))
    states = {k.kid: k.state for k in rotated.keys}
    assert states[old_kid] is KeyState.RETIRED
    assert [s for s in states.values()].count(KeyState.ACTIVE) == 1
    assert [s for s in states.values()].count(KeyState.NEXT) == 1
    # Too early to prune: the retired key is still published and the old assertion verifies.
    kept = rotated.prune(LATER + timedelta(seconds=100), MAX_ASSERTION_LIFETIME)
    assert old_kid in {k["kid"] for k in kept.jwks()["keys"]}
    assert verifier_for(kept).verify(token, now=LATER + timedelta(seconds=100))["sub"] == "p"
    # After the max lifetime the retired key is dropped; anything it signed now has an unknown kid.
    pruned = rotated.prune(LATER + timedelta(seconds=1) + MAX_ASSERTION_LIFETIME, MAX_ASSERTION_LIFETIME)
    assert old_kid not in {k["kid"] for k in pruned.jwks()["keys"]}
    assert len(pruned.keys) == 2
    assert refused(verifier_for(pruned), token, now=LATER + timedelta(seconds=100)) == "unknown_kid"


def test_ring_invariants_are_enforced(ring: AssertionKeyRing) -> None:
    with pytest.raises(ValueError):
        AssertionKeyRing(tuple(k for k in ring.keys if k.state is not KeyState.ACTIVE))
    with pytest.raises(ValueError):
        AssertionKeyRing((*ring.keys, ring.active_key))


# --- JWKS and the key file ------------------------------------------------------------------------


def test_jwks_has_public_members_only(ring: AssertionKeyRing) -> None:
    rotated = ring.rotate(LATER)
    jwks = rotated.jwks()
    assert len(jwks["keys"]) == 3
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
        assert "d" not in jwk
    assert jwks["keys"][0]["kid"] == rotated.active_key.kid


def test_key_file_is_0600_round_trips_and_is_not_in_the_jwks(tmp_path: Path) -> None:
    path = tmp_path / "assertion-keys.json"
    ring = AssertionKeyRing.create(path, now=T0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left behind
    loaded = AssertionKeyRing.load(path)
    assert loaded.jwks() == ring.jwks()
    assert [k.state for k in loaded.keys] == [KeyState.ACTIVE, KeyState.NEXT]
    document = json.loads(path.read_text())
    assert document["format"] == "portal-assertion-keys" and document["version"] == 1
    served = json.dumps(ring.jwks())
    for entry in document["keys"]:
        assert entry["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")  # a synthetic key this test generated
        body = "".join(entry["private_key_pem"].splitlines()[1:-1])
        assert body not in served
        private = serialization.load_pem_private_key(entry["private_key_pem"].encode(), None)
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        assert b64(raw) not in served
    with pytest.raises(FileExistsError):
        AssertionKeyRing.create(path)

    rotated = loaded.rotate(LATER)
    rotated.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = AssertionKeyRing.load(path)
    assert again.jwks() == rotated.jwks()
    retired = [k for k in again.keys if k.state is KeyState.RETIRED]
    assert len(retired) == 1 and retired[0].retired_at == LATER


def test_load_refuses_a_readable_or_tampered_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    AssertionKeyRing.create(path, now=T0)
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        AssertionKeyRing.load(path)
    path.chmod(0o600)
    document = json.loads(path.read_text())
    document["keys"][0]["kid"] = "not-the-thumbprint"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError):
        AssertionKeyRing.load(path)


def test_jwks_route_over_http(ring: AssertionKeyRing) -> None:
    current = {"ring": ring}
    app = FastAPI()
    app.include_router(build_jwks_router(lambda: current["ring"]))
    with serve_in_thread(app) as base:
        response = httpx.get(base + JWKS_PATH)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=300"
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body == ring.jwks()
        assert all("d" not in jwk for jwk in body["keys"])
        # What a portal would do: verify with the JWKS it fetched.
        token = AssertionIssuer(ring, ISS, AUD).issue("p", now=T0)
        assert AssertionVerifier(body, ISS, AUD).verify(token, now=T0)["sub"] == "p"
        current["ring"] = ring.rotate(LATER)
        assert httpx.get(base + JWKS_PATH).json() == current["ring"].jwks()
