"""Integrated case management of households (통합사례관리, 사회보장급여법 제42조의2): one household, one plan.

Routing gives each program its own case in its department's office. A household whose members have active cases in
several departments and who are vulnerable or in crisis gets one case above them — the *household case* — in the
district's integrated case-management office (희망복지지원단), with one lead caseworker and one shared plan.

Rules:
- **One per household.** A resident is a member of one running household case at most (the unique
  ``open_resident_id`` of their membership). The household case references its members' department cases by the
  members' ids; nothing of them is copied, so the lead always sees them as they are.
- **Opening.** By rule, whenever a resident's cases change (a determination, an application's submission): their
  active cases span at least ``household_min_departments`` departments and one of them carries a flag of
  ``household_flags`` (registry vulnerabilities, or a crisis a caseworker or department flagged), or an application
  of theirs is for a crisis life event (``household_crisis_life_events``: losing a job, a death in the family). Or by
  any caseworker at any time, naming the members. Who lives together comes from the registry: the events about a
  resident carry the pseudonymous id intake keeps for their registered household (``ResidentContext.household_id``,
  kept in ``resident_households``), so the rule is judged over the active cases of everyone in the household and the
  case opened holds every one of them with an active case; a housemate who comes to have a case later joins the
  running case by itself (``household_case.member_added``, told as the others were at opening). The lead may add
  anyone else (``POST .../members``).
- **Where, and who leads.** The routing policy chooses the office like any case's (department ``case_management``,
  the resident's district and language), and the case weighs ``household_case_weight`` in that office's load. A
  caseworker of the office claims it and becomes its lead; a supervisor assigns or reassigns the lead.
- **What the lead sees.** The members' department cases — status, due dates, decisions — for each member who gave
  the ``case_management`` consent, each read written to the audit log naming that member. Others in the office see
  the household case without the department cases; a department's staff see on their case that a household case
  exists and who leads it (``CaseOut.household``), nothing more.
- **Plan, follow-ups, conferences.** The plan (needs by domain, goals, services with owners and dates) is replaced
  whole, each version in the history. A follow-up is due within its SLA in working days; the SLA timer records a
  missed one once and escalates the household case to the office's supervisors; on the working day one falls due it
  reminds the lead once (``household_case.follow_up_due``, not overdue), so that it need not be missed. Conferences
  are recorded with participants, decisions and actions. The history is append-only.
- **Closure** with an outcome; a check after ``household_follow_up_check_months`` becomes a follow-up of the lead.
- The members are told (notify) at opening, at each plan change and at closure: ``household_case.*`` events.

Nothing here commits: the request's session or the consumer's transaction does, with the events.
"""

from __future__ import annotations

import calendar as month_calendar
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from sqlalchemy.orm.exc import StaleDataError

from services.routing import offices as office_logic
from services.routing.cases import CaseChanged
from services.routing.context import RoutingContext
from services.routing.models import (
    Case,
    HouseholdCase,
    HouseholdCaseStatus,
    HouseholdConference,
    HouseholdEntry,
    HouseholdFollowUp,
    HouseholdMember,
    Office,
    audit_log,
)
from services.routing.policy import NoOfficeServes, route
from services.routing.repository import ActiveCaseBrief, Repository
from services.routing.schemas import (
    CASE_MANAGEMENT,
    ConferenceAction,
    ConferenceIn,
    ConferenceOut,
    ConferenceParticipant,
    DepartmentCaseOut,
    FollowUpDoneIn,
    FollowUpIn,
    FollowUpOut,
    HistoryEntry,
    HouseholdCaseOut,
    HouseholdCaseSummary,
    HouseholdCloseIn,
    HouseholdMemberIn,
    HouseholdMemberOut,
    HouseholdOpenIn,
    HouseholdRef,
    LeadIn,
    PlanIn,
    RoutingOut,
)
from shared.auth import Principal, Role
from shared.events import (
    Decision,
    Department,
    HouseholdCaseClosed,
    HouseholdCaseFollowUpDue,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCasePlanChanged,
    Localized,
    NeedDomain,
)
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent

log = logging.getLogger(__name__)

SYSTEM = "system:routing"
TIMER = "system:sla-timer"
CONSENT = "case_management"
FOLLOW_UP, CLOSURE_CHECK = "follow_up", "closure_check"


class HouseholdCaseNotFound(NotFound):
    def __init__(self, household_case_id: uuid.UUID) -> None:
        super().__init__(f"No household case {household_case_id} in your offices.")


class HouseholdCaseConflict(Conflict):
    slug = "household-case-state"

    def __init__(self, detail: str, household: HouseholdCase | None = None, **extra: Any) -> None:
        if household is not None:
            extra = {"household_case_id": str(household.id), "household_case_status": household.status, **extra}
        super().__init__(detail, **extra)


async def _save(repo: Repository) -> None:
    try:
        await repo.session.flush()
    except StaleDataError:
        raise CaseChanged() from None


# ---------------------------------------------------------------------------------------------- opening


# The residents whose cases a consumer's transaction changed (session.info), considered once at its end.
_TO_CONSIDER = "routing_households_to_consider"


