"""What one decide transaction reads and writes, for a whole batch of resource versions at once.

The decide step (:mod:`adapter.scheduling.decide`) turns a batch of EHR resource versions into
messages in one transaction. Instead of asking the database once per resource, per rule and per
message, it reads each table once for the batch with ``IN (...)`` — the resources' processing state
(locked), opt-in, contacts, which candidate outbox keys exist, the queued reminders of the batch's
appointments and the other live reminders of its patients, the skips already recorded — and writes
the batch's new outbox rows, button tokens and audit entries with one multi-row INSERT each at the
end. Rows that change (resource state, cancelled reminders, new contacts and skips) go through the
ORM, whose flush at commit groups them into one statement per table.

What the batch does to these facts is kept here too, so a later item sees what an earlier one did:
a second version of one resource is a duplicate, a reminder queued for one appointment counts
towards the same patient's daily cap for the next, a number remembered once is not added twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select as core_select
from sqlalchemy import tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.trail import AuditEntry
from adapter.audit.trail import record as audit_record
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import ResourceState
from adapter.outbox.action_tokens import insert_tokens
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import ActionToken, NotificationSkip, OutboxMessage
from adapter.recipients.consent import ConsentSource
from adapter.recipients.contacts import ContactBook
from adapter.recipients.tables import WhatsAppContact
from adapter.scheduling.reminders import LIVE, PENDING, parse_key
from adapter.storage.claimable import indexed_by
from adapter.storage.db import insert_all_ignoring, insert_new, table_of

StateKey = tuple[str, str]  # (resource type, id)
SkipKey = tuple[str, str, str | None, str]  # (rule, resource ref, version, reason)


def processed_states(engine: Engine, keys: Iterable[StateKey]) -> dict[StateKey, tuple[str | None, str | None]]:
    """(version, status) of each resource when it was last processed, in one read (no lock: a pre-check)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    with Session(engine) as session:
        found = session.exec(select(ResourceState).where(
            tuple_(col(ResourceState.resource_type), col(ResourceState.resource_id)).in_(wanted)))
        return {(row.resource_type, row.resource_id): (row.version_id, row.status) for row in found}


@dataclass(frozen=True)
class Wanted:
    """What the batch may need, worked out from its resources before the transaction reads anything."""

    states: set[StateKey] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)  # candidate outbox natural keys
    appointments: set[str] = field(default_factory=set)  # refs whose reminders are planned
    reminder_rules: set[str] = field(default_factory=set)


