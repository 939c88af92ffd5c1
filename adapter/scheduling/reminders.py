"""The reminder plan: reminder outbox rows created, moved and cancelled as an Appointment changes.

DESIGN.md: "a reminder is an outbox row with ``due_at``; the scheduler only ticks". A mapping rule
lists offsets before ``Appointment.start`` (``reminders: [2d, 2h]``, :mod:`mappings.rules`) and a
``reminder_template``; reminders are always templates, since they go out of the 24-hour window
(WhatsApp policy, DESIGN.md hard rules).

Each reminder row's natural key is ``reminder:<appointment>:<start>:<offset>``, so re-processing a
version never duplicates it, and a new start (a reschedule) gives new keys. :meth:`ReminderPlanner.reconcile`
runs for every processed Appointment version, in the decide step's transaction, and keeps the rows
equal to the appointment:

- ``booked`` (https://hl7.org/fhir/R4/valueset-appointmentstatus.html) and not yet started: rows for
  every offset whose time has not passed; any other status (cancelled, noshow, entered-in-error,
  fulfilled, …) cancels what is still queued;
- a new ``start`` moves pending reminders: queued rows for the old start are cancelled and rows for the
  new start are rendered again (recipient and language taken from the old row, so no Patient read is
  needed);
- the patient tapped Confirm: :func:`cancel_pending` (called by :mod:`adapter.conversation.taps` in the tap's
  transaction) cancels queued reminders unless ``remind_after_confirm``. The FHIR participant status
  cannot tell this: in R4 a ``booked`` appointment already has every participant ``accepted``;
- quiet hours (:class:`mappings.quiet_hours.QuietHours`) in the site's time zone move a reminder EARLIER,
  to the last allowed minute before the night (:func:`due_time`), never into the night and never after
  the appointment;
- several appointments of one patient on the same local day give one reminder per offset (the first
  planned); a per-patient daily cap skips the rest. Both are recorded as a
  :class:`~adapter.outbox.tables.NotificationSkip` with the reason ``same_day_reminder`` / ``daily_cap``.

Cancelled reminders stay as ``suppressed`` rows with a reason, so a later version cannot re-plan them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from adapter.outbox.encoding import recipient_context
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.scheduling.decision import appointment_start
from adapter.settings import Settings
from adapter.storage.db import utcnow
from mappings.context import RenderContext
from mappings.quiet_hours import QuietHours
from mappings.render import RenderError, render
from mappings.rules import Rule

KEY_PREFIX = "reminder:"
PENDING = ("queued",)
LIVE = ("queued", "sending", "sent")


@dataclass(frozen=True)
class ReminderPolicy:
    """Settings ``quiet_hours``, ``remind_after_confirm``, ``reminder_daily_cap`` and the site's zone."""

    zone: ZoneInfo
    quiet: QuietHours | None = None
    remind_after_confirm: bool = False
    daily_cap: int = 2


def due_time(start: datetime, offset: timedelta, policy: ReminderPolicy) -> datetime:
    """``start - offset``, moved earlier out of quiet hours: to ``begin`` of the same evening when the
    time is after it, else of the previous day (a quiet window that does not wrap midnight moves to its
    own ``begin`` the same day)."""
    due = start - offset
    quiet = policy.quiet
    if quiet is None:
        return due
    local = due.astimezone(policy.zone)
    if not quiet.contains(local.time()):
        return due
    day = local.date()
    if quiet.begin > quiet.end and local.time() < quiet.end:
        day -= timedelta(days=1)  # after midnight: the night began the previous evening
    moved = datetime.combine(day, quiet.begin, tzinfo=policy.zone).astimezone(UTC)
    return min(moved, due)