def consider_later(repo: Repository, resident_id: uuid.UUID) -> None:
    """The resident's cases changed in a consumer's transaction: their household is considered once, at its end
    (:func:`consider_noted`), not after each of the batch's events about them."""
    repo.session.info.setdefault(_TO_CONSIDER, {})[resident_id] = None


async def consider_noted(repo: Repository, ctx: RoutingContext, erased: Callable[[uuid.UUID], Awaitable[bool]]) -> None:
    """:func:`consider` each resident noted in the transaction, in the order noted, unless erased since. What the rule
    reads of them is read once for all of them (:class:`_Reads`): each that the rule leaves alone is judged on those
    reads, as :func:`consider` would judge it (nothing was written since they were read); from the first that opens or
    joins a household case on, each is considered apart, with reads of its own."""
    noted: dict[uuid.UUID, None] = repo.session.info.pop(_TO_CONSIDER, {})
    residents = [resident_id for resident_id in noted if not await erased(resident_id)]
    reads = await _Reads.load(repo, residents) if len(residents) > 1 else None
    for resident_id in residents:
        if reads is not None and await reads.left_alone(ctx, resident_id):
            continue
        if await consider(repo, ctx, resident_id) is not None:
            reads = None  # a household case opened or joined: what was read before no longer holds


class _Reads:
    """What :func:`consider` reads of several residents, read in a query per kind: the households they live in, who of
    those households is in a running household case, their active cases (and the life events of those cases'
    applications, when the rule comes to them)."""

    def __init__(
        self,
        repo: Repository,
        housemates: dict[uuid.UUID, list[uuid.UUID]],
        in_running: set[uuid.UUID],
        active: Sequence[ActiveCaseBrief],
    ) -> None:
        self.repo = repo
        self.housemates = housemates
        self.in_running = in_running
        self.active = active
        # Each resident's active cases, gathered in one pass: a batch considers many residents, and going through
        # every active case of all of them for each one was quadratic in the batch (5-6 % of routing's CPU, py-spy).
        self.active_of: dict[uuid.UUID, list[ActiveCaseBrief]] = {}
        for c in active:
            self.active_of.setdefault(c.resident_id, []).append(c)
        self._life_events: dict[uuid.UUID, str] | None = None

    @classmethod
    async def load(cls, repo: Repository, resident_ids: Sequence[uuid.UUID]) -> _Reads:
        housemates = await repo.housemates_of(resident_ids)
        everyone = list(dict.fromkeys(r for household in housemates.values() for r in household))
        in_running = await repo.in_running_household(everyone)
        return cls(repo, housemates, in_running, await repo.active_cases_in_brief(everyone))

    async def life_events(self, application_ids: Sequence[uuid.UUID]) -> set[str]:
        if self._life_events is None:
            ids = list(dict.fromkeys(c.application_id for c in self.active if c.application_id is not None))
            self._life_events = await self.repo.life_events_of(ids)
        return {self._life_events[i] for i in application_ids if i in self._life_events}

    async def left_alone(self, ctx: RoutingContext, resident_id: uuid.UUID) -> bool:
        """Whether :func:`consider` would neither open nor join a household case for the resident."""
        if resident_id in self.in_running:
            return True
        household = self.housemates[resident_id]
        if resident_id not in self.active_of:
            return True
        # The household's active cases (in another order than the query's: the rule reads them as sets).
        active = [c for member in dict.fromkeys(household) for c in self.active_of.get(member, ())]
        if any(r in self.in_running for r in household[1:]):
            return False
        return await _reason(ctx, active, self.life_events) is None


async def consider(repo: Repository, ctx: RoutingContext, resident_id: uuid.UUID) -> HouseholdCase | None:
    """Take the resident's household on when the rule holds (event handlers): the household is the residents
    registered in it (``ResidentContext.household_id``) — the resident alone when routing knows no household of
    theirs. When a housemate is in a running household case the resident joins it (once they have an active case);
    otherwise the rule is judged over the active cases of everyone in the household, and the case opened holds every
    one of them with an active case. Returns the household case opened or joined."""
    if await repo.running_household_of([resident_id]) is not None:
        return None
    household = await repo.housemates(resident_id)
    active = await repo.cases_of_residents(household, active=True)
    with_cases = [rid for rid in household if any(c.resident_id == rid for c in active)]
    if resident_id not in with_cases:
        return None
    running = await repo.running_household_of(household[1:]) if len(household) > 1 else None
    if running is not None:
        await _join(repo, ctx, running, resident_id, "household", SYSTEM)
        return running
    reason = await _reason(ctx, active, repo.life_events)
    if reason is None:
        return None
    mine = [c for c in active if c.resident_id == resident_id]
    latest = max(mine, key=lambda c: (c.created_at, str(c.id)))
    try:
        return await _open(
            repo, ctx, with_cases, latest.district_code, latest.preferred_language, "automatic", SYSTEM, reason
        )
    except NoOfficeServes as exc:
        log.warning("no office to hold a household case", extra={"resident_id": str(resident_id), "error": str(exc)})
        return None


