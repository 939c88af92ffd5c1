"""In-memory state of the emulator: accepted messages, rejections, queued faults, windows, webhook deliveries,
the virtual clock, the run-time settings and the send limits."""

from __future__ import annotations

import base64
import itertools
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from whatsapp.emulator.clock import VirtualClock
from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import GraphError
from whatsapp.emulator.limits import SendLimiter
from whatsapp.emulator.tunables import Tunables

_WAMID_PREFIX = base64.b64encode(os.urandom(6)).decode()


def new_wamid(counter: int) -> str:
    """A unique ``wamid.…`` (Meta's ids are opaque base64; uniqueness is all a client may rely on)."""
    return "wamid." + _WAMID_PREFIX + base64.b64encode(counter.to_bytes(8, "big")).decode()


@dataclass(frozen=True)
class Fault:
    """One injected outcome for the next send (see ``POST /_emulator/faults``)."""

    http_status: int = 500
    code: int | None = None
    subcode: int | None = None
    message: str | None = None
    drop_connection: bool = False  # close the socket instead of answering
    accept_first: bool = False  # with drop/delay: accept the message (webhooks follow), then misbehave
    delay_seconds: float = 0.0  # wait before answering (lets a client time out)
    fail_status_code: int | None = None  # accept, then report ``failed`` with this code by webhook

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        fail_status = raw.get("fail_status")
        return cls(
            http_status=int(raw.get("http_status", 200 if raw.get("fail_status") else 500)),
            code=int(raw["code"]) if raw.get("code") is not None else None,
            subcode=int(raw["subcode"]) if raw.get("subcode") is not None else None,
            message=str(raw["message"]) if raw.get("message") else None,
            drop_connection=bool(raw.get("drop_connection", False)),
            accept_first=bool(raw.get("accept", False)),
            delay_seconds=float(raw.get("delay_seconds", 0.0)),
            fail_status_code=int(fail_status["code"]) if isinstance(fail_status, dict) else None,
        )

    @property
    def rejects(self) -> bool:
        """The send is answered with an error (not accepted) unless it only delays, drops after accepting
        or fails later by webhook."""
        if self.fail_status_code is not None:
            return False
        if self.drop_connection or self.delay_seconds:
            return not self.accept_first
        return True

    def graph_error(self) -> GraphError | None:
        if self.code is None:
            return None
        return GraphError(self.code, message=self.message, http_status=self.http_status)


@dataclass
class AcceptedMessage:
    message_id: str
    to: str
    wa_id: str
    phone_number_id: str
    type: str
    accepted_at: float  # virtual time
    payload: dict[str, Any]
    statuses: list[str] = field(default_factory=list)
    status_history: list[dict[str, Any]] = field(default_factory=list)  # {"status", "timestamp"}
    errors: list[dict[str, Any]] = field(default_factory=list)
    user_id: str | None = None  # the recipient's business-scoped user id, when BSUIDs are on

    def add_status(self, status: str, timestamp: float, errors: list[dict[str, Any]] | None = None) -> None:
        self.statuses.append(status)
        self.status_history.append({"status": status, "timestamp": int(timestamp)})
        if errors:
            self.errors.extend(errors)

    @property
    def status(self) -> str:
        return self.statuses[-1] if self.statuses else "accepted"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.message_id, "to": self.to, "wa_id": self.wa_id, "user_id": self.user_id,
            "phone_number_id": self.phone_number_id, "type": self.type, "accepted_at": self.accepted_at,
            "status": self.status, "statuses": list(self.statuses), "status_history": list(self.status_history),
            "errors": list(self.errors), "payload": self.payload,
        }


class EmulatorState:
    """Everything the emulator remembers; touched only from its event loop."""

    def __init__(self, max_records: int, tunables: Tunables | None = None, clock: VirtualClock | None = None) -> None:
        self._counter = itertools.count(1)
        self.messages: dict[str, AcceptedMessage] = {}
        self._order: deque[str] = deque()
        self._max_records = max_records
        self.faults: deque[Fault] = deque()
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.rejections: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.last_inbound: dict[str, float] = {}  # wa_id or BSUID → virtual time the user last wrote
        self.clock = clock or VirtualClock()
        self.tunables = tunables or Tunables.from_config(EmulatorConfig(access_token="", app_secret=""))
        self.limiter = SendLimiter(self.clock.now)

    def next_wamid(self) -> str:
        return new_wamid(next(self._counter))

    def record(self, message: AcceptedMessage) -> None:
        self.messages[message.message_id] = message
        self._order.append(message.message_id)
        while len(self._order) > self._max_records:
            self.messages.pop(self._order.popleft(), None)

    def reject(self, *, code: int | None, http_status: int, phone_number_id: str, payload: Any,
               subcode: int | None = None, details: str = "", injected: bool = False) -> None:
        """Remembers a refused send (``GET /_emulator/rejections``): code and time, never the content."""
        to = payload.get("to") if isinstance(payload, dict) else None
        kind = payload.get("type", "text") if isinstance(payload, dict) else None
        self.rejections.append({
            "at": self.clock.now(), "code": code, "subcode": subcode, "http_status": http_status,
            "details": details, "phone_number_id": phone_number_id, "to": to if isinstance(to, str) else None,
            "wa_id": "".join(ch for ch in to if ch.isdigit()) if isinstance(to, str) else None,
            "type": kind if isinstance(kind, str) else None, "injected": injected,
        })

    def reset(self, *, clock: bool = False) -> None:
        self.messages.clear()
        self._order.clear()
        self.faults.clear()
        self.webhooks.clear()
        self.rejections.clear()
        self.last_inbound.clear()
        self.limiter.reset()
        if clock:
            self.clock.reset()

    def next_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else None

    def open_window(self, key: str, at: float) -> None:
        """The user wrote at virtual time ``at``: their 24-hour window runs from the latest such message."""
        if at > self.last_inbound.get(key, float("-inf")):
            self.last_inbound[key] = at

    def window_open(self, wa_id: str, window_seconds: float) -> bool:
        opened = self.last_inbound.get(wa_id)
        return opened is not None and self.clock.now() - opened < window_seconds
