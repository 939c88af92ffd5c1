"""Properties of the two unauthenticated surfaces a stranger can reach with anything: ``POST /auth/login``
(any body, any ``Authorization`` header, any content type) and the portal link endpoints ``/l/{token}``
(any token, GET/HEAD/POST). No answer is a server error; afterwards a valid login still works and a
valid link still redirects to the portal (303).

Failed logins and unknown tokens are throttled per client address, so each example comes from its own
documentation address (``X-Forwarded-For``, which uvicorn honours from loopback) and reaches the handler.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import event, given
from hypothesis import strategies as st

from adapter.security.credentials import create_credential
from adapter.security.roles import Role
from adapter.storage.db import transaction
from tests.fuzz.conftest import FUZZ_SETTINGS, Running, next_address
from tests.fuzz.strategies import encode, hostile_text, long_text, often, shaped, with_deep_part

# Latin-1 without surrounding whitespace: what an HTTP client can put in a header (RFC 9110 field-value).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=200).map(lambda text: text.strip().encode("latin-1"))
login_bodies = st.one_of(with_deep_part(shaped({"key": st.one_of(hostile_text, long_text)})).map(encode),
                         st.binary(max_size=300), st.just(b""))
login_headers = st.fixed_dictionaries({}, optional={
    b"Authorization": st.one_of(header_text, header_text.map(lambda text: (b"Bearer " + text).strip())),
    b"Content-Type": st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain",
                                      b"application/x-www-form-urlencoded"])})


@FUZZ_SETTINGS
@given(body=login_bodies, headers=login_headers)
def test_any_login_attempt_is_answered_without_a_server_error(service: Running, body: bytes,
                                                             headers: dict[bytes, bytes]) -> None:
    headers = {**headers, b"X-Forwarded-For": next_address().encode()}
    response = service.http.post("/auth/login", content=body, headers=headers)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])


def test_a_valid_login_works_after_the_fuzzing(service: Running) -> None:
    key = create_credential(service.engine, "fuzz-after-login", Role.AUDITOR, "cli:test")
    response = service.http.post("/auth/login", json={"key": key}, headers={"X-Forwarded-For": "192.0.2.1"})
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    search = service.http.get("/audit/AuditEvent?_count=1", headers={"Authorization": f"Bearer {token}"})
    assert search.status_code == 200, search.text
    service.assert_serving()


tokens = st.one_of(st.text(max_size=80), hostile_text, long_text.map(lambda text: text[:5_000]),
                   st.from_regex(r"\A[A-Za-z0-9_-]{20,60}\Z"))  # looks like a token, is none


@FUZZ_SETTINGS
@given(token=tokens, method=st.sampled_from(["GET", "HEAD", "POST"]),
       user_agent=often(st.just(b"Mozilla/5.0 (synthetic)"), header_text, 4))
def test_any_token_at_the_link_endpoint_is_answered_without_a_server_error(
        service: Running, token: str, method: str, user_agent: bytes) -> None:
    path = "/l/" + quote(token.encode("utf-8", "surrogatepass"), safe="")
    headers = {b"X-Forwarded-For": next_address().encode(), b"User-Agent": user_agent}
    response = service.http.request(method, path, headers=headers)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])


def test_a_valid_link_redirects_after_the_fuzzing(service: Running) -> None:
    with transaction(service.engine) as session:
        token = service.core.links.mint(session, purpose="results", target="report", patient_ref="Patient/77",
                                        resource_ref="DiagnosticReport/5")
    response = service.http.post(f"/l/{token}", headers={"X-Forwarded-For": "192.0.2.2"})
    assert response.status_code == 303, response.text
    service.assert_serving()