async def _reason(
    ctx: RoutingContext,
    active: Sequence[Case | ActiveCaseBrief],
    life_events: Callable[[Sequence[uuid.UUID]], Awaitable[set[str]]],
) -> dict[str, Any] | None:
    """Why the household of these active cases is taken on, or None when the rule does not hold for it."""
    departments = sorted({c.department for c in active})
    if len(departments) < ctx.settings.household_min_departments:
        return None
    wanted = {v.value for v in ctx.settings.household_flags}
    flags = sorted({v for c in active for v in c.vulnerability if v in wanted})
    application_ids = [c.application_id for c in active if c.application_id is not None]
    crises = sorted((await life_events(application_ids)) & ctx.settings.household_crisis_life_events)
    if not flags and not crises:
        return None
    return {"departments": departments, "flags": flags, "life_events": crises}


async def open_by_caseworker(
    repo: Repository, ctx: RoutingContext, principal: Principal, body: HouseholdOpenIn
) -> HouseholdCaseOut:
    """A caseworker opens a household case for residents routing knows; the caller must work a case of one of them
    (or be of an integrated case-management office, or an admin)."""
    known = await repo.residents_known(body.members)
    for index, member in enumerate(body.members):
        if member not in known:
            raise UnprocessableContent.for_field(f"members[{index}]", "routing knows no case or offer of this resident")
    cases = await repo.cases_of_residents(body.members)
    offices = {o.code: o for o in await repo.all_offices()}
    mine = principal.role is Role.ADMIN or any(c.office_code in principal.offices for c in cases)
    case_manager = any(CASE_MANAGEMENT in offices[code].departments for code in principal.offices if code in offices)
    if not (mine or case_manager):
        raise UnprocessableContent.for_field("members", "none of these residents has a case in your offices")
    running = await repo.running_household_of(body.members)
    if running is not None:
        raise HouseholdCaseConflict("A member is in a running household case already (one per household).", running)
    if cases:
        latest = max(cases, key=lambda c: (c.created_at, str(c.id)))
        district, language = latest.district_code, latest.preferred_language
    else:
        offer = await repo.offers_of_residents(body.members)
        first = await repo.offer(sorted(offer)[0])
        assert first is not None
        district, language = first.district_code, first.preferred_language
    reason = {
        "reason": body.reason,
        "departments": sorted({c.department for c in cases if c.is_active}),
    }
    try:
        household = await _open(repo, ctx, body.members, district, language, "caseworker", principal.subject, reason)
    except NoOfficeServes:
        raise HouseholdCaseConflict("No office takes integrated case management for the district.") from None
    return await detail(repo, ctx, principal, household, CONSENT)


async def _open(
    repo: Repository,
    ctx: RoutingContext,
    members: Sequence[uuid.UUID],
    district: str,
    language: str,
    trigger: Literal["automatic", "caseworker"],
    actor: str,
    reason: dict[str, Any],
) -> HouseholdCase:
    now, today = ctx.clock.now(), ctx.clock.today()
    offices = await repo.all_offices()
    loads = {code: weighted for code, (_count, weighted) in (await repo.office_loads()).items()}
    decision = route(
        office_logic.views(offices),
        loads,
        district_code=district,
        department=CASE_MANAGEMENT,
        language=language,
        overflow_allowed=False,
    )
    household = HouseholdCase(
        id=uuid.uuid4(),
        district_code=district,
        preferred_language=language,
        office_code=decision.office_code,
        routing=decision.as_record(),
        case_weight=ctx.settings.household_case_weight,
        status=HouseholdCaseStatus.OPEN,
        trigger=trigger,
        opened_by=actor,
        opened_reason=reason,
        opened_at=now,
        opened_on=today,
        escalated=False,
        plan={},
        plan_version=0,
        created_at=now,
        updated_at=now,
    )
    repo.session.add(household)
    for member in members:
        repo.session.add(
            HouseholdMember(
                household_case_id=household.id,
                resident_id=member,
                open_resident_id=member,
                added_by=actor,
                added_at=now,
            )
        )
    repo.add_household_entry(
        household, actor, "opened", now, trigger=trigger, members=[str(m) for m in members], routing=household.routing,
        **reason,
    )  # fmt: skip
    await repo.session.flush()  # a member already in a running household case stops here (the unique key)
    office = next(o for o in offices if o.code == decision.office_code)
    await ctx.outbox.emit(
        repo.session,
        HouseholdCaseOpened(
            **await _event_base(repo, household),
            office_name=office_logic.name_of(office),
            trigger=trigger,
            departments=list(reason.get("departments", [])),
            opened_at=now,
        ),
    )
    log.info("household case opened", extra={"household_case_id": str(household.id), "office": office.code})
    return household


async def _event_base(repo: Repository, household: HouseholdCase) -> dict[str, Any]:
    """The fields every household_case.* event starts with: the members by their pseudonymous ids only."""
    members = [m.resident_id for m in await repo.household_members(household.id)]
    return {
        "household_case_id": household.id,
        "member_ids": members,
        "district_code": household.district_code,
        "office_code": household.office_code,
    }


