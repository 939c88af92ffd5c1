"""Which of two SIU messages about one appointment is the later state, whatever order they arrived in.

Interface engines resend after an ``AE`` or a timeout, and some run several outbound threads, so an
S15 (cancellation) can arrive before the S12 (booking) it cancels. HL7 v2.5.1 gives each message
its creation time in MSH-7 (2.15.9.7); within one instant the trigger's meaning orders them
(chapter 10.3: a booking precedes its changes, which precede its end). Storage keeps, per
:attr:`ehr.hl7.events.AppointmentEvent.key`, the sequence of the last event it applied and calls
:func:`is_stale` for each new one.
"""

from __future__ import annotations

from datetime import datetime

from ehr.hl7.events import AppointmentEvent

# A booking, then reschedules/modifications, then the outcomes that end the appointment.
TRIGGER_RANK = {"S12": 0, "S13": 1, "S14": 1, "S26": 2, "S15": 3, "S17": 3}


def sequence(event: AppointmentEvent) -> tuple[datetime, int]:
    """The event's place in its appointment's history: MSH-7 first, then the trigger's rank."""
    return (event.message_time, TRIGGER_RANK.get(event.trigger, 1))


def is_stale(incoming: AppointmentEvent, latest_applied: AppointmentEvent | None) -> bool:
    """True when ``incoming`` describes an earlier state than the one already applied for its key.

    A stale event is still stored (it happened, and audit wants it), but must not overwrite the
    newer state: an S12 arriving after its S15 does not revive the appointment. Equal sequences
    are not stale (arrival order decides between two messages of the same instant and rank).
    """
    if latest_applied is None:
        return False
    if incoming.key != latest_applied.key:
        raise ValueError("events of different appointments cannot be ordered against each other")
    return sequence(incoming) < sequence(latest_applied)
