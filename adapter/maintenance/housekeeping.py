"""Work off the message path, on the pipeline's clock: chain audit records and sign checkpoints
(every tick) and run the retention purges once a day. (Pushing audit records to the EHR is its own
task, :func:`adapter.audit.push.keep_pushing`: a slow EHR must not hold up the chain.)

The last retention run is a ``service_flag`` row, so a restart does not purge twice in a day and
the instances sharing a database take turns (the purges are idempotent anyway).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.checkpoints import AuditKeeper
from adapter.maintenance.retention import RetentionPolicy, run_retention
from adapter.ops.instances import Leadership
from adapter.ops.tables import ServiceFlag
from adapter.storage.db import transaction, upsert, utcnow

log = logging.getLogger(__name__)
RETENTION_LAST_RUN = "retention_last_run"


@dataclass
class Housekeeping:
    engine: Engine
    keeper: AuditKeeper
    retention: RetentionPolicy | None = None
    retention_every: timedelta = timedelta(days=1)
    leadership: Leadership | None = None  # several instances: only the leader runs these jobs (adapter.ops.instances)

    async def run_once(self) -> int:
        """One tick; returns how much it did (the loop ticks again at once while there is work)."""
        if self.leadership is not None and not await asyncio.to_thread(self.leadership.is_leader):
            return 0
        worked = await asyncio.to_thread(self.keeper.tick)
        if self.retention is not None and await asyncio.to_thread(self._retention_due):
            report = await asyncio.to_thread(run_retention, self.engine, self.retention)
            log.info("retention purge removed %d rows", report.total)
        return worked

    def _retention_due(self) -> bool:
        """Claims today's run (True) unless it ran less than ``retention_every`` ago."""
        now = utcnow()
        with Session(self.engine) as session:
            last = session.get(ServiceFlag, RETENTION_LAST_RUN)
            if last is not None and now - last.set_at < self.retention_every:
                return False
        with transaction(self.engine) as session:
            upsert(session, ServiceFlag, {"name": RETENTION_LAST_RUN, "reason": "daily retention purge",
                                          "set_at": now}, "name", ["set_at"])
        return True