# ---------------------------------------------------------------------------------------------- who may do what


async def load(repo: Repository, principal: Principal, household_case_id: uuid.UUID) -> HouseholdCase:
    household = await repo.visible_household_case(principal, household_case_id)
    if household is None:
        raise HouseholdCaseNotFound(household_case_id)
    return household


def _is_supervisor(principal: Principal) -> bool:
    return principal.role in (Role.SUPERVISOR, Role.ADMIN)


def _sees_details(principal: Principal, household: HouseholdCase) -> bool:
    """The lead, the office's supervisors and admins see the members' department cases (with their consent)."""
    return _is_supervisor(principal) or household.lead == principal.subject


def _require_lead(principal: Principal, household: HouseholdCase, action: str) -> None:
    if not _sees_details(principal, household):
        raise Forbidden(f"Only the household case's lead or a supervisor of its office {action}.")


def _require_running(household: HouseholdCase, action: str) -> None:
    if not household.is_running:
        raise HouseholdCaseConflict(f"The household case is closed; it cannot be {action}.", household)


# ---------------------------------------------------------------------------------------------- reading


async def read(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, purpose: str
) -> HouseholdCaseOut:
    return await detail(repo, ctx, principal, await load(repo, principal, household_case_id), purpose)


async def detail(
    repo: Repository, ctx: RoutingContext, principal: Principal, household: HouseholdCase, purpose: str
) -> HouseholdCaseOut:
    """The household case as its office sees it. For the lead (and supervisors) each consenting member's department
    cases, each such read in the audit log naming the member."""
    members = await repo.household_members(household.id)
    ids = [m.resident_id for m in members]
    consented = {m.resident_id: await _consented(repo, m.resident_id) for m in members}
    details = _sees_details(principal, household)
    by_member: dict[uuid.UUID, list[DepartmentCaseOut]] = {rid: [] for rid in ids}
    if details:
        for case in await repo.cases_of_residents([rid for rid in ids if consented[rid]]):
            by_member[case.resident_id].append(_department_case(case))
        for rid in ids:
            if consented[rid]:
                await audit_log.record(
                    repo.session,
                    principal,
                    action="household_case.read",
                    record_type="household_case",
                    record_id=household.id,
                    purpose=purpose,
                    resident_id=rid,
                )
    office = await repo.office(household.office_code)
    return HouseholdCaseOut(
        id=household.id,
        status=household.status,
        district_code=household.district_code,
        office_code=household.office_code,
        office_name=office_logic.name_of(office)
        if office
        else Localized(ko=household.office_code, en=household.office_code),
        lead=household.lead,
        trigger=household.trigger,
        opened_by=household.opened_by,
        opened_at=household.opened_at,
        opened_reason=household.opened_reason,
        routing=RoutingOut.model_validate(household.routing),
        escalated=household.escalated,
        members=[
            HouseholdMemberOut(
                resident_id=m.resident_id,
                added_by=m.added_by,
                added_at=m.added_at,
                consented=consented[m.resident_id],
                cases=by_member[m.resident_id] if details and consented[m.resident_id] else None,
            )
            for m in members
        ],
        plan=household.plan or None,
        plan_version=household.plan_version,
        follow_ups=[_follow_up_out(f) for f in await repo.household_follow_ups(household.id)],
        conferences=[_conference_out(c) for c in await repo.household_conferences(household.id)],
        outcome=household.outcome,
        closure_note=household.closure_note,
        closed_at=household.closed_at,
        follow_up_check_on=household.follow_up_check_on,
        history=[_entry(e) for e in await repo.household_history(household.id)],
        version=household.version,
    )


async def listing(
    repo: Repository, principal: Principal, office_code: str | None, statuses: Sequence[str], limit: int
) -> list[HouseholdCaseSummary]:
    households = await repo.household_cases(principal, office_code, statuses, limit)
    counts = await repo.household_member_counts([h.id for h in households])
    return [
        HouseholdCaseSummary(
            id=h.id,
            status=h.status,
            district_code=h.district_code,
            office_code=h.office_code,
            lead=h.lead,
            trigger=h.trigger,
            escalated=h.escalated,
            members=counts.get(h.id, 0),
            plan_version=h.plan_version,
            opened_at=h.opened_at,
            closed_at=h.closed_at,
        )
        for h in households
    ]


async def reference(repo: Repository, resident_id: uuid.UUID) -> HouseholdRef | None:
    """What a department's staff see of a household case on their case: that it exists, where, and who leads."""
    household = await repo.household_of_resident(resident_id)
    if household is None:
        return None
    office = await repo.office(household.office_code)
    return HouseholdRef(
        id=household.id,
        status=household.status,
        office_code=household.office_code,
        office_name=office_logic.name_of(office)
        if office
        else Localized(ko=household.office_code, en=household.office_code),
        lead=household.lead,
    )


async def _consented(repo: Repository, resident_id: uuid.UUID) -> bool:
    consents = await repo.resident_consents(resident_id)
    return consents is not None and consents.consented(CONSENT)


