"""The SLA timer: a background task that marks breached cases, escalates them to the office's supervisors, and keeps
priorities in step with approaching due dates.

All its state is in the database (due dates, and a breach row per case and due date), so it carries on correctly
after a restart, and any number of replicas may run it: the unique key on the breach row, written in the same
transaction as the events, lets ``case.sla_breached`` go out exactly once per breach.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from services.routing import households
from services.routing.cases import CaseChanged, announce, event_base, refresh_priority, save
from services.routing.context import RoutingContext
from services.routing.models import CaseStatus, SlaBreach
from services.routing.policy import URGENT
from services.routing.repository import Repository
from shared.db import Database
from shared.events import CaseEscalated, CaseSlaBreached, Department
from shared.runtime import Runtime

log = logging.getLogger(__name__)

TIMER = "system:sla-timer"


class TimerMetrics:
    """What an operator watches: breaches, and each office's open work against its ceiling (the funnel)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaches = Counter("onestop_routing_sla_breaches", "SLA breaches recorded", ["office"], registry=registry)
        self.open_cases = Gauge("onestop_routing_open_cases", "Active cases per office", ["office"], registry=registry)
        self.sweeps = Counter("onestop_routing_sla_sweeps", "Passes of the SLA timer", registry=registry)
        self.utilisation = Gauge(
            "onestop_routing_office_utilisation",
            "Weighted load of an office's active cases over its active-case ceiling",
            ["office"],
            registry=registry,
        )
        self.unserved = Gauge(
            "onestop_routing_unserved_cases",
            "Active cases held at an office that does not handle their department (no office does; see rule "
            "'unserved'): an administrator has to give an office the department",
            ["department"],
            registry=registry,
        )


class SlaTimer:
    def __init__(self, db: Database, ctx: RoutingContext, metrics: TimerMetrics | None = None) -> None:
        self.db = db
        self.ctx = ctx
        self.metrics = metrics
        self.passes = 0
        self.breaches = 0
        self.household_follow_ups = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        interval = self.ctx.settings.sla_check_interval_seconds
        while not self._stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("SLA sweep failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)

    def stop(self) -> None:
        self._stop.set()

    async def sweep(self) -> int:
        """One pass: record every new breach, then refresh priorities. Returns the breaches recorded.

        A running case is breached once a working day after its due date has begun (``sla``): a case due on Friday
        is on time all Friday and over the weekend, and breached on Monday."""
        today = self.ctx.clock.today()
        async with self.db.session() as session:
            candidates = await Repository(session).breach_candidates(self.ctx.calendar.late_if_due_before(today))
        recorded = 0
        for case_id in candidates:
            try:
                async with self.db.session() as session:
                    office = await self._breach(Repository(session), case_id, today)
                if office is not None:
                    recorded += 1
                    if self.metrics is not None:
                        self.metrics.breaches.labels(office=office).inc()
            except (IntegrityError, StaleDataError, CaseChanged):
                # Another replica recorded it, or a caseworker changed the case meanwhile: the next pass decides.
                log.info("breach not recorded this pass", extra={"case_id": str(case_id)})
        # Household cases' follow-ups run on the same calendar: a missed one is escalated like a breached case.
        self.household_follow_ups += await households.sweep(self._repository, self.ctx)
        try:
            async with self.db.session() as session:
                await self._refresh_priorities(Repository(session), today)
        except (StaleDataError, CaseChanged):
            log.info("priority refresh collided with a change; next pass")
        if self.metrics is not None:
            await self._observe(self.metrics)
        self.breaches += recorded
        self.passes += 1
        if self.metrics is not None:
            self.metrics.sweeps.inc()
        return recorded

    @contextlib.asynccontextmanager
    async def _repository(self) -> AsyncIterator[Repository]:
        async with self.db.session() as session:
            yield Repository(session)

    async def _observe(self, metrics: TimerMetrics) -> None:
        async with self.db.session() as session:
            repo = Repository(session)
            offices = await repo.all_offices()
            loads = await repo.office_loads()
            active = await repo.active_cases_by_office_and_department()
        for office in offices:
            count, weighted = loads.get(office.code, (0, 0.0))
            metrics.open_cases.labels(office=office.code).set(count)
            ceiling = office.active_case_ceiling
            metrics.utilisation.labels(office=office.code).set(weighted / ceiling if ceiling > 0 else float("inf"))
        departments = {o.code: set(o.departments) for o in offices}
        held: defaultdict[str, int] = defaultdict(int)
        for (office_code, department), n in active.items():
            if department not in departments.get(office_code, set()):
                held[department] += n
        for department in Department:
            metrics.unserved.labels(department=department.value).set(held[department.value])

    async def _breach(self, repo: Repository, case_id: uuid.UUID, today: dt.date) -> str | None:
        """Record one breach; returns the case's office when it was recorded now."""
        case = await repo.case_for_breach(case_id)
        running = case is not None and case.status in (CaseStatus.OPEN, CaseStatus.ASSIGNED)
        if case is None or not running or not self.ctx.calendar.is_late(case.due_date, today):
            return None
        now = self.ctx.clock.now()
        repo.session.add(
            SlaBreach(
                case_id=case.id,
                office_code=case.office_code,
                due_date=case.due_date,
                breached_on=today,
                recorded_at=now,
            )
        )
        await repo.session.flush()  # the unique (case, due date) key: a breach already recorded stops here
        office = await repo.office(case.office_code)
        supervisors = list(office.supervisors) if office else []
        case.breached_on = case.breached_on or today
        case.escalated = True
        case.escalated_at = now
        case.priority = URGENT
        case.updated_at = now
        # The apology the resident receives carries a new, firm expectation counted from the day of the breach.
        expected_by = self.ctx.calendar.add_working_days(today, self.ctx.settings.sla_breach_grace_working_days)
        repo.add_entry(
            case,
            TIMER,
            "sla_breached",
            now,
            due_date=case.due_date.isoformat(),
            expected_by=expected_by.isoformat(),
        )
        repo.add_entry(case, TIMER, "escalated", now, reason="sla_breached", to=supervisors)
        await save(repo)
        await announce(
            repo,
            self.ctx,
            case,
            lambda: CaseSlaBreached(
                **event_base(case), due_date=case.due_date, breached_at=now, expected_by=expected_by
            ),
        )
        await announce(
            repo,
            self.ctx,
            case,
            lambda: CaseEscalated(**event_base(case), reason="sla_breached", escalated_by=TIMER, escalated_at=now),
        )
        log.warning("SLA breached", extra={"case_id": str(case.id), "office": case.office_code})
        return case.office_code

    async def _refresh_priorities(self, repo: Repository, today: dt.date) -> None:
        """Cases whose due date comes near rise in priority (the rest were set when they last changed)."""
        horizon = self.ctx.calendar.add_working_days(today, self.ctx.settings.due_soon_working_days)
        for case in await repo.running_cases_due_by(horizon):
            before = case.priority
            refresh_priority(self.ctx, case, today)
            if case.priority != before:
                case.updated_at = self.ctx.clock.now()
        await save(repo)


@contextlib.asynccontextmanager
async def sla_timer(runtime: Runtime, ctx: RoutingContext) -> AsyncIterator[SlaTimer]:
    """Runs the timer for the service's lifetime (part of routing's context)."""
    timer = SlaTimer(runtime.db, ctx, TimerMetrics(runtime.metrics.registry))
    task = asyncio.create_task(timer.run(), name="routing-sla-timer")
    try:
        yield timer
    finally:
        timer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
