"""X-Hub-Signature-256 over the raw bytes, with rotation and fail-closed behaviour."""

from __future__ import annotations

import hashlib
import hmac
import json

from whatsapp.signature import sign, verify

SECRET = b"app-secret-one"
OLD_SECRET = b"app-secret-old"
# As Meta writes it: "/" escaped, non-ASCII as \u escapes.
META_BODY = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"200000000000002","changes":[{"value":'
    b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"12015550100",'
    b'"phone_number_id":"100000000000001"},"messages":[{"from":"12015550123","id":"wamid.A1",'
    b'"timestamp":"1700000000","type":"text","text":{"body":"Caf\\u00e9 at https:\\/\\/example.org"}}]},'
    b'"field":"messages"}]}]}'
)


def test_sign_is_hmac_sha256_hex_with_prefix() -> None:
    expected = "sha256=" + hmac.new(SECRET, META_BODY, hashlib.sha256).hexdigest()
    assert sign(META_BODY, SECRET) == expected


def test_verify_accepts_the_raw_bytes() -> None:
    assert verify(META_BODY, sign(META_BODY, SECRET), [SECRET])


def test_re_serialised_json_does_not_verify() -> None:
    header = sign(META_BODY, SECRET)
    reserialised = json.dumps(json.loads(META_BODY), separators=(",", ":"), ensure_ascii=False).encode()
    assert reserialised != META_BODY
    assert not verify(reserialised, header, [SECRET])


def test_rotation_accepts_any_configured_secret() -> None:
    header = sign(META_BODY, OLD_SECRET)
    assert verify(META_BODY, header, [SECRET, OLD_SECRET])
    assert not verify(META_BODY, header, [SECRET])


def test_fails_closed() -> None:
    header = sign(META_BODY, SECRET)
    assert not verify(META_BODY, None, [SECRET])
    assert not verify(META_BODY, "", [SECRET])
    assert not verify(META_BODY, header, [])
    assert not verify(META_BODY, sign(META_BODY, b""), [b""])
    assert not verify(META_BODY, header.replace("sha256=", "sha1="), [SECRET])
    assert not verify(META_BODY, header[:-2], [SECRET])
    assert not verify(META_BODY, "sha256=" + "zz" * 32, [SECRET])
    assert not verify(META_BODY + b" ", header, [SECRET])


def test_hex_case_does_not_matter() -> None:
    header = sign(META_BODY, SECRET)
    assert verify(META_BODY, "sha256=" + header[7:].upper(), [SECRET])