def _department_case(case: Case) -> DepartmentCaseOut:
    return DepartmentCaseOut(
        case_id=case.id,
        application_id=case.application_id,
        program_code=case.program_code,
        program_name=Localized(ko=case.program_name_ko, en=case.program_name_en),
        department=Department(case.department),
        office_code=case.office_code,
        status=case.status,
        due_date=case.due_date,
        assignee=case.assignee,
        decision=Decision(case.decision) if case.decision else None,
        reason_code=case.reason_code,
        decided_on=case.decided_on,
    )


def _follow_up_out(f: HouseholdFollowUp) -> FollowUpOut:
    return FollowUpOut(
        id=f.id,
        kind=f.kind,
        purpose=f.purpose,
        owner=f.owner,
        scheduled_on=f.scheduled_on,
        sla_working_days=f.sla_working_days,
        due_date=f.due_date,
        done_at=f.done_at,
        done_by=f.done_by,
        result=f.result,
        missed_on=f.missed_on,
    )


def _conference_out(c: HouseholdConference) -> ConferenceOut:
    return ConferenceOut(
        id=c.id,
        held_on=c.held_on,
        participants=[ConferenceParticipant.model_validate(p) for p in c.participants],
        decisions=list(c.decisions),
        actions=[ConferenceAction.model_validate(a) for a in c.actions],
        recorded_by=c.recorded_by,
        recorded_at=c.recorded_at,
    )


def _entry(e: HouseholdEntry) -> HistoryEntry:
    return HistoryEntry(at=e.at, actor=e.actor, action=e.action, details=e.details)


# ---------------------------------------------------------------------------------------------- the lead


async def claim(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID
) -> HouseholdCaseOut:
    household = await load(repo, principal, household_case_id)
    _require_running(household, "claimed")
    if household.lead == principal.subject:
        return await detail(repo, ctx, principal, household, CONSENT)
    if household.lead is not None:
        raise HouseholdCaseConflict("The household case has a lead; a supervisor reassigns it.", household)
    if principal.role is not Role.CASEWORKER:
        raise Forbidden("A caseworker claims a household case; a supervisor assigns one (POST .../assign).")
    await _set_lead(repo, ctx, principal, household, principal.subject, "claimed")
    return await detail(repo, ctx, principal, household, CONSENT)


async def assign(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, body: LeadIn
) -> HouseholdCaseOut:
    household = await load(repo, principal, household_case_id)
    if not _is_supervisor(principal):
        raise Forbidden("Only a supervisor assigns or reassigns the lead; a caseworker claims an unled case.")
    _require_running(household, "assigned")
    if household.lead != body.lead:
        await _set_lead(repo, ctx, principal, household, body.lead, "lead_assigned")
    return await detail(repo, ctx, principal, household, CONSENT)


async def _set_lead(
    repo: Repository, ctx: RoutingContext, principal: Principal, household: HouseholdCase, lead: str, action: str
) -> None:
    now = ctx.clock.now()
    previous = household.lead
    household.lead = lead
    household.lead_assigned_at = now
    household.status = HouseholdCaseStatus.ACTIVE
    household.updated_at = now
    repo.add_household_entry(household, principal.subject, action, now, lead=lead, previous_lead=previous)
    await _save(repo)


async def add_member(
    repo: Repository,
    ctx: RoutingContext,
    principal: Principal,
    household_case_id: uuid.UUID,
    body: HouseholdMemberIn,
) -> HouseholdCaseOut:
    household = await load(repo, principal, household_case_id)
    _require_lead(principal, household, "adds members")
    _require_running(household, "changed")
    if body.resident_id not in await repo.residents_known([body.resident_id]):
        raise UnprocessableContent.for_field("resident_id", "routing knows no case or offer of this resident")
    if any(m.resident_id == body.resident_id for m in await repo.household_members(household.id)):
        return await detail(repo, ctx, principal, household, CONSENT)
    elsewhere = await repo.running_household_of([body.resident_id])
    if elsewhere is not None:
        raise HouseholdCaseConflict("The resident is in another running household case.", elsewhere)
    await _join(repo, ctx, household, body.resident_id, "caseworker", principal.subject)
    return await detail(repo, ctx, principal, household, CONSENT)


async def _join(
    repo: Repository,
    ctx: RoutingContext,
    household: HouseholdCase,
    resident_id: uuid.UUID,
    how: Literal["household", "caseworker"],
    actor: str,
) -> None:
    """The resident becomes a member of the running household case and is told, as the others were at opening."""
    now = ctx.clock.now()
    repo.session.add(
        HouseholdMember(
            household_case_id=household.id,
            resident_id=resident_id,
            open_resident_id=resident_id,
            added_by=actor,
            added_at=now,
        )
    )
    household.updated_at = now
    repo.add_household_entry(household, actor, "member_added", now, resident_id=str(resident_id), how=how)
    await _save(repo)
    office = await repo.office(household.office_code)
    await ctx.outbox.emit(
        repo.session,
        HouseholdCaseMemberAdded(
            **await _event_base(repo, household),
            resident_id=resident_id,
            office_name=_office_name(office, household),
            how=how,
            opened_at=household.opened_at,
            added_at=now,
        ),
    )
    log.info("household case member added", extra={"household_case_id": str(household.id), "how": how})


