"""Periodic purges of the platform tables: inbox ids past any possible redelivery, and idempotency keys (whose
stored answers may hold personal data) past any client retry. The outbox relay purges its own sent rows."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from sqlalchemy import delete

from shared.db import Database
from shared.tables import PlatformTables

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        db: Database,
        tables: PlatformTables,
        *,
        inbox_retention: dt.timedelta,
        idempotency_retention: dt.timedelta,
        interval: float,
    ) -> None:
        self.db = db
        self.tables = tables
        self.inbox_retention = inbox_retention
        self.idempotency_retention = idempotency_retention
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def purge(self, now: dt.datetime | None = None) -> dict[str, int]:
        now = now or dt.datetime.now(dt.UTC)
        inbox, keys = self.tables.inbox, self.tables.idempotency_keys
        async with self.db.session() as session:
            purged_inbox = await session.execute(delete(inbox).where(inbox.c.handled_at < now - self.inbox_retention))
            purged_keys = await session.execute(
                delete(keys).where(keys.c.created_at < now - self.idempotency_retention)
            )
        return {"inbox": purged_inbox.rowcount or 0, "idempotency_keys": purged_keys.rowcount or 0}  # type: ignore[attr-defined]

    async def _run(self) -> None:
        while True:
            try:
                purged = await self.purge()
                if any(purged.values()):
                    log.info("purged expired rows", extra=purged)
            except Exception:
                log.exception("housekeeping failed; trying again later")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
