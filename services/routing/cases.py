"""Cases from eligibility determinations, withdrawals and residents' answers: the event-driven side of a case's life.

Which programs make a case (one per application and program, ever):
- eligible and not automatic, needs_review, or needs_information where a missing fact can only be obtained by staff:
  an open case in the responsible office's queue;
- eligible and automatic: a case created already decided (approved, reason ``automatic_grant``), so the resident's
  one status shows the grant with the office that made it;
- ineligible, or needs_information that the resident is asked for: no case.

A program whose department no office handles is not lost: a city-wide desk holds its case (rule ``unserved``, see
``policy``) until an office takes the department. Only when there is no city-wide desk at all is the determination a
dead letter, whose error names the program, department and district, to replay once an office exists.

A later evaluation round of the same application updates the cases it already has (and creates the ones that now
need a person); a round lower than or equal to one already applied is ignored, as is anything that arrives after the
application was withdrawn. Nothing here commits: the consumer's transaction does, with the inbox row and the outbox.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

from sqlalchemy import inspect
from sqlalchemy.orm.exc import StaleDataError

from services.routing import offices as office_logic
from services.routing.context import RoutingContext
from services.routing.models import ApplicationRecord, Case, CaseStatus, Office
from services.routing.policy import ROUTINE, NoOfficeServes, Offices, RoutingDecision, Rule, priority, route
from services.routing.reasons import AUTOMATIC_GRANT, REASON_CODES
from services.routing.repository import ROUTER_KEY, Repository
from shared.consumer import PermanentError
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseClosed,
    CaseDecided,
    CaseResumed,
    CaseRouted,
    Decision,
    Department,
    EligibilityDetermined,
    EventData,
    Localized,
    Outcome,
    ProgramDetermination,
)
from shared.problems import Conflict

log = logging.getLogger(__name__)

SYSTEM = "system:routing"
ELIGIBILITY = "system:eligibility"
RESIDENT = "resident"


class CaseChanged(Conflict):
    slug = "case-changed"

    def __init__(self) -> None:
        super().__init__("The case was changed by someone else at the same time; reload it and try again.")


async def save(repo: Repository, case: Case | None = None) -> None:
    """Write pending changes now, so that a concurrent change (the version check) is a 409, not a failed commit. A
    ``case`` this transaction added has no version anyone else could have changed: it is written with the rest of the
    transaction (a consumer's batch then writes its new cases, their history and their events together, not a
    flush per case; one it keeps aside is not even in the session, ``Repository.add_case``)."""
    if case is not None and (inspect(case).pending or inspect(case).transient):
        return
    try:
        await repo.session.flush()
    except StaleDataError:
        raise CaseChanged() from None


# ---------------------------------------------------------------------------------------------- what needs a person


def needs_person(program: ProgramDetermination) -> bool:
    if program.outcome is Outcome.ELIGIBLE:
        return not program.automatic
    if program.outcome is Outcome.NEEDS_REVIEW:
        return True
    if program.outcome is Outcome.NEEDS_INFORMATION:
        return any(m.asked_of == "staff" for m in program.missing)
    return False


def granted_automatically(program: ProgramDetermination) -> bool:
    return program.outcome is Outcome.ELIGIBLE and program.automatic


# ---------------------------------------------------------------------------------------------- events of a case


class CaseRef(TypedDict):
    """The fields every case event starts with."""

    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    department: Department
    office_code: str


def event_base(case: Case) -> CaseRef:
    assert case.application_id is not None, "an outreach case has no application: its steps are outreach.* events"
    return CaseRef(
        case_id=case.id,
        application_id=case.application_id,
        resident_id=case.resident_id,
        program_code=case.program_code,
        department=Department(case.department),
        office_code=case.office_code,
    )


async def announce(repo: Repository, ctx: RoutingContext, case: Case, event: Callable[[], EventData]) -> None:
    """Emit a ``case.*`` event of an application's case. An outreach case has no application: the resident's status
    view, eligibility and partners follow applications, so its steps are in its history and ``outreach.*`` only."""
    if not case.is_outreach:
        await ctx.outbox.emit(repo.session, event())


def program_name(case: Case) -> Localized:
    return Localized(ko=case.program_name_ko, en=case.program_name_en)


def refresh_priority(ctx: RoutingContext, case: Case, today: dt.date) -> None:
    running = case.status in (CaseStatus.OPEN, CaseStatus.ASSIGNED)
    case.priority = priority(
        case.vulnerability,
        due_date=case.due_date if running else None,
        today=today,
        calendar=ctx.calendar,
        due_soon_working_days=ctx.settings.due_soon_working_days,
        escalated=case.escalated,
    )


def resume_clock(ctx: RoutingContext, case: Case, resumed_on: dt.date) -> int:
    """End a pause on ``resumed_on``: the due date moves by the working days the case waited (see ``sla``). Returns
    those days."""
    if case.paused_since is None:
        return 0
    paused = ctx.calendar.working_days_between(case.paused_since, resumed_on)
    case.paused_working_days += paused
    case.due_date = ctx.calendar.add_working_days(case.due_date, paused)
    case.paused_since = None
    return paused


CloseReason = Literal["withdrawn", "no_longer_applicable"]


async def close(
    repo: Repository, ctx: RoutingContext, case: Case, reason: CloseReason, actor: str, now: dt.datetime
) -> None:
    """End an active case without a decision (withdrawn, or no longer applicable)."""
    _loads_changed(repo, case)
    case.status = CaseStatus.CLOSED
    case.closed_reason = reason
    case.closed_at = now
    case.paused_since = None
    case.updated_at = now
    repo.add_entry(case, actor, "closed", now, reason=reason)
    await save(repo)
    await ctx.outbox.emit(
        repo.session,
        CaseClosed(**event_base(case), reason=reason, closed_at=now),
    )


async def decide_automatically(
    repo: Repository, ctx: RoutingContext, case: Case, amount: int | None, now: dt.datetime
) -> None:
    today = ctx.clock.today()
    reason = REASON_CODES[AUTOMATIC_GRANT]
    _loads_changed(repo, case)
    resume_clock(ctx, case, today)
    case.status = CaseStatus.DECIDED
    case.decision = Decision.APPROVED.value
    case.reason_code = reason.code
    case.decided_by = ELIGIBILITY
    case.decided_at = now
    case.decided_on = today
    case.amount = amount
    case.updated_at = now
    repo.add_entry(case, ELIGIBILITY, "decided", now, decision="approved", reason_code=reason.code)
    await save(repo, case)
    await ctx.outbox.emit(
        repo.session,
        CaseDecided(
            **event_base(case),
            decision=Decision.APPROVED,
            reason_code=reason.code,
            reason=reason.label,
            amount=amount,
            automatic=True,
            decided_at=now,
        ),
    )


# ---------------------------------------------------------------------------------------------- routing a case


class Router:
    """Routes the cases of one determination (or of a consumer's transaction: :func:`router_of`); loads are read once
    and grow with each case placed."""

    def __init__(self, offices: Sequence[Office], loads: dict[str, float]) -> None:
        self.offices = {o.code: o for o in offices}
        self.views = Offices(office_logic.views(offices))
        self.loads = loads

    @classmethod
    async def load(cls, repo: Repository) -> Router:
        offices = await repo.all_offices()
        loads = {code: weighted for code, (_count, weighted) in (await repo.office_loads()).items()}
        return cls(offices, loads)

    def route(self, data: EligibilityDetermined, program: ProgramDetermination, *, overflow: bool) -> RoutingDecision:
        resident = data.resident
        try:
            decision = route(
                self.views,
                self.loads,
                district_code=resident.district_code,
                department=program.department.value,
                language=resident.preferred_language.value,
                overflow_allowed=overflow,
            )
        except NoOfficeServes as exc:
            # Not even a city-wide desk exists to hold the case. No retry can help until an administrator adds an
            # office; the whole determination waits as a dead letter (nothing of it is applied) and is replayed then.
            raise PermanentError(
                f"program {program.program_code} of application {data.application_id}: {exc}. Add an office for "
                f"{program.department.value} (PUT /v1/offices/{{code}}; a fallback office takes any district), then "
                "replay this dead letter: the whole determination is applied then."
            ) from None
        if decision.rule is Rule.UNSERVED:
            log.warning(
                "no office handles the department; a city-wide desk holds the case",
                extra={
                    "application_id": str(data.application_id),
                    "program": program.program_code,
                    "department": program.department.value,
                    "district": resident.district_code,
                    "office": decision.office_code,
                },
            )
        return decision

    def place(self, decision: RoutingDecision, weight: float) -> Office:
        self.loads[decision.office_code] = self.loads.get(decision.office_code, 0.0) + weight
        return self.offices[decision.office_code]


async def router_of(repo: Repository) -> Router:
    """The router of the transaction: the offices and their loads read once for all its events (and the rows they
    added not written for it), then grown with each case placed. A case that stops counting in an office's load
    (closed, decided) makes it read again (:func:`_loads_changed`). Within a savepoint, whose rollback would leave its
    placements counted, a router of its own."""
    if repo.session.in_nested_transaction():
        return await Router.load(repo)
    router: Router | None = repo.session.info.get(ROUTER_KEY)
    if router is None:
        router = repo.session.info[ROUTER_KEY] = await Router.load(repo)
    return router


def _loads_changed(repo: Repository, case: Case) -> None:
    """``case`` is about to stop counting in its office's load, if it counts: the transaction's router reads them
    again."""
    if case.is_active:
        repo.session.info.pop(ROUTER_KEY, None)


def sla_start(data: EligibilityDetermined, ctx: RoutingContext) -> dt.date:
    """The day a new case's SLA counts from (its due date is ``sla_days`` working days after it).

    - What the first evaluation of an application (trigger ``submitted``) finds counts from the application date:
      the resident asked then, and a slow evaluation must not cost them time.
    - Work that only a later round creates (a program that now needs a person after the resident's answer, a fact a
      department reported, a registry or consent change; or a case closed as no longer applicable and needed again)
      counts from that round's evaluation date: no office could have started on it earlier. When the round follows
      the resident's answer, this is the pause rule again: the days before the answer were the resident's.
    - The evaluation's own date counts (in the offices' time zone), not the day routing handles it, so a backlog in
      routing costs the resident nothing; a date after routing's today (a clock running ahead) counts as today."""
    if data.trigger == "submitted":
        return data.application_date
    evaluated_on = min(ctx.clock.date_of(data.evaluated_at), ctx.clock.today())
    return max(data.application_date, evaluated_on)


