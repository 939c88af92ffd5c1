"""Which parameter kinds each PHI profile lets into a message (DESIGN.md, "No PHI in chat").

``default`` follows HHS's "minimum necessary" reading for reminders: that an appointment exists,
its local date and time, a public site label and opaque tokens. ``strict`` keeps only the opaque
tokens, so a message says nothing a stranger reading the lock screen could use.

The kinds themselves are defined in :mod:`mappings.kinds`; this module is the single place that
decides which of them a profile may send, so a review of the privacy stance reads one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, get_args

PhiProfile = Literal["default", "strict"]
ParamKind = Literal["local_date", "local_time", "site_label", "new_site_label", "link_token", "action_token"]

PROFILES: tuple[PhiProfile, ...] = get_args(PhiProfile)
ALL_KINDS: frozenset[ParamKind] = frozenset(get_args(ParamKind))

ALLOWED_KINDS: Mapping[PhiProfile, frozenset[ParamKind]] = {
    "default": ALL_KINDS,
    "strict": frozenset({"link_token", "action_token"}),
}


def allowed_kinds(profile: PhiProfile) -> frozenset[ParamKind]:
    """The kinds ``profile`` allows in an outgoing message."""
    return ALLOWED_KINDS[profile]


def is_allowed(kind: str, profile: PhiProfile) -> bool:
    return kind in ALLOWED_KINDS[profile]


def disallowed(kinds: Iterable[str], profile: PhiProfile) -> list[str]:
    """The kinds among ``kinds`` that ``profile`` refuses, in the order given, without repeats."""
    refused: list[str] = []
    for kind in kinds:
        if not is_allowed(kind, profile) and kind not in refused:
            refused.append(kind)
    return refused
