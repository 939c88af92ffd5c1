"""In-memory state of the emulator: accepted messages, queued faults, windows, webhook deliveries."""

from __future__ import annotations

import base64
import itertools
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from whatsapp.emulator.graph_errors import GraphError

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
    accepted_at: float
    payload: dict[str, Any]
    statuses: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.message_id, "to": self.to, "wa_id": self.wa_id,
            "phone_number_id": self.phone_number_id, "type": self.type, "accepted_at": self.accepted_at,
            "statuses": list(self.statuses), "payload": self.payload,
        }


class EmulatorState:
    """Everything the emulator remembers; touched only from its event loop."""

    def __init__(self, max_records: int) -> None:
        self._counter = itertools.count(1)
        self.messages: dict[str, AcceptedMessage] = {}
        self._order: deque[str] = deque()
        self._max_records = max_records
        self.faults: deque[Fault] = deque()
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.last_inbound: dict[str, float] = {}  # wa_id → monotonic time the user last wrote
        self._pair_sends: dict[str, deque[float]] = {}
        self._second: tuple[int, int] = (0, 0)  # (second, sends in it)

    def next_wamid(self) -> str:
        return new_wamid(next(self._counter))

    def record(self, message: AcceptedMessage) -> None:
        self.messages[message.message_id] = message
        self._order.append(message.message_id)
        while len(self._order) > self._max_records:
            self.messages.pop(self._order.popleft(), None)

    def reset(self) -> None:
        self.messages.clear()
        self._order.clear()
        self.faults.clear()
        self.webhooks.clear()
        self.last_inbound.clear()
        self._pair_sends.clear()

    def next_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else None

    def window_open(self, wa_id: str, window_seconds: float) -> bool:
        opened = self.last_inbound.get(wa_id)
        return opened is not None and time.monotonic() - opened < window_seconds

    def pair_limited(self, wa_id: str, limit: int) -> bool:
        """True if this send would exceed ``limit`` sends to one user within 6 seconds."""
        now = time.monotonic()
        sends = self._pair_sends.setdefault(wa_id, deque())
        while sends and now - sends[0] >= 6.0:
            sends.popleft()
        if len(sends) >= limit:
            return True
        sends.append(now)
        return False

    def throughput_limited(self, limit: int) -> bool:
        second = int(time.monotonic())
        current, count = self._second
        count = count + 1 if current == second else 1
        self._second = (second, count)
        return count > limit
