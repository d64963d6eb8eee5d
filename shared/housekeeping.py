"""Periodic purges of the platform tables: inbox ids past any possible redelivery, and idempotency keys (whose
stored answers may hold personal data) past any client retry. The outbox relay purges its own sent rows.

A service adds its own purges (:meth:`Housekeeping.register`): records kept after a resident's erasure are
destroyed on the pass after their period ended (개인정보 보호법 제21조)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import delete

from shared.db import Database
from shared.tables import PlatformTables

log = logging.getLogger(__name__)

# A service's own purge: destroys what is due at ``now`` and says how many rows of what.
Purge = Callable[[dt.datetime], Awaitable[dict[str, int]]]


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
        self._purges: dict[str, Purge] = {}
        self._task: asyncio.Task[None] | None = None

    def register(self, name: str, purge: Purge) -> None:
        """Run ``purge`` on every pass too (each in its own transaction; one failing does not stop the others)."""
        self._purges[name] = purge

    async def purge(self, now: dt.datetime | None = None) -> dict[str, int]:
        now = now or dt.datetime.now(dt.UTC)
        inbox, keys = self.tables.inbox, self.tables.idempotency_keys
        async with self.db.session() as session:
            purged_inbox = await session.execute(delete(inbox).where(inbox.c.handled_at < now - self.inbox_retention))
            purged_keys = await session.execute(
                delete(keys).where(keys.c.created_at < now - self.idempotency_retention)
            )
        purged = {"inbox": purged_inbox.rowcount or 0, "idempotency_keys": purged_keys.rowcount or 0}  # type: ignore[attr-defined]
        for name, purge in self._purges.items():
            try:
                for what, count in (await purge(now)).items():
                    purged[f"{name}.{what}"] = count
            except Exception:
                log.exception("a purge failed; trying again on the next pass", extra={"purge": name})
        return purged

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
