"""Only approved templates go out: the review state of each template, and what to send instead.

Meta reviews every template; it can later pause one for low quality or disable it
(https://developers.facebook.com/docs/whatsapp/business-management-api/message-templates#template-status,
"Template pausing"). The service learns states from ``bridge templates sync`` / the start-up sync
(``GET /{WABA}/message_templates``) and from ``message_template_status_update`` webhooks, and
keeps them in ``template_state``. When a template is not ``APPROVED``, the configured fallback
template (no parameters, so any message can fall back on it) goes instead, and an operator alert is
raised; when neither is approved, the message waits.

Before the first sync (no states known at all) templates are sent as rendered: Meta itself refuses
a template that is not approved (132001, 132015, 132016), which dead-letters the message and alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.ops.alerts import raise_alert
from adapter.outbox.tables import TemplateState
from adapter.storage.db import transaction, utcnow

APPROVED = "APPROVED"
# Template webhook events that are not states: what the template's state becomes (None: unchanged,
# but an operator should know). https://developers.facebook.com/docs/graph-api/webhooks/reference/
# whatsapp-business-account/#message_template_status_update
EVENT_STATES: dict[str, str | None] = {
    "REINSTATED": APPROVED, "UNARCHIVED": APPROVED, "FLAGGED": None, "LOCKED": None, "UNLOCKED": None,
    "LIMIT_EXCEEDED": None,
}


def state_after(event: str) -> str | None:
    """The state a template has after a webhook ``event`` (None: the event does not change it)."""
    return EVENT_STATES.get(event.upper(), event.upper())


@dataclass(frozen=True)
class Verdict:
    template: dict[str, Any] | None  # what to send (the original, or the fallback)
    reason: str = ""

    @property
    def hold(self) -> bool:
        return self.template is None


@dataclass(frozen=True)
class TemplateView:
    """The states as read at the start of one claim."""

    states: dict[tuple[str, str], str]
    fallback_name: str | None

    def check(self, template: dict[str, Any]) -> Verdict:
        name = str(template.get("name"))
        language = str((template.get("language") or {}).get("code"))
        if not self.states:
            return Verdict(template)
        status = self.states.get((name, language))
        if status == APPROVED:
            return Verdict(template)
        why = f"{name}/{language} is {status or 'not in the WhatsApp Business Account'}"
        if self.fallback_name and self.states.get((self.fallback_name, language)) == APPROVED:
            return Verdict({"name": self.fallback_name, "language": {"code": language}},
                           f"{why}; sent {self.fallback_name} instead")
        return Verdict(None, why)


@dataclass(frozen=True)
class TemplateGate:
    fallback_name: str | None = None

    def view(self, session: Session) -> TemplateView:
        rows = session.exec(select(TemplateState.name, TemplateState.language, TemplateState.status)).all()
        return TemplateView({(name, language): status for name, language, status in rows}, self.fallback_name)


def record_states(engine: Engine, states: Iterable[tuple[str, str, str, str | None, str | None]]) -> int:
    """Stores (name, language, status, remote id, reason) tuples; alerts on templates that are not
    approved. Returns how many states changed."""
    changed = 0
    with transaction(engine) as session:
        for name, language, status, remote_id, reason in states:
            row = session.get(TemplateState, (name, language))
            if row is not None and row.status == status:
                continue
            row = row or TemplateState(name=name, language=language, status=status, updated_at=utcnow())
            row.status, row.reason, row.updated_at = status, (reason or None) and reason[:200], utcnow()
            row.remote_id = remote_id or row.remote_id
            session.add(row)
            changed += 1
            if status != APPROVED:
                raise_alert(session, f"template_state:{name}:{language}:{status}", "template_not_approved",
                            f"template {name}/{language} is {status}" + (f" ({reason})" if reason else ""))
    return changed


def list_states(engine: Engine) -> list[TemplateState]:
    with Session(engine) as session:
        return list(session.exec(select(TemplateState)))
