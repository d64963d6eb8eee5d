"""Outreach to the vulnerable: a resident flagged vulnerable (an older person living alone, a disability, a single
parent, a crisis — the ``outreach_vulnerabilities`` setting) who consented to proactive screening and has not answered
an offer within ``outreach_after_working_days`` working days (routing's working-day calendar) becomes an outreach
case — kind ``outreach`` — in the queue of their district's office for the ``outreach_department`` (찾아가는
보건복지서비스: the community service centre's welfare team), to be visited within ``outreach_sla_working_days``.

Consent governs it: intake offers only to a resident who consents to proactive screening, and when they withdraw it
every standing offer expires (reason ``consent_withdrawn``), which ends the outreach too. An answer to the offer
(accepted or declined) ends it as well: the resident was reached. An offer that merely ran out of time does not: the
visit may still help.

The caseworker claims the case like any other, records each visit with an outcome of ``GET /v1/outreach-outcomes``
(``POST /v1/cases/{id}/visit``); a final outcome closes the case, "not at home" keeps it for another visit. Each step
is in the case's history and an ``outreach.*`` event; an outreach case has no application, so it emits no ``case.*``
event (``cases.announce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from services.routing import casework, views
from services.routing.cases import SYSTEM, CaseChanged, Router, save
from services.routing.context import RoutingContext
from services.routing.models import OUTREACH, Case, CaseStatus, Offer, audit_log
from services.routing.policy import NoOfficeServes, priority, route
from services.routing.repository import Repository
from services.routing.schemas import CaseOut, OutreachOutcomeOut, VisitIn
from shared.auth import Principal
from shared.db import Database
from shared.events import (
    Localized,
    OpportunityAccepted,
    OpportunityDeclined,
    OpportunityExpired,
    OpportunityOffered,
    OutreachClosed,
    OutreachOpened,
    OutreachVisited,
    OutreachVisitOutcome,
)
from shared.problems import UnprocessableContent
from shared.runtime import Runtime

log = logging.getLogger(__name__)

TIMER = "system:outreach"
OFFERED = "offered"


@dataclass(frozen=True)
class Outcome:
    label: Localized
    final: bool


OUTCOMES: dict[OutreachVisitOutcome, Outcome] = {
    OutreachVisitOutcome.APPLIED_WITH_HELP: Outcome(
        Localized(ko="방문하여 신청을 도움", en="Helped the resident apply during the visit"), True
    ),
    OutreachVisitOutcome.WILL_APPLY: Outcome(
        Localized(ko="안내함 — 본인이 신청 예정", en="Explained the offer; the resident will apply"), True
    ),
    OutreachVisitOutcome.DECLINED: Outcome(
        Localized(ko="안내했으나 신청을 원하지 않음", en="Explained the offer; the resident does not want it"), True
    ),
    OutreachVisitOutcome.REFERRED: Outcome(
        Localized(
            ko="다른 지원(돌봄·긴급지원 등)으로 연계함", en="Referred to other support (care, emergency aid ...)"
        ),
        True,
    ),
    OutreachVisitOutcome.NOT_AT_HOME: Outcome(
        Localized(ko="부재 — 다시 방문해야 함", en="Nobody at home: another visit is due"), False
    ),
    OutreachVisitOutcome.UNREACHABLE: Outcome(
        Localized(ko="여러 차례 방문·연락했으나 만나지 못함", en="Not reached after repeated visits and calls"), True
    ),
    OutreachVisitOutcome.MOVED: Outcome(
        Localized(ko="해당 주소에 거주하지 않음", en="The resident no longer lives at the address"), True
    ),
}


def outcomes() -> list[OutreachOutcomeOut]:
    return [OutreachOutcomeOut(code=code, label=o.label, final=o.final) for code, o in OUTCOMES.items()]


# ---------------------------------------------------------------------------------------------- offers (events)


def _office_for(router: Router, district: str, department: str, language: str) -> str | None:
    try:
        return route(
            router.views, router.loads, district_code=district, department=department, language=language
        ).office_code
    except NoOfficeServes:
        return None


async def on_offered(repo: Repository, ctx: RoutingContext, data: OpportunityOffered) -> None:
    """Remember the offer: who it is for, where they live, which office would take an application, and — for a
    resident to visit — the last working day they have to answer."""
    now = ctx.clock.now()
    offered_on = min(ctx.clock.date_of(data.offered_at), ctx.clock.today())
    resident = data.resident
    flags = [v.value for v in resident.vulnerability]
    visit = bool(set(resident.vulnerability) & ctx.settings.outreach_vulnerabilities)
    offer = await repo.offer(data.opportunity_id, for_update=True)
    if offer is not None and offer.district_code:
        return  # a redelivery
    router = await Router.load(repo)
    if offer is None:
        offer = Offer(opportunity_id=data.opportunity_id, status=OFFERED, status_at=now)
        repo.session.add(offer)
    offer.resident_id = data.resident_id
    offer.program_code = data.program_code
    offer.program_name_ko = data.program_name.ko
    offer.program_name_en = data.program_name.en
    offer.department = data.department.value
    offer.amount = data.amount
    offer.amount_period = data.amount_period
    offer.district_code = resident.district_code
    offer.preferred_language = resident.preferred_language.value
    offer.vulnerability = flags
    offer.office_code = _office_for(
        router, resident.district_code, data.department.value, resident.preferred_language.value
    )
    offer.offered_on = offered_on
    offer.expires_on = data.expires_on
    offer.outreach_due_on = (
        ctx.calendar.add_working_days(offered_on, ctx.settings.outreach_after_working_days) if visit else None
    )
    offer.updated_at = now
    await repo.session.flush()


async def _answered(
    repo: Repository,
    ctx: RoutingContext,
    data: OpportunityAccepted | OpportunityDeclined | OpportunityExpired,
    status: Literal["accepted", "declined", "expired"],
    at: dt.datetime,
) -> None:
    now = ctx.clock.now()
    offer = await repo.offer(data.opportunity_id, for_update=True)
    if offer is None:
        # The answer came before the offer itself (a retried event): keep it; the offer fills in the rest.
        offer = Offer(
            opportunity_id=data.opportunity_id,
            resident_id=data.resident_id,
            program_code=data.program_code,
            program_name_ko=data.program_code,
            program_name_en=data.program_code,
            department=data.department.value,
            district_code="",
            preferred_language="ko",
            vulnerability=[],
            offered_on=ctx.clock.date_of(at),
            expires_on=ctx.clock.date_of(at),
            status=OFFERED,
            status_at=at,
        )
        repo.session.add(offer)
    if offer.status != OFFERED:
        return  # answered already (or a redelivery)
    offer.status = status
    offer.status_at = at
    offer.updated_at = now
    if isinstance(data, OpportunityAccepted):
        offer.application_id = data.application_id
    await repo.session.flush()
    if offer.outreach_case_id is None:
        return
    case = await repo.case_for_update(offer.outreach_case_id)
    if case is None or not case.is_active:
        return
    if isinstance(data, OpportunityExpired) and data.reason == "deadline":
        return  # the offer ran out; the visit may still help
    reason: Literal["resident_responded", "consent_withdrawn"] = (
        "consent_withdrawn" if isinstance(data, OpportunityExpired) else "resident_responded"
    )
    await close(repo, ctx, case, reason, now)


async def on_accepted(repo: Repository, ctx: RoutingContext, data: OpportunityAccepted) -> None:
    await _answered(repo, ctx, data, "accepted", data.accepted_at)


async def on_declined(repo: Repository, ctx: RoutingContext, data: OpportunityDeclined) -> None:
    await _answered(repo, ctx, data, "declined", data.declined_at)


async def on_expired(repo: Repository, ctx: RoutingContext, data: OpportunityExpired) -> None:
    await _answered(repo, ctx, data, "expired", data.expired_at)


# ---------------------------------------------------------------------------------------------- the case


def _refs(case: Case) -> dict[str, object]:
    assert case.opportunity_id is not None
    return {
        "case_id": case.id,
        "opportunity_id": case.opportunity_id,
        "resident_id": case.resident_id,
        "program_code": case.program_code,
        "office_code": case.office_code,
    }


async def open_outreach(repo: Repository, ctx: RoutingContext, opportunity_id: uuid.UUID) -> Case | None:
    """Put an unanswered offer's resident in their district office's queue for a visit (once per offer)."""
    today, now = ctx.clock.today(), ctx.clock.now()
    offer = await repo.offer(opportunity_id, for_update=True)
    if (
        offer is None
        or offer.status != OFFERED
        or offer.outreach_case_id is not None
        or offer.outreach_due_on is None
        or not ctx.calendar.is_late(offer.outreach_due_on, today)
    ):
        return None
    settings = ctx.settings
    router = await Router.load(repo)
    department = settings.outreach_department.value
    try:
        decision = route(
            router.views,
            router.loads,
            district_code=offer.district_code,
            department=department,
            language=offer.preferred_language,
        )
    except NoOfficeServes as exc:
        log.error("no office to visit the resident; trying again at the next pass", extra={"error": str(exc)})
        return None
    office = router.place(decision, settings.outreach_case_weight)
    due = ctx.calendar.add_working_days(today, settings.outreach_sla_working_days)
    case = Case(
        id=uuid.uuid4(),
        kind=OUTREACH,
        application_id=None,
        opportunity_id=offer.opportunity_id,
        resident_id=offer.resident_id,
        program_code=offer.program_code,
        program_name_ko=offer.program_name_ko,
        program_name_en=offer.program_name_en,
        department=department,
        office_code=office.code,
        status=CaseStatus.OPEN,
        automatic=False,
        round=0,
        outcome="eligible",
        rule_version=0,
        missing=[],
        amount=offer.amount,
        amount_period=offer.amount_period,
        sla_days=settings.outreach_sla_working_days,
        case_weight=settings.outreach_case_weight,
        overflow_allowed=False,
        district_code=offer.district_code,
        preferred_language=offer.preferred_language,
        vulnerability=list(offer.vulnerability),
        interpreter_needed=decision.interpreter_needed,
        routing={**decision.as_record(), "explanation": f"Outreach: {decision.explanation}"},
        application_date=offer.offered_on,
        routed_on=today,
        due_date=due,
        paused_working_days=0,
        escalated=False,
        created_at=now,
        updated_at=now,
        priority=priority(
            offer.vulnerability,
            due_date=due,
            today=today,
            calendar=ctx.calendar,
            due_soon_working_days=settings.due_soon_working_days,
        ),
    )
    repo.session.add(case)
    offer.outreach_case_id = case.id
    offer.updated_at = now
    repo.add_entry(
        case,
        TIMER,
        "outreach_opened",
        now,
        opportunity_id=str(offer.opportunity_id),
        offered_on=offer.offered_on.isoformat(),
        answer_due_on=offer.outreach_due_on.isoformat(),
        vulnerability=list(offer.vulnerability),
        routing=case.routing,
    )
    await save(repo)
    await ctx.outbox.emit(
        repo.session,
        OutreachOpened(
            **_refs(case),
            department=settings.outreach_department,
            due_date=due,
            vulnerability=offer.vulnerability,
            opened_at=now,
        ),
        subject=str(case.resident_id),
    )
    log.info("outreach case opened", extra={"case_id": str(case.id), "office": office.code})
    return case


async def close(
    repo: Repository,
    ctx: RoutingContext,
    case: Case,
    reason: Literal["resident_responded", "consent_withdrawn"],
    now: dt.datetime,
) -> None:
    case.status = CaseStatus.CLOSED
    case.closed_reason = reason
    case.closed_at = now
    case.updated_at = now
    repo.add_entry(case, SYSTEM, "closed", now, reason=reason)
    await save(repo)
    await ctx.outbox.emit(
        repo.session,
        OutreachClosed(**_refs(case), reason=reason, closed_at=now),
        subject=str(case.resident_id),
    )


async def record_visit(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: VisitIn
) -> CaseOut:
    """A caseworker records a visit and what it came to; a final outcome closes the case."""
    case = await casework.load(repo, principal, case_id)
    if not case.is_outreach:
        raise casework.CaseStateConflict("Only an outreach case records a visit; decide this one instead.", case)
    today, now = ctx.clock.today(), ctx.clock.now()
    visited_on = body.visited_on or today
    if visited_on > today:
        raise UnprocessableContent.for_field("visited_on", "must not be after today")
    if visited_on < case.routed_on:
        raise UnprocessableContent.for_field("visited_on", "must not be before the outreach case was opened")
    casework._require_active(case, "visited")
    casework._require_handler(principal, case, "visited")
    outcome = OUTCOMES[body.outcome]
    repo.add_entry(
        case,
        principal.subject,
        "visited",
        now,
        outcome=body.outcome.value,
        final=outcome.final,
        visited_on=visited_on.isoformat(),
        note=body.note,
    )
    if outcome.final:
        case.status = CaseStatus.CLOSED
        case.closed_reason = "visited"
        case.closed_at = now
        case.reason_code = body.outcome.value
        case.decision_note = body.note
        case.decided_by = principal.subject
    case.updated_at = now
    await save(repo)
    await audit_log.record(
        repo.session,
        principal,
        action="outreach.visit",
        record_type="case",
        record_id=case.id,
        purpose="outreach",
        resident_id=case.resident_id,
    )
    await ctx.outbox.emit(
        repo.session,
        OutreachVisited(
            **_refs(case),
            outcome=body.outcome,
            final=outcome.final,
            visited_on=visited_on,
            recorded_by=principal.subject,
            recorded_at=now,
        ),
        subject=str(case.resident_id),
    )
    return views.detail(case, await repo.case_history(case.id), ctx.calendar, today)


# ---------------------------------------------------------------------------------------------- the timer


class OutreachTimer:
    """Opens the outreach cases that are due. Its state is in the database (each offer knows its case), so it
    carries on after a restart; replicas may run it side by side (the offer row is locked while its case opens)."""

    def __init__(self, db: Database, ctx: RoutingContext) -> None:
        self.db = db
        self.ctx = ctx
        self.opened = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        interval = self.ctx.settings.outreach_check_interval_seconds
        while not self._stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("outreach pass failed; trying again at the next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)

    def stop(self) -> None:
        self._stop.set()

    async def sweep(self) -> int:
        """One pass: every vulnerable resident whose time to answer an offer has run out gets an outreach case.
        Returns how many were opened."""
        today = self.ctx.clock.today()
        async with self.db.session() as session:
            due = await Repository(session).outreach_candidates(self.ctx.calendar.late_if_due_before(today))
        opened = 0
        for opportunity_id in due:
            try:
                async with self.db.session() as session:
                    if await open_outreach(Repository(session), self.ctx, opportunity_id) is not None:
                        opened += 1
            except (IntegrityError, StaleDataError, CaseChanged):
                log.info("outreach not opened this pass", extra={"opportunity_id": str(opportunity_id)})
        self.opened += opened
        return opened


@contextlib.asynccontextmanager
async def outreach_timer(runtime: Runtime, ctx: RoutingContext) -> AsyncIterator[OutreachTimer]:
    timer = OutreachTimer(runtime.db, ctx)
    task = asyncio.create_task(timer.run(), name="routing-outreach-timer")
    try:
        yield timer
    finally:
        timer.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=10)