async def open_case(
    repo: Repository,
    ctx: RoutingContext,
    router: Router,
    data: EligibilityDetermined,
    program: ProgramDetermination,
    now: dt.datetime,
    *,
    existing: Case | None = None,
) -> Case:
    """Route a program that needs a person to an office's queue (a new case, or a closed one re-opened)."""
    today = ctx.clock.today()
    decision = router.route(data, program, overflow=program.overflow_allowed)
    office = router.place(decision, program.case_weight)
    due = ctx.calendar.add_working_days(sla_start(data, ctx), program.sla_days)
    case = existing or Case(id=uuid.uuid4(), application_id=data.application_id, created_at=now)
    _fill(case, data, program, now)
    case.office_code = office.code
    case.status = CaseStatus.OPEN
    case.automatic = False
    case.routing = decision.as_record()
    case.interpreter_needed = decision.interpreter_needed
    case.routed_on = today
    case.due_date = due
    case.paused_since = None
    case.paused_working_days = 0
    case.breached_on = None
    case.escalated = False
    case.escalated_at = None
    case.assignee = None
    case.assigned_at = None
    case.closed_reason = None
    case.closed_at = None
    refresh_priority(ctx, case, today)
    if existing is None:
        repo.add_case(case)
    repo.add_entry(case, SYSTEM, "reopened" if existing else "routed", now, round=data.round, routing=case.routing)
    await save(repo, case)
    await ctx.outbox.emit(
        repo.session,
        CaseRouted(
            **event_base(case),
            office_name=office_logic.name_of(office),
            status="open",
            priority=case.priority,
            automatic=False,
            due_date=case.due_date,
            reason=decision.explanation,
            routed_at=now,
        ),
    )
    # At debug: the case's history ("routed", with the decision) and its case.routed event record every routing; a
    # log line per case cost a few per cent of the consumer's CPU.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("case routed", extra={"case_id": str(case.id), "office": office.code, "rule": decision.rule.value})
    return case


