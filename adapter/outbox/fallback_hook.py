"""The optional fallback hook for undeliverable messages (Meta 131026 and kin).

When WhatsApp cannot reach a patient, the hospital may want another channel (SMS, a phone call
from staff). If ``undeliverable_hook_url`` is set, each such dead letter is POSTed there once, as
ids only — outbox id, rule, resource and patient references, Meta's error code; never the number or
the message — and marked ``done``. A failing hook is retried on later ticks, at most once a minute.
A delivered hook call is audited as a disclosure (``via: fallback-hook``) when it is marked done
(:func:`adapter.outbox.dead_letters.hook_done`).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from adapter.ops.instances import Leadership
from adapter.outbox.store import OutboxStore

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0


class FallbackHook:
    def __init__(self, outbox: OutboxStore, url: str, timeout_seconds: float = 10.0,
                 leadership: Leadership | None = None) -> None:
        self.outbox = outbox
        # Several instances: only the leader posts (pending_hooks takes no lease), so a dead letter is
        # posted once per tick across instances; at worst twice across a leader hand-over.
        self.leadership = leadership
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout_seconds)
        self._next_try = 0.0

    async def run_once(self) -> int:
        if time.monotonic() < self._next_try:
            return 0
        if self.leadership is not None and not await asyncio.to_thread(self.leadership.is_leader):
            return 0
        rows = await asyncio.to_thread(self.outbox.pending_hooks)
        delivered = 0
        for row in rows:
            event = {"event": "whatsapp.undeliverable", "outbox_id": row.id, "rule_id": row.rule_id,
                     "resource": row.resource_ref, "patient": row.patient_ref, "error_code": row.last_error_code,
                     "reason": row.dead_reason}
            try:
                response = await self._client.post(self.url, json=event)
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as error:
                ok = False
                log.warning("fallback hook unreachable (%s)", type(error).__name__)
            if not ok:
                self._next_try = time.monotonic() + RETRY_SECONDS
                break
            await asyncio.to_thread(self.outbox.hook_done, row.id or 0, "done")
            delivered += 1
        return delivered

    async def aclose(self) -> None:
        await self._client.aclose()
