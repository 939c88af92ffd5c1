"""The optional portal hand-off assertion (``portal_assertion_keys_file``): a signed statement of
the patient's portal pseudonym — never the FHIR reference — that the link redirect hands to the
hospital portal, signed with the key file's active key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from adapter.settings import Settings, SettingsError
from portal_links.assertions.issuer import AssertionIssuer
from portal_links.assertions.keyring import AssertionKeyRing


@dataclass
class PortalAssertion:
    """The optional hand-off assertion: signs with the key file's active key, re-read when the file
    changes (``bridge assertion-keys rotate`` takes effect without a restart)."""

    path: Path
    issuer: str
    audience: str
    pseudonym_key: bytes
    _ring: AssertionKeyRing | None = None
    _mtime: float = -1.0

    def ring(self) -> AssertionKeyRing:
        mtime = self.path.stat().st_mtime
        if self._ring is None or mtime != self._mtime:
            self._ring, self._mtime = AssertionKeyRing.load(self.path), mtime
        return self._ring

    def issue(self, patient_ref: str) -> str:
        # The portal's pseudonym for the patient: never the FHIR reference itself.
        digest = hmac.new(self.pseudonym_key, patient_ref.encode(), hashlib.sha256).digest()
        pseudonym = base64.urlsafe_b64encode(digest[:18]).decode()
        return AssertionIssuer(self.ring, self.issuer, self.audience).issue(pseudonym)


def portal_assertion(settings: Settings) -> PortalAssertion | None:
    if settings.portal_assertion_keys_file is None:
        return None
    if settings.portal_pseudonym_key is None:
        raise SettingsError(["portal_assertion_keys_file is set: set BRIDGE_PORTAL_PSEUDONYM_KEY too (the key the "
                             "portal shares to map pseudonyms to patients)"])
    assertion = PortalAssertion(settings.portal_assertion_keys_file, settings.public_base_url,
                                settings.portal_assertion_audience, settings.key_bytes("portal_pseudonym_key"))
    assertion.ring()  # a missing or unsafe key file stops the service at start, with its reason
    return assertion