async def grant_case(
    repo: Repository,
    ctx: RoutingContext,
    router: Router,
    data: EligibilityDetermined,
    program: ProgramDetermination,
    now: dt.datetime,
) -> Case:
    """An automatic grant: a case created decided, recorded at the responsible office, so the status shows it."""
    today = ctx.clock.today()
    decision = router.route(data, program, overflow=False)
    office = router.offices[decision.office_code]  # a decided case adds no load
    responsible = (
        "the office responsible for it"
        if decision.rule is not Rule.UNSERVED
        else f"a city-wide desk, as no office handles {decision.department} for district {decision.district_code}"
    )
    case = Case(id=uuid.uuid4(), application_id=data.application_id, created_at=now)
    _fill(case, data, program, now)
    case.office_code = office.code
    case.status = CaseStatus.DECIDED
    case.automatic = True
    case.routing = decision.as_record()
    case.interpreter_needed = False
    case.routed_on = today
    case.due_date = ctx.calendar.add_working_days(sla_start(data, ctx), program.sla_days)
    case.paused_working_days = 0
    case.escalated = False
    case.priority = ROUTINE
    repo.add_case(case)
    repo.add_entry(case, SYSTEM, "routed", now, round=data.round, routing=case.routing, automatic=True)
    await save(repo, case)
    await ctx.outbox.emit(
        repo.session,
        CaseRouted(
            **event_base(case),
            office_name=office_logic.name_of(office),
            status="closed",
            priority=case.priority,
            automatic=True,
            due_date=None,
            reason=f"Granted automatically; recorded at {office.code}, {responsible}.",
            routed_at=now,
        ),
    )
    await decide_automatically(repo, ctx, case, program.amount, now)
    return case


