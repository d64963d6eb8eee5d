"""What staff do with a case: claim, release, assign, request information, decide, transfer, escalate, add notes.

Rules common to the actions:
- A case outside the caller's offices is not found (404), whatever the action.
- Caseworkers act on the cases assigned to them (request-info, decide, release, transfer); supervisors and admins on
  any case of their offices. Acting on a case that is not yours, or in a state the action does not apply to, is a
  409 problem whose ``case_status`` tells the state.
- Every write is conditional on the version read (``UPDATE ... WHERE version = ?``), so two people acting at once
  cannot both succeed: the second gets a 409. A claim is one ``UPDATE ... WHERE assignee IS NULL``.
- Each action adds a history entry and emits its event in the same transaction.
- Each action answers with the case as staff see it (a note: the history entry it added), so that a route makes one
  call and a retry with the same ``Idempotency-Key`` replays that answer.
"""

from __future__ import annotations

import uuid

from services.routing import households, views
from services.routing import offices as office_logic
from services.routing.cases import announce, event_base, resume_clock, save
from services.routing.context import RoutingContext
from services.routing.models import Case, CaseStatus, audit_log
from services.routing.policy import URGENT
from services.routing.reasons import AUTOMATIC_GRANT, REASON_CODES
from services.routing.repository import Repository
from services.routing.schemas import (
    AssignIn,
    CaseOut,
    DecideIn,
    EscalateIn,
    HistoryEntry,
    NoteIn,
    RequestInfoIn,
    TransferIn,
)
from shared.auth import Principal, Role
from shared.events import (
    CaseAssigned,
    CaseDecided,
    CaseEscalated,
    CaseInfoRequested,
    CaseTransferred,
    Decision,
    InfoQuestion,
)
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent


class CaseNotFound(NotFound):
    def __init__(self, case_id: uuid.UUID) -> None:
        super().__init__(f"No case {case_id} in your offices.")


class CaseStateConflict(Conflict):
    slug = "case-state"

    def __init__(self, detail: str, case: Case) -> None:
        super().__init__(detail, case_status=case.status, assignee_set=case.assignee is not None)


async def load(repo: Repository, principal: Principal, case_id: uuid.UUID) -> Case:
    case = await repo.visible_case(principal, case_id)
    if case is None:
        raise CaseNotFound(case_id)
    return case


async def detail(repo: Repository, ctx: RoutingContext, case: Case) -> CaseOut:
    """The case as staff see it: routing decision, SLA as of today, decision and full history, and whether its
    resident is in a household case (which office holds it and who leads it; nothing of its plan or other cases)."""
    out = views.detail(case, await repo.case_history(case.id), ctx.calendar, ctx.clock.today())
    out.household = await households.reference(repo, case.resident_id)
    return out


async def read(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, purpose: str
) -> CaseOut:
    """A case, for someone who may see it; the read of personal data is written to the audit log with its purpose."""
    case = await load(repo, principal, case_id)
    await audit_log.record(
        repo.session,
        principal,
        action="case.read",
        record_type="case",
        record_id=case.id,
        purpose=purpose,
        resident_id=case.resident_id,
    )
    return await detail(repo, ctx, case)


def _is_caseworker(principal: Principal) -> bool:
    return principal.role is Role.CASEWORKER


def _require_active(case: Case, action: str) -> None:
    if not case.is_active:
        raise CaseStateConflict(f"The case is {case.status}; it cannot be {action} any more.", case)


def _require_application(case: Case, action: str) -> None:
    if case.is_outreach:
        raise CaseStateConflict(
            f"An outreach case is not {action}: it ends with the visit's outcome (POST /v1/cases/{{id}}/visit).", case
        )


def _require_handler(principal: Principal, case: Case, action: str) -> None:
    """Caseworkers act only on their own cases; supervisors and admins on any case they can see."""
    if not _is_caseworker(principal) or case.assignee == principal.subject:
        return
    if case.assignee is None:
        raise CaseStateConflict(f"Claim the case before it can be {action}.", case)
    raise CaseStateConflict(f"The case is assigned to another caseworker; it cannot be {action} by you.", case)


# ---------------------------------------------------------------------------------------------- assignment


