"""Operator notices of a site closed or moved: one message to every opted-in patient booked at that site
in a date range (``bridge notices site-closure``, :mod:`adapter.cli.notices`).

1. The notice names the site by its ``Location`` reference, which must have a public label (setting
   ``site_labels``); a "moved" notice names the new site by one of the configured labels. No free text
   reaches a message: the rule (``when.operator_notice`` in ``mappings/rules/sites.yaml``) shows the site
   label, the appointment's local date and, when moved, the new label.
2. The appointments come from the EHR: ``Appointment?location=<site>&date=ge<first day>&date=lt<day after
   the last>&status=booked,pending`` (https://hl7.org/fhir/R4/appointment.html#search), the days taken in
   the site's time zone; each one found is checked again here (status, the site among its participants,
   its start in the range), so an EHR that ignores a search parameter cannot widen the notice.
3. One message per patient, about their earliest appointment in the range, through the decide step's
   checks (:meth:`adapter.scheduling.decide.Decider.record_notice`): mobile number, opt-in, language,
   render, PHI guard, skips recorded, reads audited; the quiet hours apply (:mod:`adapter.scheduling.notices`).
4. The outbox key is the rule, site, date range and patient, so running the same notice twice queues
   nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from adapter.audit.fhir_access import query_entry
from adapter.audit.trail import record
from adapter.scheduling.decide import Decider
from adapter.scheduling.decision import DecideItem, appointment_start
from adapter.scheduling.notices import notice_key
from adapter.storage.db import transaction
from ehr.client import FhirClient
from ehr.errors import FhirNotFoundError
from ehr.patient import patient_reference
from ehr.related import RelatedReader

NoticeKind = Literal["closed", "moved"]
NOTICE_RULES: Mapping[NoticeKind, str] = {"closed": "site-closed", "moved": "site-moved"}
BOOKED = ("booked", "pending")  # https://hl7.org/fhir/R4/valueset-appointmentstatus.html: a visit still to come
MAX_DAYS = 92  # a notice is about a closure, not a season: a longer range is most likely a typing error
_CONCURRENT_READS = 8


class SiteNoticeError(ValueError):
    """The notice cannot be sent as given (unknown site, bad range, missing rule); nothing was queued."""


@dataclass(frozen=True)
class SiteNotice:
    """What the operator asked: ``site`` is a ``Location/<id>`` with a configured label; the range is
    inclusive, in local days; ``new_site`` is the new site's label (kind ``moved`` only)."""

    site: str
    first_day: date
    last_day: date
    kind: NoticeKind
    new_site: str | None = None

    def check(self, site_labels: Mapping[str, str]) -> None:
        """Raises :class:`SiteNoticeError` unless the notice names labelled sites and a sensible range."""
        if self.site not in site_labels:
            raise SiteNoticeError("the site must be a Location reference with a public label in the setting "
                                  f"site_labels (known: {', '.join(sorted(site_labels)) or 'none'})")
        if self.last_day < self.first_day:
            raise SiteNoticeError("the range ends before it starts")
        if (self.last_day - self.first_day).days >= MAX_DAYS:
            raise SiteNoticeError(f"the range is longer than {MAX_DAYS} days")
        if self.kind == "moved" and self.new_site not in set(site_labels.values()) - {site_labels[self.site]}:
            raise SiteNoticeError("a 'moved' notice needs --new-site naming another site's label from the setting "
                                  "site_labels")
        if self.kind == "closed" and self.new_site is not None:
            raise SiteNoticeError("--new-site is only for a 'moved' notice")

    def window(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start of the first day, start of the day after the last) in ``zone``, as UTC instants."""
        begin = datetime.combine(self.first_day, time(0), tzinfo=zone)
        end = datetime.combine(self.last_day + timedelta(days=1), time(0), tzinfo=zone)
        return begin.astimezone(UTC), end.astimezone(UTC)

    def key(self, rule_id: str, patient_ref: str) -> str:
        return notice_key(rule_id, f"{self.site}:{self.first_day:%Y%m%d}-{self.last_day:%Y%m%d}:{patient_ref}")


@dataclass
class NoticeReport:
    """What one run did: appointments matched, patients messaged now, patients already messaged by an
    earlier run, and skips by reason (``no_opt_in``, ``no_mobile:…``, ``appointment_started``, …)."""

    appointments: int = 0
    queued: int = 0
    already: int = 0
    blocked: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def in_notice(appointment: dict[str, Any], site: str, begin: datetime, end: datetime) -> bool:
    """True for a booked appointment at ``site`` starting in [begin, end)."""
    if appointment.get("resourceType") != "Appointment" or appointment.get("status") not in BOOKED:
        return False
    actors = [p.get("actor") for p in appointment.get("participant") or [] if isinstance(p, dict)]
    references = {str(actor.get("reference", "")).split("/_history/")[0] for actor in actors if isinstance(actor, dict)}
    if not any(ref == site or ref.endswith(f"/{site}") for ref in references):
        return False
    start = appointment_start(appointment)
    return start is not None and begin <= start < end


def earliest_per_patient(appointments: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each patient's earliest appointment (a patient with two in the range gets one message)."""
    chosen: dict[str, dict[str, Any]] = {}
    for appointment in sorted(appointments, key=lambda a: (appointment_start(a) or datetime.max.replace(tzinfo=UTC),
                                                           str(a.get("id")))):
        patient_ref = patient_reference(appointment)
        if patient_ref is not None:
            chosen.setdefault(patient_ref, appointment)
    return chosen