def _office_name(office: Office | None, household: HouseholdCase) -> Localized:
    return office_logic.name_of(office) if office else Localized(ko=household.office_code, en=household.office_code)


# ---------------------------------------------------------------------------------------------- the plan


async def change_plan(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, body: PlanIn
) -> HouseholdCaseOut:
    """Replace the plan (a new version). Every reference is checked against the members' own records: a service's
    case, application, offer or referral must be a member's; a need's member must be a member."""
    household = await load(repo, principal, household_case_id)
    today = ctx.clock.today()
    members = [m.resident_id for m in await repo.household_members(household.id)]
    _validate_plan(body, today)
    for index, need in enumerate(body.needs):
        if need.member_id is not None and need.member_id not in members:
            raise UnprocessableContent.for_field(f"needs[{index}].member_id", "not a member of the household case")
    cases = {c.id: c for c in await repo.cases_of_residents(members)}
    applications = await repo.applications_of_residents(members)
    offers = await repo.offers_of_residents(members)
    referrals = await repo.referrals_of_residents(members)
    for index, service in enumerate(body.services):
        field = f"services[{index}]"
        if service.kind == "program":
            links = {
                "case_id": (service.case_id, set(cases)),
                "application_id": (service.application_id, applications),
                "opportunity_id": (service.opportunity_id, offers),
            }
            given = [name for name, (value, _known) in links.items() if value is not None]
            if len(given) != 1 or service.referral_id or service.service_type:
                raise UnprocessableContent.for_field(
                    field, "a program names exactly one of case_id, application_id or opportunity_id (an offer)"
                )
            value, known = links[given[0]]
            if value not in known:
                raise UnprocessableContent.for_field(f"{field}.{given[0]}", "not one of the household's members'")
        else:
            if service.case_id or service.application_id or service.opportunity_id:
                raise UnprocessableContent.for_field(field, "a referral names referral_id or service_type only")
            if (service.referral_id is None) == (service.service_type is None):
                raise UnprocessableContent.for_field(
                    field, "a referral names either the referral made (referral_id) or the service to refer to"
                )
            if service.referral_id is not None and service.referral_id not in referrals:
                raise UnprocessableContent.for_field(
                    f"{field}.referral_id", "not a referral of the household's members"
                )
    _require_lead(principal, household, "changes the plan")
    _require_running(household, "planned")
    now = ctx.clock.now()
    household.plan = body.model_dump(mode="json")
    household.plan_version += 1
    household.updated_at = now
    repo.add_household_entry(
        household, principal.subject, "plan_changed", now, plan_version=household.plan_version, plan=household.plan
    )
    await _save(repo)
    await ctx.outbox.emit(
        repo.session,
        HouseholdCasePlanChanged(
            **await _event_base(repo, household),
            plan_version=household.plan_version,
            domains=sorted({n.domain for n in body.needs}, key=list(NeedDomain).index),
            goals=len(body.goals),
            services=len(body.services),
            changed_at=now,
        ),
    )
    return await detail(repo, ctx, principal, household, CONSENT)


def _validate_plan(body: PlanIn, today: dt.date) -> None:
    keys = [g.key for g in body.goals]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise UnprocessableContent.for_field(f"goals[{index}].key", "goal keys must not repeat")
    for index, goal in enumerate(body.goals):
        if goal.target_date < today:
            raise UnprocessableContent.for_field(f"goals[{index}].target_date", "must not be in the past")
    for index, service in enumerate(body.services):
        if service.goal not in keys:
            raise UnprocessableContent.for_field(f"services[{index}].goal", "names no goal of the plan")
        if service.due_on < today:
            raise UnprocessableContent.for_field(f"services[{index}].due_on", "must not be in the past")


# ---------------------------------------------------------------------------------------------- follow-ups


async def schedule_follow_up(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, body: FollowUpIn
) -> FollowUpOut:
    household = await load(repo, principal, household_case_id)
    _require_lead(principal, household, "schedules follow-ups")
    _require_running(household, "followed up")
    sla = body.due_in_working_days or ctx.settings.household_follow_up_sla_working_days
    follow_up = _new_follow_up(
        ctx, household, FOLLOW_UP, body.purpose, body.owner or household.lead, sla, principal.subject
    )
    repo.session.add(follow_up)
    repo.add_household_entry(
        household, principal.subject, "follow_up_scheduled", follow_up.created_at, follow_up_id=str(follow_up.id),
        purpose=body.purpose, owner=follow_up.owner, due_date=follow_up.due_date.isoformat(), sla_working_days=sla,
    )  # fmt: skip
    await repo.session.flush()
    return _follow_up_out(follow_up)


