"""A tapped button or list row: its opaque action token resolved and acted on.

Another patient's token (typed or forwarded) is refused and recorded; an expired one gets
"expired", a used one changes nothing ("already"). Confirm, cancel (after "are you sure?") and
reschedule become :class:`~adapter.conversation.tables.ActionRequest` rows that the pipeline carries
out against the EHR (:mod:`adapter.conversation.actions`); a Confirm also cancels the queued
reminders unless the setting keeps them. "Talk to staff" and "Stop reminders" do what their words
do (:mod:`adapter.conversation.commands`); "Was this helpful?" is counted
(:mod:`adapter.conversation.answers`); the survey's taps open its list or record the answer
(:mod:`adapter.scheduling.survey`).
"""

from __future__ import annotations

import logging

from adapter.conversation import answers, tips
from adapter.conversation.commands import handoff, stop
from adapter.conversation.turn import Turn
from adapter.education.planner import STOP_ACTION
from adapter.outbox.action_tokens import resolve_action_token
from adapter.outbox.tables import ActionToken
from adapter.scheduling import survey
from adapter.scheduling.reminders import cancel_pending
from adapter.storage.db import utcnow
from whatsapp.interactive import reply_buttons

log = logging.getLogger(__name__)


def tap(turn: Turn, payload: str) -> str:
    token = resolve_action_token(turn.session, payload)
    if token is None:
        turn.menu()
        return "unknown_payload"
    if token.patient_ref not in turn.patients:
        # A payload of another patient's message, typed or forwarded: never act on it.
        log.warning("inbound message %s carried another patient's action token; refused", turn.row.id)
        return "token_refused"
    if token.action == STOP_ACTION:  # "Stop these tips": a stop is honoured however late the tap
        return tips.tapped_stop(turn, token)
    if token.expires_at < utcnow():
        turn.say("expired")
        return "token_expired"
    if token.action in answers.FEEDBACK:
        return answers.feedback(turn, token)
    if token.action == "stop":
        return stop(turn, [token.patient_ref])
    if token.action == "talk_to_staff":
        return handoff(turn, token.patient_ref, token.resource_ref if token.resource_ref != token.patient_ref
                       else None)
    if token.used_at is not None:  # a replayed tap: already done, nothing to do again
        turn.say("already")
        return "token_replayed"
    return _appointment_action(turn, token)


def _appointment_action(turn: Turn, token: ActionToken) -> str:
    action = token.action
    if action in (survey.OPEN, survey.ANSWER):
        return _survey_tap(turn, token)
    if action in ("confirm", "cancel_confirmed", "keep", "pick_slot"):
        token.used_at = utcnow()
        turn.session.add(token)
    if action == "keep":
        turn.say("kept")
        return "kept"
    if action == "cancel":
        _ask_cancel(turn, token)
        return "cancel_asked"
    kind = {"confirm": "confirm", "cancel_confirmed": "cancel", "reschedule": "reschedule_offer",
            "pick_slot": "reschedule_pick"}.get(action)
    if kind is None:
        return f"action:{action}"
    turn.request(kind, token.patient_ref, resource_ref=token.resource_ref, version_id=token.version_id,
                 slot_ref=token.detail)
    if kind == "confirm" and not turn.policy.remind_after_confirm:
        cancel_pending(turn.session, token.resource_ref, "reminder cancelled: patient confirmed")
    return "reschedule" if kind.startswith("reschedule") else kind


def _survey_tap(turn: Turn, token: ActionToken) -> str:
    """"Rate my visit" opens the 1-5 list (the tap opened the window); a row becomes a write-back."""
    token.used_at = utcnow()
    turn.session.add(token)
    if token.action == survey.OPEN:
        turn.send(survey.survey_list(turn.session, token.patient_ref, token.resource_ref, turn.language))
        return "survey_open"
    survey.retire_answers(turn.session, token.patient_ref, token.resource_ref)
    turn.request("survey_answer", token.patient_ref, resource_ref=token.resource_ref, slot_ref=token.detail)
    return "survey_answer"


def _ask_cancel(turn: Turn, token: ActionToken) -> None:
    """Cancelling frees the slot for someone else: ask once to be sure (the appointment's date and time
    are not in the question; the patient has the original message)."""
    body, _ = turn.texts.render("cancel_ask_short", turn.language, turn.default_language)
    yes = turn.mint("cancel_confirmed", token.patient_ref, token.resource_ref, token.version_id)
    no = turn.mint("keep", token.patient_ref, token.resource_ref, token.version_id)
    turn.send(reply_buttons(body, [
        (yes, turn.texts.render("yes_cancel", turn.language, turn.default_language)[0]),
        (no, turn.texts.render("no_keep", turn.language, turn.default_language)[0])]))