@dataclass(eq=False)
class DecideFacts:
    """The batch's reads (loaded once) and its pending writes (written once, :meth:`write`)."""

    states: dict[StateKey, ResourceState]
    consent: dict[str, bool]
    contacts: list[WhatsAppContact]
    taken: set[str]  # outbox keys that exist or were queued in this batch
    pending: dict[tuple[str, str], list[OutboxMessage]]  # (rule, appointment ref) -> queued reminder rows
    live: list[tuple[str, str, str, str, datetime]]  # (patient, rule, resource ref, key, due) of live reminders
    skips: set[SkipKey]
    rows: list[dict[str, Any]] = field(default_factory=list)  # outbox rows to insert
    minted: dict[str, list[Any]] = field(default_factory=dict)  # outbox key -> its token rows
    audit: list[AuditEntry] = field(default_factory=list)
    done_events: list[int] = field(default_factory=list)
    direct: set[str] = field(default_factory=set)  # keys inserted at once (rare paths)
    new_contacts: list[WhatsAppContact] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, wanted: Wanted, consent: ConsentSource,
             candidates: Any) -> DecideFacts:
        """One read per table for the whole batch; the resource states are locked (``FOR UPDATE``)
        so two instances deciding the same resource take turns. ``candidates`` maps a number to its
        blind-index candidates (:meth:`adapter.security.crypto.BlindIndex.phone_candidates`)."""
        states: dict[StateKey, ResourceState] = {}
        if wanted.states:
            found = session.exec(select(ResourceState).where(
                tuple_(col(ResourceState.resource_type), col(ResourceState.resource_id)).in_(sorted(wanted.states)))
                .with_for_update())
            states = {(row.resource_type, row.resource_id): row for row in found}
        indexes = sorted({key for number in wanted.numbers for key in candidates(number)})
        contacts = list(session.exec(select(WhatsAppContact).where(
            col(WhatsAppContact.phone_index).in_(indexes)))) if indexes else []
        pending: dict[tuple[str, str], list[OutboxMessage]] = {}
        live: list[tuple[str, str, str, str, datetime]] = []
        skips: set[SkipKey] = set()
        if wanted.appointments and wanted.reminder_rules:
            rules, refs = sorted(wanted.reminder_rules), sorted(wanted.appointments)
            for row in session.exec(select(OutboxMessage).where(
                    col(OutboxMessage.rule_id).in_(rules), col(OutboxMessage.resource_ref).in_(refs),
                    col(OutboxMessage.state).in_(PENDING)).order_by(col(OutboxMessage.id)).with_for_update()):
                pending.setdefault((row.rule_id, row.resource_ref), []).append(row)
            if wanted.patients:
                # By patient, whatever the history (SQLite without statistics would walk ix_outbox_due).
                outbox = indexed_by(OutboxMessage, "ix_outbox_patient_rule")
                live = [(row[0], row[1], row[2], row[3], row[4]) for row in session.execute(core_select(
                    outbox.patient_ref, outbox.rule_id, outbox.resource_ref, outbox.natural_key, outbox.due_at).where(
                    outbox.patient_ref.in_(sorted(wanted.patients)), outbox.rule_id.in_(rules),
                    outbox.state.in_(LIVE)))]
            skip = table_of(NotificationSkip).c
            skips = {(row[0], row[1], row[2], row[3]) for row in session.execute(core_select(
                skip.rule_id, skip.resource_ref, skip.version_id, skip.reason).where(
                skip.rule_id.in_(rules), skip.resource_ref.in_(refs)))}
        return cls(states=states, consent=consent.may_message_many(session, sorted(wanted.patients)),
                   contacts=contacts, taken=OutboxStore.existing(session, sorted(wanted.keys)),
                   pending=pending, live=live, skips=skips)

    # --- reads, as the reminder planner asks them (adapter.scheduling.reminders.PlanFacts)

    def pending_reminders(self, rule_id: str, ref: str) -> list[OutboxMessage]:
        return [row for row in self.pending.get((rule_id, ref), []) if row.state in PENDING]

    def existing(self, keys: Iterable[str]) -> set[str]:
        return {key for key in keys if key in self.taken}

    def live_others(self, rule_id: str, ref: str, patient_ref: str) -> list[tuple[str, datetime]]:
        return [(key, due) for patient, rule, resource, key, due in self.live
                if patient == patient_ref and rule == rule_id and resource != ref]

    def forget(self, keys: Iterable[str]) -> None:
        """Reminders cancelled in this batch are no longer live."""
        gone = set(keys)
        self.live = [entry for entry in self.live if entry[3] not in gone]

    def skip_recorded(self, skip: SkipKey) -> bool:
        """True if this skip exists; remembers it otherwise (the caller adds it)."""
        if skip in self.skips:
            return True
        self.skips.add(skip)
        return False

    # --- writes

    def remember(self, contacts: ContactBook, patient_ref: str, e164: str) -> bytes:
        """The number's index for this patient (:meth:`ContactBook.remember_among` the batch's contacts)."""
        key, new = contacts.remember_among(self.contacts, patient_ref, e164)
        if new is not None:
            self.contacts.append(new)
            self.new_contacts.append(new)
        return key

    def write_contacts(self, session: Session) -> None:
        """Stores the numbers remembered so far (before a step that reads contacts, and at the end)."""
        insert_all_ignoring(session, WhatsAppContact, [row.model_dump(exclude={"id"}) for row in self.new_contacts],
                            ["patient_ref", "phone_index"])
        self.new_contacts = []

    def enqueue(self, row: dict[str, Any], tokens: Sequence[Any] = ()) -> bool:
        """Queues an outbox row (built by :meth:`OutboxStore.message_row`) for the batch's one INSERT."""
        key = row["natural_key"]
        if key in self.taken:
            return False
        if "appointment_start" not in row:  # one multi-row INSERT: every row names the same columns
            reminder = parse_key(key)  # a moved reminder: its start is in its key
            row = {**row, "appointment_start": reminder[1] if reminder else None}
        self.taken.add(key)
        self.rows.append(row)
        self.minted[key] = list(tokens)
        if row.get("rule_id") and row.get("due_at") is not None:
            self.live.append((row["patient_ref"], row["rule_id"], row["resource_ref"], key, row["due_at"]))
        return True

    def write(self, session: Session) -> set[str]:
        """Writes what the batch queued, one statement per table; returns the outbox keys inserted.
        A key another transaction inserted meanwhile is skipped, and so are its tokens."""
        self.write_contacts(session)
        inserted = set(insert_new(session, OutboxMessage, self.rows, "natural_key"))
        tokens = [token for key in inserted for token in self.minted.get(key, ())]
        session.add_all([token for token in tokens if not isinstance(token, ActionToken)])
        insert_tokens(session, [token for token in tokens if isinstance(token, ActionToken)])
        audit_record(session, *self.audit)
        InboxStore.mark_done_many(session, self.done_events)
        return inserted | self.direct