def _new_follow_up(
    ctx: RoutingContext,
    household: HouseholdCase,
    kind: str,
    purpose: str,
    owner: str | None,
    sla: int,
    actor: str,
) -> HouseholdFollowUp:
    today = ctx.clock.today()
    return HouseholdFollowUp(
        id=uuid.uuid4(),
        household_case_id=household.id,
        kind=kind,
        purpose=purpose,
        owner=owner,
        scheduled_on=today,
        sla_working_days=sla,
        due_date=ctx.calendar.add_working_days(today, sla),
        created_by=actor,
        created_at=ctx.clock.now(),
    )


async def complete_follow_up(
    repo: Repository,
    ctx: RoutingContext,
    principal: Principal,
    household_case_id: uuid.UUID,
    follow_up_id: uuid.UUID,
    body: FollowUpDoneIn,
) -> FollowUpOut:
    household = await load(repo, principal, household_case_id)
    follow_up = await repo.household_follow_up(household.id, follow_up_id)
    if follow_up is None:
        raise NotFound(f"No follow-up {follow_up_id} of this household case.")
    _require_lead(principal, household, "records follow-ups")
    if follow_up.done_at is not None:
        raise HouseholdCaseConflict("The follow-up is recorded as done already.", household)
    now = ctx.clock.now()
    follow_up.done_at = now
    follow_up.done_by = principal.subject
    follow_up.result = body.result
    repo.add_household_entry(
        household, principal.subject, "follow_up_done", now, follow_up_id=str(follow_up.id), result=body.result,
        late=follow_up.missed_on is not None,
    )  # fmt: skip
    await _save(repo)
    return _follow_up_out(follow_up)


RepositoryFactory = Callable[[], AbstractAsyncContextManager[Repository]]


async def sweep(repo_factory: RepositoryFactory, ctx: RoutingContext) -> int:
    """The SLA timer's pass over household cases: each missed follow-up recorded once and escalated, the lead
    reminded once of each follow-up falling due, each check after closure that came due scheduled as a follow-up.
    Returns how many were recorded."""
    today = ctx.clock.today()
    async with repo_factory() as repo:
        missed = await repo.missed_follow_ups(ctx.calendar.late_if_due_before(today))
        checks = await repo.closure_checks_due(today)
    recorded = 0
    for follow_up_id in missed:
        try:
            async with repo_factory() as repo:
                recorded += await _record_miss(repo, ctx, follow_up_id, today)
        except (StaleDataError, CaseChanged):
            log.info("missed follow-up not recorded this pass", extra={"follow_up_id": str(follow_up_id)})
    # After the misses: what is late by now was recorded missed, not reminded of.
    async with repo_factory() as repo:
        falling_due = await repo.follow_ups_falling_due(ctx.calendar.late_if_due_before(today), today)
    for follow_up_id in falling_due:
        try:
            async with repo_factory() as repo:
                recorded += await _remind(repo, ctx, follow_up_id, today)
        except (StaleDataError, CaseChanged):
            log.info("follow-up reminder not sent this pass", extra={"follow_up_id": str(follow_up_id)})
    for household_case_id in checks:
        try:
            async with repo_factory() as repo:
                recorded += await _closure_check(repo, ctx, household_case_id)
        except (StaleDataError, CaseChanged):
            log.info("closure check not scheduled this pass", extra={"household_case_id": str(household_case_id)})
    return recorded


async def _record_miss(repo: Repository, ctx: RoutingContext, follow_up_id: uuid.UUID, today: dt.date) -> int:
    follow_up = await repo.follow_up_for_update(follow_up_id)
    if follow_up is None or follow_up.done_at is not None or follow_up.missed_on is not None:
        return 0
    if not ctx.calendar.is_late(follow_up.due_date, today):
        return 0
    household = await repo.household_for_update(follow_up.household_case_id)
    assert household is not None
    now = ctx.clock.now()
    office = await repo.office(household.office_code)
    supervisors = list(office.supervisors) if office else []
    follow_up.missed_on = today
    household.escalated = True
    household.updated_at = now
    repo.add_household_entry(
        household, TIMER, "follow_up_missed", now, follow_up_id=str(follow_up.id),
        due_date=follow_up.due_date.isoformat(),
    )  # fmt: skip
    repo.add_household_entry(household, TIMER, "escalated", now, reason="follow_up_missed", to=supervisors)
    await _save(repo)
    await _follow_up_due(repo, ctx, household, follow_up, now, missed=True)
    log.warning("household follow-up missed", extra={"household_case_id": str(household.id)})
    return 1


async def _remind(repo: Repository, ctx: RoutingContext, follow_up_id: uuid.UUID, today: dt.date) -> int:
    """The follow-up falls due today (or fell due on a day the office was closed and is not late yet): the lead is
    reminded once, before it can be missed."""
    follow_up = await repo.follow_up_for_update(follow_up_id)
    if follow_up is None or follow_up.done_at is not None or follow_up.missed_on or follow_up.reminded_on:
        return 0
    if follow_up.due_date > today or ctx.calendar.is_late(follow_up.due_date, today):
        return 0
    household = await repo.household_for_update(follow_up.household_case_id)
    assert household is not None
    if not household.is_running:
        return 0
    now = ctx.clock.now()
    follow_up.reminded_on = today
    household.updated_at = now
    repo.add_household_entry(
        household, TIMER, "follow_up_due", now, follow_up_id=str(follow_up.id), owner=follow_up.owner,
        due_date=follow_up.due_date.isoformat(),
    )  # fmt: skip
    await _save(repo)
    await _follow_up_due(repo, ctx, household, follow_up, now, missed=False)
    return 1


