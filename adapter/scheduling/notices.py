"""Non-clinical notices: which messages they are, their outbox keys, and when they may go out.

A notice tells a patient something administrative: a document is ready in the portal (a
``DocumentReference`` entering ``current``, https://hl7.org/fhir/R4/documentreference.html), a billing
statement is available (an ``Invoice`` entering ``issued``, https://hl7.org/fhir/R4/invoice.html), or a
site is closed or moved (an operator's notice, :mod:`adapter.scheduling.site_notices`). Their rules are
ordinary mapping rules (``mappings/rules/documents.yaml``, ``billing.yaml``, ``sites.yaml``).

Unlike a booking confirmation, which answers something the patient just did, a notice is never urgent, so
it waits out the quiet hours (setting ``quiet_hours``, :class:`mappings.quiet_hours.QuietHours`): it is
queued due at the end of the window (:func:`quiet_release`), and the claim-time gate
(:class:`adapter.scheduling.reminder_gate.ReminderGate`) holds one that comes due inside it. Its outbox key
starts with :data:`KEY_PREFIX` so the gate knows it from any other message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from mappings.quiet_hours import QuietHours
from mappings.rules import Rule

KEY_PREFIX = "notice:"
# The resource types whose rules are notices; an operator rule (``when.operator_notice``) is one too.
NOTICE_RESOURCES = frozenset({"DocumentReference", "Invoice"})


def is_notice(rule: Rule) -> bool:
    return rule.resource_type in NOTICE_RESOURCES or rule.operator_notice is not None


def is_notice_key(natural_key: str) -> bool:
    return natural_key.startswith(KEY_PREFIX)


def notice_key(rule_id: str, subject: str) -> str:
    """The outbox key of a notice: the rule and what it is about (a resource, or an operator notice's
    site, dates and patient), so a repeated event or a repeated command queues nothing new."""
    return f"{KEY_PREFIX}{rule_id}:{subject}"


def quiet_release(now: datetime, zone: ZoneInfo, quiet: QuietHours | None) -> datetime | None:
    """The end of the quiet hours ``now`` falls in (UTC), or None when ``now`` is outside them."""
    if quiet is None:
        return None
    local = now.astimezone(zone)
    if not quiet.contains(local.time().replace(second=0, microsecond=0)):
        return None
    end = datetime.combine(local.date(), quiet.end, tzinfo=zone)
    if end <= local:
        end += timedelta(days=1)  # in a window that wraps midnight, before midnight: it ends tomorrow
    return end.astimezone(UTC)


def notice_due(now: datetime, zone: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """When a notice decided at ``now`` is due: now, or the end of the quiet hours it falls in."""
    return quiet_release(now, zone, quiet) or now