async def claim(repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID) -> CaseOut:
    case = await load(repo, principal, case_id)
    if case.status == CaseStatus.ASSIGNED and case.assignee == principal.subject:
        return await detail(repo, ctx, case)  # claiming one's own case again changes nothing
    if case.status != CaseStatus.OPEN or case.assignee is not None:
        raise CaseStateConflict(f"Only an open, unassigned case can be claimed; this one is {case.status}.", case)
    now = ctx.clock.now()
    if not await repo.claim(case.id, case.version, principal.subject, now):
        raise CaseStateConflict("Someone else claimed the case first.", case)
    case = await load(repo, principal, case_id)  # re-read what the conditional UPDATE wrote
    repo.add_entry(case, principal.subject, "claimed", now)
    await save(repo)
    await announce(
        repo,
        ctx,
        case,
        lambda: CaseAssigned(
            **event_base(case), assignee=principal.subject, assigned_by=principal.subject, assigned_at=now
        ),
    )
    return await detail(repo, ctx, case)


async def release(repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID) -> CaseOut:
    case = await load(repo, principal, case_id)
    _require_active(case, "released")
    if case.assignee is None:
        raise CaseStateConflict("The case is not assigned to anyone.", case)
    _require_handler(principal, case, "released")
    now = ctx.clock.now()
    previous = case.assignee
    case.assignee = None
    case.assigned_at = None
    if case.status == CaseStatus.ASSIGNED:
        case.status = CaseStatus.OPEN
    case.updated_at = now
    repo.add_entry(case, principal.subject, "released", now, previous_assignee=previous)
    await save(repo)
    await announce(
        repo,
        ctx,
        case,
        lambda: CaseAssigned(**event_base(case), assignee=None, assigned_by=principal.subject, assigned_at=now),
    )
    return await detail(repo, ctx, case)


async def assign(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: AssignIn
) -> CaseOut:
    case = await load(repo, principal, case_id)
    if principal.role not in (Role.SUPERVISOR, Role.ADMIN):
        raise Forbidden("Only a supervisor assigns cases; caseworkers claim them.")
    _require_active(case, "assigned")
    if case.assignee == body.assignee:
        return await detail(repo, ctx, case)
    now = ctx.clock.now()
    previous = case.assignee
    case.assignee = body.assignee
    case.assigned_at = now
    if case.status == CaseStatus.OPEN:
        case.status = CaseStatus.ASSIGNED
    case.updated_at = now
    repo.add_entry(case, principal.subject, "assigned", now, assignee=body.assignee, previous_assignee=previous)
    await save(repo)
    await announce(
        repo,
        ctx,
        case,
        lambda: CaseAssigned(
            **event_base(case), assignee=body.assignee, assigned_by=principal.subject, assigned_at=now
        ),
    )
    return await detail(repo, ctx, case)


# ---------------------------------------------------------------------------------------------- the work


async def request_info(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: RequestInfoIn
) -> CaseOut:
    case = await load(repo, principal, case_id)
    _require_application(case, "sent a request for information")
    if case.status not in (CaseStatus.OPEN, CaseStatus.ASSIGNED):
        raise CaseStateConflict(
            f"Information can be requested on an open or assigned case; this one is {case.status}.", case
        )
    _require_handler(principal, case, "sent a request for information")
    now, today = ctx.clock.now(), ctx.clock.today()
    case.status = CaseStatus.WAITING_ON_RESIDENT
    case.paused_since = today  # the SLA clock stops until the resident answers
    case.updated_at = now
    questions = [InfoQuestion(fact=q.fact, text=q.text) for q in body.questions]
    repo.add_entry(case, principal.subject, "info_requested", now, questions=[q.model_dump() for q in questions])
    await save(repo)
    await ctx.outbox.emit(repo.session, CaseInfoRequested(**event_base(case), questions=questions, requested_at=now))
    return await detail(repo, ctx, case)