def _fill(case: Case, data: EligibilityDetermined, program: ProgramDetermination, now: dt.datetime) -> None:
    """Copy what a determination says about a program (and the resident's context) onto its case."""
    case.resident_id = data.resident_id
    case.program_code = program.program_code
    case.program_name_ko = program.program_name.ko
    case.program_name_en = program.program_name.en
    case.department = program.department.value
    case.round = data.round
    case.outcome = program.outcome.value
    case.rule_version = program.rule_version
    case.missing = [m.model_dump(mode="json") for m in program.missing]
    case.amount = program.amount
    case.amount_period = program.amount_period
    case.sla_days = program.sla_days
    case.case_weight = program.case_weight
    case.overflow_allowed = program.overflow_allowed
    case.district_code = data.resident.district_code
    case.preferred_language = data.resident.preferred_language.value
    case.vulnerability = [v.value for v in data.resident.vulnerability]
    case.application_date = data.application_date
    case.updated_at = now


# ---------------------------------------------------------------------------------------------- the handlers' logic


async def _application(
    repo: Repository, application_id: uuid.UUID, resident_id: uuid.UUID, now: dt.datetime
) -> ApplicationRecord:
    record = await repo.application(application_id)
    if record is None:
        record = ApplicationRecord(
            application_id=application_id, resident_id=resident_id, last_round=0, withdrawn_at=None, updated_at=now
        )
        # Written with the rest of the transaction: a concurrent first event of the same application makes it fail
        # there, and the consumer retries the event alone, finding this row.
        repo.session.add(record)
    return record


async def apply_determination(repo: Repository, ctx: RoutingContext, data: EligibilityDetermined) -> None:
    now = ctx.clock.now()
    record = await _application(repo, data.application_id, data.resident_id, now)
    if record.withdrawn_at is not None:
        log.info("determination after withdrawal ignored", extra={"application_id": str(data.application_id)})
        return
    if data.round <= record.last_round:
        log.info(
            "stale determination ignored",
            extra={"application_id": str(data.application_id), "round": data.round, "applied": record.last_round},
        )
        return
    record.last_round = data.round
    record.updated_at = now
    cases = {c.program_code: c for c in await repo.cases_of_application(data.application_id)}
    router: Router | None = None
    for program in data.programs:
        case = cases.get(program.program_code)
        wants_person, granted = needs_person(program), granted_automatically(program)
        if (case is None or _reopenable(case)) and (wants_person or granted):
            router = router or await router_of(repo)
            if case is None and wants_person:
                await open_case(repo, ctx, router, data, program, now)
            elif case is None:
                await grant_case(repo, ctx, router, data, program, now)
            elif wants_person:
                await open_case(repo, ctx, router, data, program, now, existing=case)
            else:
                _fill(case, data, program, now)
                case.closed_reason = None
                case.closed_at = None
                case.automatic = True
                repo.add_entry(case, SYSTEM, "reopened", now, round=data.round)
                await decide_automatically(repo, ctx, case, program.amount, now)
        elif case is not None:
            await _reevaluate(repo, ctx, case, data, program, now)


