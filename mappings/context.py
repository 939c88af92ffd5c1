"""What a render needs besides the rule and the resource: language, profile, zone, labels, minters.

Built by the decide step once per message from the settings (``phi_profile``, ``site_timezone``,
``site_labels``, ``site_label_default``) and the patient's language; the minters are closures over
the resource being notified, so a rule only ever names *what* a token is for, never *which* record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo

from mappings.policy import PhiProfile


@dataclass(frozen=True)
class RenderContext:
    """Everything outside the resource that a parameter value may depend on.

    ``language`` is the template language code (``en_US``, ``es``) and also the babel locale used
    to format dates and times. ``mint_link(target)`` returns the URL suffix of a portal link;
    ``mint_action(action)`` returns a quick-reply payload. Both must return opaque URL-safe tokens.
    """

    language: str
    profile: PhiProfile
    zone: tzinfo
    site_labels: Mapping[str, str]
    default_site_label: str
    mint_link: Callable[[str], str] = field(repr=False)
    mint_action: Callable[[str], str] = field(repr=False)
    # The label an operator's "moved" notice names as the new site (kind new_site_label); None otherwise.
    new_site_label: str | None = None

    @property
    def public_labels(self) -> frozenset[str]:
        """Every site label the hospital has declared public; the PHI guard may let these through."""
        return frozenset({self.default_site_label, *self.site_labels.values()})
