"""The menu's rows and the rows of the lists it opens (fixed ids, :mod:`adapter.conversation.front_desk`):

- ``menu:appointments`` — the upcoming appointments with their buttons (an ``appointments`` action
  request; :mod:`adapter.conversation.appointments` answers once the EHR was read);
- ``menu:questions`` — the approved questions as a list; ``answer:<entry>`` — that entry's answer
  (:mod:`adapter.conversation.answers`);
- ``menu:departments`` — the departments as a list; ``department:<id>`` — the hand-off to that
  department (:mod:`adapter.conversation.routing`);
- ``menu:tips`` — the health-education topics as a list; ``tips:on:<topic>`` / ``tips:off:<topic>`` —
  subscribe to that topic or stop it (:mod:`adapter.conversation.tips`).

"Talk to staff" and "Stop messages" are the patient's own action tokens (:mod:`adapter.conversation.taps`).
A fixed id opens the same thing for anyone who types it; only the sender's own records are ever shown.
"""

from __future__ import annotations

from adapter.conversation import answers, routing, tips
from adapter.conversation.front_desk import (
    ANSWER_ROW,
    DEPARTMENT_ROW,
    ROW_APPOINTMENTS,
    ROW_DEPARTMENTS,
    ROW_QUESTIONS,
    ROW_TIPS,
    TIPS_ROW,
)
from adapter.conversation.turn import Turn


def choose(turn: Turn, row_id: str) -> str:
    if row_id == ROW_APPOINTMENTS:
        turn.request("appointments", turn.patients[0])
        return "appointments"
    if row_id == ROW_QUESTIONS:
        return answers.questions(turn)
    if row_id == ROW_DEPARTMENTS:
        return routing.departments(turn)
    if row_id.startswith(ANSWER_ROW):
        return answers.chosen(turn, row_id.removeprefix(ANSWER_ROW))
    if row_id.startswith(DEPARTMENT_ROW):
        return routing.chosen(turn, row_id.removeprefix(DEPARTMENT_ROW))
    if row_id == ROW_TIPS:
        return tips.topics(turn)
    if row_id.startswith(TIPS_ROW):
        return tips.chosen(turn, row_id.removeprefix(TIPS_ROW))
    turn.menu()
    return "unknown_payload"
