"""The education plan: a topic's series as outbox rows with ``due_at`` (DESIGN.md: "the database is the
clock"; the same idea as :mod:`adapter.scheduling.reminders`).

When a patient subscribes (:mod:`adapter.conversation.tips`, in the inbound transaction), every item of
the topic still to send is queued at once, in order, one every ``every_days``, as the MARKETING template
``education_tip`` (a template, so the 24-hour window does not matter; WhatsApp policy: marketing content
goes only to people who opted in to it). Each row's time is moved, when needed:

- later, to the end of the quiet hours (setting ``quiet_hours`` in ``site_timezone``), since a tip is never
  urgent (:func:`adapter.scheduling.notices.quiet_release`);
- later, until one more message keeps every rolling 7-day window of the patient's education messages (all
  topics; queued, sending or sent) at or under the cap (setting ``education_weekly_cap``): the next item
  waits (:func:`next_slot`);
- an item past its ``valid_until`` on the day it would go is not queued.

Each item carries a "Stop these tips" quick reply (an opaque action token naming the topic). Stopping a
topic suppresses its queued rows (:func:`suppress_topic`); a global STOP suppresses every queued row of the
patient (:meth:`adapter.outbox.store.OutboxStore.suppress_queued`) and the claim suppresses anything for an
opted-out patient (and the claim-time gate, :class:`adapter.education.gate.EducationGate`, holds one that
comes due in the quiet hours). An item queued, sending or sent is not planned again; a later subscription
resumes with the items not yet sent. Keys: ``education:<topic>:<item>@<version>:<subscription time>:<patient>``
(a new subscription's rows never collide with the suppressed rows of an earlier one).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import ActionToken, OutboxMessage
from adapter.scheduling.notices import quiet_release
from adapter.storage.db import utcnow
from mappings.education_content import Topic
from mappings.quiet_hours import QuietHours
from portal_links.tokens import token_hash

if TYPE_CHECKING:
    from adapter.settings import Settings

RULE_PREFIX, KEY_PREFIX, PURPOSE = "education.", "education:", "education"
TEMPLATE = "education_tip"
STOP_ACTION = "education_stop"  # the "Stop these tips" quick reply's action token
WINDOW = timedelta(days=7)
DRIFT = timedelta(hours=1)  # how much later than planned a due row may have been sent (pacing, retries)
LIVE = ("queued", "sending", "sent")
DEFAULT_CAP = 2
TOKEN_SLACK = timedelta(days=60)  # a "Stop these tips" tap still works this long after its item was due


@dataclass(frozen=True)
class EducationPolicy:
    """Settings ``education_weekly_cap``, ``quiet_hours`` and ``site_timezone``."""

    weekly_cap: int = DEFAULT_CAP
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    quiet: QuietHours | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EducationPolicy:
        cap = settings.education_weekly_cap
        quiet = QuietHours.parse(settings.quiet_hours) if settings.quiet_hours else None
        return cls(cap, ZoneInfo(settings.site_timezone), quiet)


def fits(times: Sequence[datetime], moment: datetime, cap: int, window: timedelta = WINDOW - DRIFT) -> bool:
    """Whether one more message at ``moment`` keeps every rolling ``window`` at or under ``cap`` messages:
    no ``cap + 1`` consecutive messages (in time order) closer together than ``window``. The window is a week
    less :data:`DRIFT`: a row's due time moves by seconds when pacing holds it, and a weekly series planned a
    week apart must still fit; new rows are placed a whole week apart (:func:`next_slot`)."""
    merged = sorted([*times, moment])
    return all(merged[i + cap] - merged[i] >= window for i in range(len(merged) - cap))


def next_slot(times: Sequence[datetime], earliest: datetime, policy: EducationPolicy) -> datetime:
    """The first moment from ``earliest``, outside the quiet hours, that :func:`fits` the cap. A moment that
    does not fit is in a crowded window: the next candidate is when a message of it leaves the window."""
    moment = earliest
    while True:
        moment = quiet_release(moment, policy.zone, policy.quiet) or moment
        if fits(times, moment, policy.weekly_cap):
            return moment
        # Not empty: a crowded window holds a message less than WINDOW from ``moment``.
        moment = min(t + WINDOW for t in times if t + WINDOW > moment)


def item_of(resource_ref: str) -> str:
    """The item id of a row's ``resource_ref`` (``education/<topic>/<item>@<version>``)."""
    return resource_ref.rsplit("/", 1)[-1].split("@", 1)[0]