async def decide(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: DecideIn
) -> CaseOut:
    case = await load(repo, principal, case_id)
    _require_application(case, "decided")
    reason = REASON_CODES.get(body.reason_code)
    if reason is None or reason.code == AUTOMATIC_GRANT:
        raise UnprocessableContent.for_field("reason_code", "not a reason code of GET /v1/reason-codes")
    if reason.decision is not body.decision:
        raise UnprocessableContent.for_field("reason_code", f"'{reason.code}' is a reason to {reason.decision.value}")
    if body.amount is not None and body.decision is not Decision.APPROVED:
        raise UnprocessableContent.for_field("amount", "only an approval grants an amount")
    _require_active(case, "decided")
    _require_handler(principal, case, "decided")
    now, today = ctx.clock.now(), ctx.clock.today()
    resume_clock(ctx, case, today)
    amount = body.amount if body.amount is not None else case.amount
    if body.decision is Decision.DENIED:
        amount = None
    case.status = CaseStatus.DECIDED
    case.decision = body.decision.value
    case.reason_code = reason.code
    case.decision_note = body.note
    case.decided_by = principal.subject
    case.decided_at = now
    case.decided_on = today
    case.amount = amount
    case.updated_at = now
    repo.add_entry(case, principal.subject, "decided", now, decision=body.decision.value, reason_code=reason.code)
    await save(repo)
    await ctx.outbox.emit(
        repo.session,
        CaseDecided(
            **event_base(case),
            decision=body.decision,
            reason_code=reason.code,
            reason=reason.label,
            amount=amount,
            automatic=False,
            decided_at=now,
        ),
    )
    return await detail(repo, ctx, case)


async def transfer(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: TransferIn
) -> CaseOut:
    case = await load(repo, principal, case_id)
    target = await repo.office(body.office_code)
    if target is None:
        raise UnprocessableContent.for_field("office_code", f"no office '{body.office_code}'")
    if target.code == case.office_code:
        raise UnprocessableContent.for_field("office_code", "the case is already at this office")
    if case.department not in target.departments:
        raise UnprocessableContent.for_field("office_code", f"{target.code} does not handle {case.department}")
    _require_active(case, "transferred")
    _require_handler(principal, case, "transferred")
    now = ctx.clock.now()
    source = case.office_code
    case.office_code = target.code
    case.assignee = None
    case.assigned_at = None
    if case.status == CaseStatus.ASSIGNED:
        case.status = CaseStatus.OPEN
    case.interpreter_needed = case.preferred_language not in target.languages
    # The routing record tells where the case is now and why; the original decision stays in the history.
    case.routing = {
        **case.routing,
        "office_code": target.code,
        "rule": "transfer",
        "explanation": f"Transferred from {source} by {principal.subject}: {body.reason}",
        "language_matched": not case.interpreter_needed,
    }
    case.updated_at = now
    repo.add_entry(
        case,
        principal.subject,
        "transferred",
        now,
        from_office=source,
        to_office=target.code,
        reason=body.reason,
    )
    await save(repo)
    await announce(
        repo,
        ctx,
        case,
        lambda: CaseTransferred(
            **event_base(case),
            from_office_code=source,
            office_name=office_logic.name_of(target),
            reason=body.reason,
            due_date=case.due_date,
            transferred_at=now,
        ),
    )
    return await detail(repo, ctx, case)


async def escalate(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: EscalateIn
) -> CaseOut:
    case = await load(repo, principal, case_id)
    _require_active(case, "escalated")
    if case.escalated:
        raise CaseStateConflict("The case is already escalated to the office's supervisors.", case)
    now = ctx.clock.now()
    office = await repo.office(case.office_code)
    case.escalated = True
    case.escalated_at = now
    case.priority = URGENT
    case.updated_at = now
    repo.add_entry(
        case,
        principal.subject,
        "escalated",
        now,
        reason=body.reason,
        to=list(office.supervisors) if office else [],
    )
    await save(repo)
    await announce(
        repo,
        ctx,
        case,
        lambda: CaseEscalated(**event_base(case), reason=body.reason, escalated_by=principal.subject, escalated_at=now),
    )
    return await detail(repo, ctx, case)


async def add_note(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: NoteIn
) -> HistoryEntry:
    case = await load(repo, principal, case_id)
    entry = repo.entry(case, principal.subject, "note", ctx.clock.now(), text=body.text)
    await repo.session.flush()
    return views.history_entry(entry)