def reminder_key(appointment_ref: str, start: datetime, offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    return f"{KEY_PREFIX}{appointment_ref}:{start.astimezone(UTC):%Y%m%dT%H%MZ}:{minutes}m"


def parse_key(key: str) -> tuple[str, datetime, timedelta] | None:
    """(appointment ref, start, offset) of a reminder key; None for another kind of key."""
    if not key.startswith(KEY_PREFIX):
        return None
    try:
        rest, start_text, offset_text = key[len(KEY_PREFIX):].rsplit(":", 2)
        start = datetime.strptime(start_text, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
        return rest, start, timedelta(minutes=int(offset_text.rstrip("m")))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def cancel_pending(session: Session, appointment_ref: str, reason: str) -> int:
    """Cancels the queued reminders of one appointment (a Confirm tap, an operator); returns how many."""
    rows = list(session.exec(select(OutboxMessage).where(
        col(OutboxMessage.natural_key).startswith(f"{KEY_PREFIX}{appointment_ref}:"),
        col(OutboxMessage.state).in_(PENDING)).with_for_update()))
    return len(ReminderPlanner._cancel(session, rows, reason, utcnow()))


class PlanFacts(Protocol):
    """What reconcile reads and queues, for a whole decide batch at once
    (:class:`adapter.scheduling.batch_facts.DecideFacts`)."""

    def pending_reminders(self, rule_id: str, ref: str) -> list[OutboxMessage]: ...

    def existing(self, keys: Iterable[str]) -> set[str]: ...

    def live_others(self, rule_id: str, ref: str, patient_ref: str) -> list[tuple[str, datetime]]: ...

    def forget(self, keys: Iterable[str]) -> None: ...

    def skip_recorded(self, skip: tuple[str, str, str | None, str]) -> bool: ...

    def enqueue(self, row: dict[str, Any], tokens: Sequence[Any] = ...) -> bool: ...


# Enqueues one reminder through the decide step's checks (contact, consent, language, render, PHI guard);
# returns True when a row was queued.
Enqueue = Callable[[Session, Rule, str, datetime], bool]


@dataclass
class Planned:
    """What one reconcile did (tests and logs)."""

    queued: list[str]
    moved: list[str]
    cancelled: list[str]
    skipped: list[tuple[str, str]]


class ReminderPlanner:
    def __init__(self, outbox: OutboxStore, policy: ReminderPolicy, context: Callable[[str], RenderContext]) -> None:
        self.outbox = outbox
        self.policy = policy
        self.context = context  # language -> a render context (no links or tokens in reminders)

    def reconcile(self, session: Session, facts: PlanFacts, rule: Rule, appointment: dict[str, Any],
                  patient_ref: str | None, enqueue: Enqueue | None, now: datetime | None = None) -> Planned:
        """Makes the queued reminders of ``appointment`` match its current version (module docstring).
        ``enqueue`` is None when the Patient was not read (no rule fired): then only moves and cancels.
        ``facts``: the decide batch's reads, so a batch of appointments is planned without a query each."""
        now = now or utcnow()
        done = Planned([], [], [], [])
        reminder = rule.reminder
        ref = f"Appointment/{appointment.get('id')}"
        if reminder is None or not rule.reminder_offsets:
            return done
        start = appointment_start(appointment)
        pending = facts.pending_reminders(reminder.id, ref)
        reason = self._stop_reason(appointment, patient_ref, start, now)
        if reason is not None:
            done.cancelled = self._cancel(session, pending, reason, now)
            facts.forget(done.cancelled)
            return done
        assert start is not None
        wanted = {reminder_key(ref, start, offset): offset for offset in rule.reminder_offsets}
        stale = [row for row in pending if row.natural_key not in wanted]
        for row in stale:
            parsed = parse_key(row.natural_key)
            moved = parsed is not None and self._move(session, facts, reminder, appointment, row, start, parsed[2],
                                                      now, done)
            if moved:
                done.moved.append(row.natural_key)
        done.cancelled = self._cancel(session, stale, "reminder cancelled: appointment rescheduled", now)
        facts.forget(done.cancelled)
        if enqueue is None or patient_ref is None:
            return done
        # Which keys exist (after the moves, which may have queued some of them), and the patient's other
        # live reminders: the rows queued below are this appointment's own, which that list excludes,
        # so it holds for every offset.
        existing = facts.existing(wanted)
        others: list[tuple[str, datetime]] | None = None
        for key, offset in wanted.items():
            if key in existing:
                continue
            due = due_time(start, offset, self.policy)
            if others is None and due > now:
                others = facts.live_others(reminder.id, ref, patient_ref)
            why = self._hold_reason(others or [], start, offset, due, now)
            if why is not None:
                self._skip(session, facts, reminder.id, appointment, patient_ref, why, done)
            elif enqueue(session, reminder, key, due):
                done.queued.append(key)
        return done

    # --- rules

    def _stop_reason(self, appointment: dict[str, Any], patient_ref: str | None, start: datetime | None,
                     now: datetime) -> str | None:
        status = appointment.get("status")
        if status != "booked":
            return f"reminder cancelled: appointment {status}"
        if start is None or start <= now:
            return "reminder cancelled: appointment started"
        return None

    def _hold_reason(self, others: list[tuple[str, datetime]], start: datetime, offset: timedelta, due: datetime,
                     now: datetime) -> str | None:
        if due <= now:
            return "reminder_time_passed"
        zone = self.policy.zone
        day = start.astimezone(zone).date()
        for key, _ in others:
            parsed = parse_key(key)
            if parsed is not None and parsed[2] == offset and parsed[1].astimezone(zone).date() == day:
                return "same_day_reminder"
        due_day = due.astimezone(zone).date()
        same_day = sum(1 for _, other_due in others if _aware(other_due).astimezone(zone).date() == due_day)
        if same_day >= self.policy.daily_cap:
            return "daily_cap"
        return None

    # --- effects

    @staticmethod
    def _cancel(session: Session, rows: list[OutboxMessage], reason: str, now: datetime) -> list[str]:
        for row in rows:
            row.state, row.dead_reason, row.updated_at, row.lease_until = "suppressed", reason[:200], now, None
            session.add(row)
        return [row.natural_key for row in rows]

    def _move(self, session: Session, facts: PlanFacts, reminder: Rule, appointment: dict[str, Any], row: OutboxMessage,
              start: datetime, offset: timedelta, now: datetime, done: Planned) -> bool:
        """A reschedule: the same reminder for the new start, to the same number in the same language."""
        key = reminder_key(f"Appointment/{appointment.get('id')}", start, offset)
        due = due_time(start, offset, self.policy)
        if due <= now or row.recipient_enc is None or facts.existing([key]):
            return False
        language = row.template_language  # a plain column: the body itself is sealed
        try:
            template = render(reminder, appointment, self.context(language)) if language else None
        except (KeyError, TypeError, ValueError, RenderError):
            template = None
        if template is None:
            self._skip(session, facts, reminder.id, appointment, row.patient_ref, "reminder_not_moved", done)
            return False
        recipient = self.outbox.cipher.decrypt(row.recipient_enc, context=recipient_context(row.natural_key))
        return facts.enqueue(self.outbox.message_row(
            natural_key=key, rule_id=reminder.id, resource_ref=row.resource_ref, patient_ref=row.patient_ref,
            recipient=recipient, message={"type": "template", "template": template}, due_at=due,
            recipient_key=row.recipient_key))

    @staticmethod
    def _skip(session: Session, facts: PlanFacts, rule_id: str, appointment: dict[str, Any],
              patient_ref: str | None, reason: str, done: Planned) -> None:
        """Records a skip once per (rule, version, reason)."""
        version = (appointment.get("meta") or {}).get("versionId")
        version_id = str(version) if version is not None else None
        ref = f"Appointment/{appointment.get('id')}"
        if not facts.skip_recorded((rule_id, ref, version_id, reason)):
            session.add(NotificationSkip(rule_id=rule_id, resource_ref=ref, version_id=version_id,
                                         patient_ref=patient_ref, reason=reason, created_at=utcnow()))
        done.skipped.append((rule_id, reason))


def policy_from_settings(settings: Settings) -> ReminderPolicy:
    """The reminder policy of the settings (the quiet-hours text was checked at start-up)."""
    quiet = QuietHours.parse(settings.quiet_hours) if settings.quiet_hours else None
    return ReminderPolicy(zone=ZoneInfo(settings.site_timezone), quiet=quiet,
                          remind_after_confirm=settings.remind_after_confirm, daily_cap=settings.reminder_daily_cap)