async def _follow_up_due(
    repo: Repository,
    ctx: RoutingContext,
    household: HouseholdCase,
    follow_up: HouseholdFollowUp,
    now: dt.datetime,
    *,
    missed: bool,
) -> None:
    """``household_case.follow_up_due``: a reminder on the day (``missed`` False) or the miss, escalated."""
    await ctx.outbox.emit(
        repo.session,
        HouseholdCaseFollowUpDue(
            **await _event_base(repo, household),
            follow_up_id=follow_up.id,
            kind=FOLLOW_UP,
            due_date=follow_up.due_date,
            overdue=missed,
            escalated=missed,
            at=now,
        ),
    )


async def _closure_check(repo: Repository, ctx: RoutingContext, household_case_id: uuid.UUID) -> int:
    household = await repo.household_for_update(household_case_id)
    if household is None or household.follow_up_check_id is not None or household.is_running:
        return 0
    follow_up = _new_follow_up(
        ctx,
        household,
        CLOSURE_CHECK,
        f"Check on the household {ctx.settings.household_follow_up_check_months} months after closure "
        f"({household.outcome}).",
        household.lead,
        ctx.settings.household_follow_up_sla_working_days,
        TIMER,
    )
    repo.session.add(follow_up)
    household.follow_up_check_id = follow_up.id
    household.updated_at = follow_up.created_at
    repo.add_household_entry(
        household, TIMER, "closure_check_due", follow_up.created_at, follow_up_id=str(follow_up.id),
        owner=follow_up.owner, due_date=follow_up.due_date.isoformat(),
    )  # fmt: skip
    await _save(repo)
    await ctx.outbox.emit(
        repo.session,
        HouseholdCaseFollowUpDue(
            **await _event_base(repo, household),
            follow_up_id=follow_up.id,
            kind=CLOSURE_CHECK,
            due_date=follow_up.due_date,
            overdue=False,
            escalated=False,
            at=follow_up.created_at,
        ),
    )
    return 1


# ---------------------------------------------------------------------------------------------- conferences


async def record_conference(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, body: ConferenceIn
) -> ConferenceOut:
    household = await load(repo, principal, household_case_id)
    today = ctx.clock.today()
    if body.held_on > today:
        raise UnprocessableContent.for_field("held_on", "a conference is recorded once held (not in the future)")
    for index, action in enumerate(body.actions):
        if action.due_on < body.held_on:
            raise UnprocessableContent.for_field(f"actions[{index}].due_on", "must not be before the conference")
    _require_lead(principal, household, "records conferences")
    _require_running(household, "conferenced")
    now = ctx.clock.now()
    conference = HouseholdConference(
        id=uuid.uuid4(),
        household_case_id=household.id,
        held_on=body.held_on,
        participants=[p.model_dump(mode="json") for p in body.participants],
        decisions=list(body.decisions),
        actions=[a.model_dump(mode="json") for a in body.actions],
        recorded_by=principal.subject,
        recorded_at=now,
    )
    repo.session.add(conference)
    repo.add_household_entry(
        household, principal.subject, "conference", now, conference_id=str(conference.id),
        held_on=body.held_on.isoformat(), participants=len(body.participants), decisions=list(body.decisions),
        actions=conference.actions,
    )  # fmt: skip
    await repo.session.flush()
    return _conference_out(conference)


# ---------------------------------------------------------------------------------------------- closure


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` later (the month's last day when it has no such day)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, month_calendar.monthrange(year, month)[1]))


async def close(
    repo: Repository, ctx: RoutingContext, principal: Principal, household_case_id: uuid.UUID, body: HouseholdCloseIn
) -> HouseholdCaseOut:
    household = await load(repo, principal, household_case_id)
    _require_lead(principal, household, "closes the household case")
    _require_running(household, "closed again")
    now, today = ctx.clock.now(), ctx.clock.today()
    household.status = HouseholdCaseStatus.CLOSED
    household.outcome = body.outcome.value
    household.closure_note = body.note
    household.closed_by = principal.subject
    household.closed_at = now
    household.closed_on = today
    household.follow_up_check_on = add_months(today, ctx.settings.household_follow_up_check_months)
    household.updated_at = now
    for member in await repo.household_members(household.id):
        member.open_resident_id = None  # free to be in another household case from now on
    repo.add_household_entry(
        household, principal.subject, "closed", now, outcome=body.outcome.value, note=body.note,
        follow_up_check_on=household.follow_up_check_on.isoformat(),
    )  # fmt: skip
    await _save(repo)
    await ctx.outbox.emit(
        repo.session,
        HouseholdCaseClosed(
            **await _event_base(repo, household),
            outcome=body.outcome,
            follow_up_check_on=household.follow_up_check_on,
            closed_at=now,
        ),
    )
    return await detail(repo, ctx, principal, household, CONSENT)
