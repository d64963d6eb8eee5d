"""The screening scheduler: a background task of the eligibility service that decides, every few seconds, which
screening is due and runs it (``screening_runs.py``), in this order:

1. a screening an administrator asked to run in the background (``POST /v1/screenings`` with ``background``);
2. a **full** run when the rules changed (a new catalogue revision, or something taking effect today: see
   ``triggers.rules_in_force``);
3. the **daily** run, once per day in the city, of the residents whose dates crossed a boundary;
4. an **incremental** run when residents are queued (their facts, consents or answers changed).

One process at a time runs screenings: a lease in ``screening_schedule`` (renewed between pages) keeps replicas from
running two, and a process that dies lets another take over once its lease lapses; the runs it left ``running`` are
marked ``interrupted`` then (what their pages wrote stays, and the next runs pick up the rest: queue marks are
cleared only with a page's findings, review days only move for residents screened).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Sequence

from sqlalchemy import update

from services.eligibility import triggers
from services.eligibility.determinations import Eligibility
from services.eligibility.models import ScreeningQueueRow, ScreeningRow
from services.eligibility.repository import Repository
from services.eligibility.screening_records import Population, proactive_codes
from services.eligibility.screenings import (
    DueToday,
    Everyone,
    Kind,
    Queued,
    clear_marks_before,
    execute,
    open_run,
)
from shared.db import Database

log = logging.getLogger(__name__)

SCHEDULER = "system:screening-scheduler"


class ScreeningScheduler:
    def __init__(self, db: Database, service: Eligibility) -> None:
        self.db = db
        self.service = service
        self.settings = service.settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runs = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        interval = self.settings.screening_check_interval_seconds
        while not self._stop.is_set():
            # Cleared before the pass, not after: a wake (or a stop) that comes during a pass is not lost.
            self._wake.clear()
            try:
                while await self.tick() is not None and not self._stop.is_set():
                    pass  # one run after another while something is due
            except Exception:
                log.exception("screening pass failed; trying again at the next interval")
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    def wake(self) -> None:
        """Look for due work now (an administrator asked for a run)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------------------------------ one decision

    async def tick(self) -> ScreeningRow | None:
        """Run the screening that is due, if any (and if this process holds the lease); returns its row."""
        now = dt.datetime.now(dt.UTC)
        async with self.db.session() as session:
            repo = Repository(session)
            if not await repo.take_lease(self.holder, now, self._lease_end(now)):
                return None
            # Holding the lease, no other scheduled run is going: any still marked running was cut short.
            await session.execute(
                update(ScreeningRow)
                .where(ScreeningRow.status == "running", ScreeningRow.kind != "manual")
                .values(status="interrupted", finished_at=now)
                .execution_options(synchronize_session=False)
            )
        try:
            return await self._due_run(now)
        finally:
            async with self.db.session() as session:
                await Repository(session).release_lease(self.holder)

    async def _due_run(self, now: dt.datetime) -> ScreeningRow | None:
        today = self.service.store.today()
        async with self.db.session() as session:
            repo = Repository(session)
            catalogue = await self.service.store.get(repo)
            requested = await repo.requested_screening()
            schedule = await repo.schedule()
            in_force = triggers.rules_in_force(catalogue, today)
            codes = proactive_codes(catalogue, today)
            plan: tuple[Kind, str, Population] | None = None
            if requested is not None:
                screening_id = requested.screening_id
                plan = ("requested", requested.trigger or "requested", Everyone())
            elif schedule.full_revision != catalogue.revision or schedule.full_versions != in_force:
                why = (
                    f"catalogue revision {catalogue.revision}"
                    if schedule.full_revision != catalogue.revision
                    else f"rules in force on {today.isoformat()} changed"
                )
                plan = ("full", why, Everyone())
            elif schedule.daily_on != today:
                plan = ("daily", f"dates crossing a boundary on {today.isoformat()}", DueToday(today))
            elif await repo.queue_size() > 0:
                plan = ("incremental", "facts changed", Queued())
            if plan is None:
                return None
            kind, why, population = plan
            if kind != "requested":
                if kind == "incremental":
                    why = _reasons(await repo.queued(100))
                row = await open_run(repo, kind=kind, trigger=why, actor=SCHEDULER, as_of=today, codes=codes, now=now)
                screening_id = row.screening_id
        log.info("screening due", extra={"kind": kind, "trigger": why, "screening_id": str(screening_id)})
        finished = await execute(self.db, self.service, screening_id, population, renew=lambda: self._renew())
        self.runs += 1
        async with self.db.session() as session:
            schedule = await Repository(session).schedule()
            if kind == "full":
                schedule.full_revision = catalogue.revision
                schedule.full_versions = in_force
                schedule.daily_on = today  # everyone was just screened on today's dates
            elif kind == "daily":
                schedule.daily_on = today
        if kind == "full":
            await clear_marks_before(self.db, now)
        return finished

    async def _renew(self) -> None:
        now = dt.datetime.now(dt.UTC)
        async with self.db.session() as session:
            if not await Repository(session).take_lease(self.holder, now, self._lease_end(now)):
                raise RuntimeError("the screening lease was lost to another process; this run stops here")

    def _lease_end(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.settings.screening_lease_seconds)


def _reasons(marks: Sequence[ScreeningQueueRow]) -> str:
    """What queued the residents a run begins with (``facts_reported, registry_updated ...``)."""
    seen: dict[str, None] = {}
    for mark in marks:
        for reason in mark.reasons:
            seen[str(reason)] = None
    return ", ".join(seen) or "facts changed"


@contextlib.asynccontextmanager
async def screening_scheduler(db: Database, service: Eligibility) -> AsyncIterator[ScreeningScheduler]:
    """The scheduler for the service's lifetime (part of eligibility's context); its loop runs only when
    ``screening_schedule`` is on, but a pass can always be run on demand (``tick``)."""
    scheduler = ScreeningScheduler(db, service)
    task = (
        asyncio.create_task(scheduler.run(), name="eligibility-screening-scheduler")
        if service.settings.screening_schedule
        else None
    )
    try:
        yield scheduler
    finally:
        scheduler.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
