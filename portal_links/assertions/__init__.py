"""Optional hand-off to the hospital's portal: short-lived EdDSA (Ed25519) signed assertions.

After a patient redeems a portal link, we may send the portal a JWT (RFC 7519, following the
RFC 8725 best practices) saying "this is the patient with portal pseudonym X"; the portal still
decides whether that is enough or whether it asks the patient to log in. The portal verifies the
JWT with our public keys, which we publish as a JWK Set (RFC 7517, OKP keys per RFC 8037) at
``/.well-known/jwks.json`` (see :mod:`portal_links.jwks`).

- :mod:`.timing`: lifetimes, leeway and the JWKS cache age the modules below agree on;
- :mod:`.jwk`: JWK encoding of Ed25519 keys, RFC 7638 thumbprints, reading a JWK Set;
- :mod:`.keyring`: the signing keys, their rotation and their key file;
- :mod:`.issuer`: signing an assertion;
- :mod:`.verifier`: the reference verification a portal runs (and what the tests run).
"""