async def find_appointments(fhir: FhirClient, notice: SiteNotice, zone: ZoneInfo) -> tuple[list[dict[str, Any]],
                                                                                            list[tuple[str, str]]]:
    """The booked appointments at the site in the range (searched, then checked again), and the search made."""
    begin, end = notice.window(zone)
    params = [("location", notice.site), ("date", f"ge{_instant(begin)}"), ("date", f"lt{_instant(end)}"),
              ("status", ",".join(BOOKED))]
    found = await fhir.search("Appointment", params)
    return [a for a in found if in_notice(a, notice.site, begin, end)], params


async def send_site_notice(decider: Decider, fhir: FhirClient, notice: SiteNotice) -> NoticeReport:
    """Queues the notice for every opted-in patient booked at the site in the range (module docstring)."""
    config = decider.config
    notice.check(config.site_labels)
    rule = decider.rules.operator(NOTICE_RULES[notice.kind])
    if rule is None:
        raise SiteNoticeError(f"no mapping rule has when.operator_notice: {NOTICE_RULES[notice.kind]} "
                              "(see mappings/rules/sites.yaml)")
    appointments, params = await find_appointments(fhir, notice, config.zone)
    with transaction(decider.engine) as session:  # the search is a query about patients: audited (BALP)
        record(session, query_entry("Appointment", params, step="site-notice", results=len(appointments)))
    chosen = earliest_per_patient(appointments)
    related = RelatedReader(fhir)
    slots = asyncio.Semaphore(_CONCURRENT_READS)

    async def prepare(patient_ref: str, appointment: dict[str, Any]) -> tuple[DecideItem, str]:
        async with slots:
            patient = await _read_patient(fhir, patient_ref)
            names = await related.read_all(appointment)  # practitioners' and clinics' names, for the PHI guard
        return DecideItem(appointment, patient, None, names), notice.key(rule.id, patient_ref)

    items = await asyncio.gather(*(prepare(ref, appointment) for ref, appointment in chosen.items()))
    decisions = await asyncio.to_thread(decider.record_notice, rule, items, notice.new_site)
    report = NoticeReport(appointments=len(appointments))
    for decision in decisions:
        report.queued += len(decision.queued)
        report.blocked += len(decision.blocked)
        for _, reason in decision.skipped:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
        if not (decision.queued or decision.blocked or decision.skipped):
            report.already += 1
    return report


async def _read_patient(fhir: FhirClient, reference: str) -> dict[str, Any] | None:
    resource_type, _, resource_id = reference.partition("/")
    try:
        return await fhir.read(resource_type, resource_id)
    except FhirNotFoundError:
        return None  # recorded as the skip patient_not_found

