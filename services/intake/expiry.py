"""The offer expiry timer: a background task of intake that closes offers whose last day has passed
(``opportunity.expired``, reason ``deadline``). Its state is the offers themselves, so it carries on after a restart
and replicas may run it side by side (each offer is locked while it is closed, and skipped by the others)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from services.intake import opportunities
from services.intake.context import IntakeContext
from services.intake.repository import Repository
from shared.db import Database
from shared.runtime import Runtime

log = logging.getLogger(__name__)

BATCH = 500


class OfferExpiry:
    def __init__(self, db: Database, ctx: IntakeContext) -> None:
        self.db = db
        self.ctx = ctx
        self.expired = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        interval = self.ctx.settings.offer_check_interval_seconds
        while not self._stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("offer expiry pass failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)

    def stop(self) -> None:
        self._stop.set()

    async def sweep(self) -> int:
        """One pass: every offer past its last day expires. Returns how many did."""
        today = self.ctx.clock.today()
        total = 0
        while True:
            async with self.db.session() as session:
                count = await opportunities.expire_lapsed(Repository(session), self.ctx.outbox, today, BATCH)
            total += count
            if count < BATCH:
                break
        self.expired += total
        return total


@contextlib.asynccontextmanager
async def offer_expiry(runtime: Runtime, ctx: IntakeContext) -> AsyncIterator[OfferExpiry]:
    """Runs the timer for the service's lifetime (part of intake's context)."""
    timer = OfferExpiry(runtime.db, ctx)
    task = asyncio.create_task(timer.run(), name="intake-offer-expiry")
    try:
        yield timer
    finally:
        timer.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=10)