def plan_series(session: Session, outbox: OutboxStore, topic: Topic, *, patient_ref: str, recipient: str,
                language: str, policy: EducationPolicy, now: datetime | None = None) -> list[datetime]:
    """Queues the topic's items not yet sent to the patient; returns their due times."""
    now = now or utcnow()
    # Counted by due time, the time planned (and, once sent, the claim's: pacing moves it): the send follows
    # within seconds, and the same clock plans every row, so a series spaced by a week stays within the cap.
    rows = session.exec(select(OutboxMessage.rule_id, OutboxMessage.resource_ref, OutboxMessage.due_at).where(
        col(OutboxMessage.patient_ref) == patient_ref, col(OutboxMessage.rule_id).startswith(RULE_PREFIX),
        col(OutboxMessage.state).in_(LIVE))).all()
    times = [_aware(due_at) for _, _, due_at in rows]
    mine = [(item_of(ref), _aware(due_at)) for rule, ref, due_at in rows if rule == RULE_PREFIX + topic.id]
    done = {item for item, _ in mine}
    previous = max((at for _, at in mine), default=None)
    recipient_key = outbox.contacts.remember(session, patient_ref, recipient)
    title = topic.title(language, language)
    planned: list[datetime] = []
    for item in topic.items:
        if item.id in done:
            continue
        earliest = now if previous is None else max(now, previous + timedelta(days=topic.every_days))
        due = next_slot(times, earliest, policy)
        day = due.astimezone(policy.zone).date()
        if not item.valid_on(day) or not topic.valid_on(day):
            continue
        text = item.texts.get(language) or next(iter(item.texts.values()))
        token = _mint(session, patient_ref, topic.id, due + TOKEN_SLACK)
        outbox.enqueue_message(
            session, natural_key=f"{KEY_PREFIX}{topic.id}:{item.key}:{now:%Y%m%dT%H%M%S%f}:{patient_ref}",
            rule_id=RULE_PREFIX + topic.id, resource_ref=f"education/{topic.id}/{item.key}", patient_ref=patient_ref,
            recipient=recipient, message={"type": "template", "template": tip_template(language, title, text, token)},
            due_at=due, purpose=PURPOSE, recipient_key=recipient_key)
        times.append(due)
        planned.append(due)
        previous = due
    return planned


def tip_template(language: str, title: str, text: str, stop_token: str) -> dict[str, Any]:
    """The ``education_tip`` template object: the topic's title, the item's text, and "Stop these tips"."""
    return {"name": TEMPLATE, "language": {"code": language}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": title}, {"type": "text", "text": text}]},
        {"type": "button", "sub_type": "quick_reply", "index": "0",
         "parameters": [{"type": "payload", "payload": stop_token}]}]}


def suppress_topic(session: Session, patient_refs: list[str], topic_id: str, reason: str) -> int:
    """Stops the topic's queued items for these patients (STOP <topic>, "Stop these tips"); returns how many."""
    rows = list(session.exec(select(OutboxMessage).where(
        col(OutboxMessage.patient_ref).in_(patient_refs), col(OutboxMessage.rule_id) == RULE_PREFIX + topic_id,
        col(OutboxMessage.state) == "queued").with_for_update()))
    for row in rows:
        row.state, row.dead_reason, row.updated_at = "suppressed", reason[:200], utcnow()
        session.add(row)
    return len(rows)


def _mint(session: Session, patient_ref: str, topic_id: str, expires_at: datetime) -> str:
    """The quick reply's opaque token (the table and hashing of
    :func:`adapter.outbox.action_tokens.mint_action_token`, whose actions are the appointment buttons)."""
    token, now = secrets.token_urlsafe(16), utcnow()
    session.add(ActionToken(token_hash=token_hash(token), action=STOP_ACTION, patient_ref=patient_ref,
                            resource_ref=f"education/{topic_id}", version_id=None, detail=topic_id, created_at=now,
                            expires_at=expires_at))
    return token


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