def _reopenable(case: Case) -> bool:
    return case.status == CaseStatus.CLOSED and case.closed_reason == "no_longer_applicable"


async def _reevaluate(
    repo: Repository,
    ctx: RoutingContext,
    case: Case,
    data: EligibilityDetermined,
    program: ProgramDetermination,
    now: dt.datetime,
) -> None:
    if not case.is_active:
        return  # a decision stands; a re-evaluation does not undo it
    if program.outcome is Outcome.INELIGIBLE:
        await close(repo, ctx, case, "no_longer_applicable", SYSTEM, now)
        return
    case.round = data.round
    case.outcome = program.outcome.value
    case.rule_version = program.rule_version
    case.missing = [m.model_dump(mode="json") for m in program.missing]
    case.amount = program.amount
    case.amount_period = program.amount_period
    case.updated_at = now
    repo.add_entry(case, SYSTEM, "reevaluated", now, round=data.round, outcome=program.outcome.value)
    if granted_automatically(program):
        await decide_automatically(repo, ctx, case, program.amount, now)
        return
    await save(repo)


async def submitted(repo: Repository, ctx: RoutingContext, data: ApplicationSubmitted) -> None:
    """An application was made: routing notes the channel (open data counts take-up per channel). Its cases come
    with the determinations."""
    record = await _application(repo, data.application_id, data.resident_id, ctx.clock.now())
    if record.channel is None:
        record.channel = data.channel.value
    if record.life_event is None:
        record.life_event = data.life_event


async def withdraw(repo: Repository, ctx: RoutingContext, data: ApplicationWithdrawn) -> None:
    now = ctx.clock.now()
    record = await _application(repo, data.application_id, data.resident_id, now)
    if record.withdrawn_at is not None:
        return
    record.withdrawn_at = data.withdrawn_at
    record.updated_at = now
    for case in await repo.cases_of_application(data.application_id):
        if case.is_active:
            await close(repo, ctx, case, "withdrawn", RESIDENT, now)


async def info_provided(repo: Repository, ctx: RoutingContext, data: ApplicationInfoProvided) -> None:
    """The resident answered: the cases waiting on them resume (those named, or all of the application's).

    The pause ends on the day the resident answered (``provided_at``, as a date in the offices' time zone), not on the
    day routing handles the event: a backlog in routing must not cost the resident working days. An answer dated
    after routing's today (clock skew) ends the pause today; a case asked on a later day than the answer was given
    is not answered by it and keeps waiting. What depends on *today* — the priority, the days left — is reckoned from
    the day routing handles it."""
    now, today = ctx.clock.now(), ctx.clock.today()
    answered_on = min(ctx.clock.date_of(data.provided_at), today)
    record = await repo.application(data.application_id)
    if record is None or record.withdrawn_at is not None:
        return
    waiting = [
        c for c in await repo.cases_of_application(data.application_id) if c.status == CaseStatus.WAITING_ON_RESIDENT
    ]
    if data.case_ids:
        named = set(data.case_ids)
        waiting = [c for c in waiting if c.id in named]
    elif data.program_codes:
        codes = set(data.program_codes)
        waiting = [c for c in waiting if c.program_code in codes]
    for case in waiting:
        if case.paused_since is not None and case.paused_since > answered_on:
            # Asked after this answer was given (routing heard of the answer late): it waits for its own answer.
            log.info("answer predates the question; the case keeps waiting", extra={"case_id": str(case.id)})
            continue
        paused = resume_clock(ctx, case, answered_on)
        case.status = CaseStatus.ASSIGNED if case.assignee else CaseStatus.OPEN
        case.updated_at = now
        refresh_priority(ctx, case, today)
        repo.add_entry(
            case,
            RESIDENT,
            "info_provided",
            now,
            answered=sorted(data.answers),
            answered_on=answered_on.isoformat(),
            paused_working_days=paused,
            due_date=case.due_date.isoformat(),
        )
        await ctx.outbox.emit(
            repo.session,
            CaseResumed(**event_base(case), due_date=case.due_date, paused_working_days=paused, resumed_at=now),
        )
    await save(repo)
