"""The routing HTTP API: offices, queues, cases and their actions, partners' offerings and referrals to them,
capacity, open data. Routes stay thin: they authorise, call the domain, and shape the answer."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from services.routing import (
    casework,
    households,
    offerings,
    outreach,
    queues,
    reasons,
    referrals,
    resident_data,
    statistics,
)
from services.routing import offices as office_logic
from services.routing.context import ContextDep, RoutingContext
from services.routing.repository import QueueFilter, Repository, RepositoryDep, WriteRepositoryDep
from services.routing.schemas import (
    OFFERING_CODE_PATTERN,
    OFFICE_CODE_PATTERN,
    PARTNER_ID_PATTERN,
    AssignIn,
    CapacityReport,
    CaseOut,
    CaseStatusName,
    CompleteIn,
    ConferenceIn,
    ConferenceOut,
    Dataset,
    DatasetInfo,
    DecideIn,
    DeclineIn,
    EscalateIn,
    FollowUpDoneIn,
    FollowUpIn,
    FollowUpOut,
    HistoryEntry,
    HouseholdCaseOut,
    HouseholdCaseSummary,
    HouseholdCloseIn,
    HouseholdMemberIn,
    HouseholdOpenIn,
    LeadIn,
    NoteIn,
    OfferingForCase,
    OfferingIn,
    OfferingOut,
    OfficeIn,
    OfficeOut,
    OutreachOutcomeOut,
    PlanIn,
    QueuePage,
    QueueSort,
    ReasonCodeOut,
    ReferralIn,
    ReferralOut,
    ReferralStatusName,
    RequestInfoIn,
    TransferIn,
    VisitIn,
)
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotentDep, PrincipalDep
from shared.events import Department, ServiceType
from shared.personal_data import ResidentDataPart
from shared.problems import problem_responses

STAFF = (Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN)
Staff = Annotated[Principal, Depends(require_roles(*STAFF))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.ADMIN))]
Anyone = Annotated[Principal, Depends(require_roles(*Role))]
# A partner acts for itself (its offerings, the referrals to it); an administrator may look after any partner.
PartnerOrAdmin = Annotated[Principal, Depends(require_roles(Role.PARTNER, Role.ADMIN))]
Partner = Annotated[Principal, Depends(require_roles(Role.PARTNER))]
StaffOrPartner = Annotated[Principal, Depends(require_roles(*STAFF, Role.PARTNER))]

OfficeCodePath = Annotated[str, Path(pattern=OFFICE_CODE_PATTERN, description="Office code, e.g. JONGNO-CSC")]
CaseIdPath = Annotated[uuid.UUID, Path(description="The case id")]
PartnerIdPath = Annotated[str, Path(pattern=PARTNER_ID_PATTERN, description="The partner's id, e.g. saebom-ngo")]
OfferingCodePath = Annotated[str, Path(pattern=OFFERING_CODE_PATTERN, description="The partner's code for it")]
ReferralIdPath = Annotated[uuid.UUID, Path(description="The referral id")]
Purpose = Annotated[
    str, Query(min_length=1, max_length=200, description="Why personal data is read (kept in the audit log)")
]

ACTION_PROBLEMS = problem_responses(404, 409, 422)

offices_router = APIRouter(prefix="/v1/offices", tags=["offices"])
cases_router = APIRouter(prefix="/v1", tags=["cases"])
partners_router = APIRouter(prefix="/v1/partners", tags=["offerings"])
referrals_router = APIRouter(prefix="/v1", tags=["referrals"])
statistics_router = APIRouter(prefix="/v1", tags=["statistics"])


# ---------------------------------------------------------------------------------------------- offices


@offices_router.get("", summary="Offices, their jurisdiction, languages and capacity")
async def list_offices(
    repo: RepositoryDep,
    principal: Anyone,
    department: Department | None = None,
    district: Annotated[str | None, Query(pattern=r"^[0-9]{5}$")] = None,
) -> list[OfficeOut]:
    return await office_logic.list_offices(repo, principal, department, district)


@offices_router.get("/{code}", summary="One office", responses=problem_responses(404))
async def get_office(repo: RepositoryDep, principal: Anyone, code: OfficeCodePath) -> OfficeOut:
    return await office_logic.get_office(repo, principal, code)


@offices_router.put(
    "/{code}",
    summary="Create or replace an office (admin); capacity changes apply to cases routed from now on",
    responses={201: {"description": "Created", "model": OfficeOut}, **problem_responses(422)},
)
async def put_office(
    repo: RepositoryDep, ctx: ContextDep, principal: Admin, code: OfficeCodePath, body: OfficeIn, response: Response
) -> OfficeOut:
    office, created = await office_logic.put_office(repo, code, body, ctx.clock.now())
    response.status_code = 201 if created else 200
    return office


# ---------------------------------------------------------------------------------------------- queues and cases


async def queue_filter(
    status: Annotated[list[CaseStatusName] | None, Query(description="Default: the active ones")] = None,
    program: Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]] | None, Query()] = None,
    priority: Annotated[
        list[Annotated[int, Field(ge=1, le=4)]] | None, Query(description="1 routine .. 4 urgent")
    ] = None,
    due_before: Annotated[dt.date | None, Query(description="Only cases due before this date")] = None,
    assignee: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    unassigned: bool = False,
) -> QueueFilter:
    """The queue's filters, from the query string."""
    return QueueFilter(
        statuses=tuple(s.value for s in status) if status else QueueFilter.statuses,
        programs=tuple(program or ()),
        priorities=tuple(priority or ()),
        due_before=due_before,
        assignee=assignee,
        unassigned=unassigned,
    )


@cases_router.get(
    "/queues/{office}",
    summary="An office's queue, most urgent first (or earliest due, or newest), a page at a time",
    responses=problem_responses(403, 404, 422),
)
async def queue(
    repo: RepositoryDep,
    principal: Staff,
    office: OfficeCodePath,
    filters: Annotated[QueueFilter, Depends(queue_filter)],
    sort: Annotated[
        QueueSort,
        Query(
            description="urgency: priority, then due date; due: due date, then priority; newest: the most recently "
            "created first. A cursor pages only the order it was made for."
        ),
    ] = QueueSort.URGENCY,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    purpose: Purpose = "casework",
) -> QueuePage:
    return await queues.page(repo, principal, office, filters, sort, cursor=cursor, limit=limit, purpose=purpose)


@cases_router.get(
    "/cases/{case_id}",
    summary="A case: routing decision, SLA, decision and full history",
    responses=problem_responses(403, 404),
)
async def get_case(
    repo: RepositoryDep, ctx: ContextDep, principal: Staff, case_id: CaseIdPath, purpose: Purpose = "casework"
) -> CaseOut:
    return await casework.read(repo, ctx, principal, case_id, purpose)


def _case_action(
    action: Callable[[Repository, RoutingContext, Principal, uuid.UUID], Awaitable[CaseOut]],
) -> Callable[..., Awaitable[JSONResponse]]:
    """The route of an action that takes no body (claim, release): one signature, several routes."""

    async def endpoint(
        repo: RepositoryDep, ctx: ContextDep, principal: Staff, case_id: CaseIdPath, idempotent: IdempotentDep
    ) -> JSONResponse:
        return await idempotent.create(None, lambda: action(repo, ctx, principal, case_id), status_code=200)

    return endpoint


cases_router.add_api_route(
    "/cases/{case_id}/claim",
    _case_action(casework.claim),
    methods=["POST"],
    response_model=CaseOut,
    summary="Claim an open, unassigned case (exactly one of concurrent claims wins; the others get 409)",
    responses=ACTION_PROBLEMS,
    name="claim",
)
cases_router.add_api_route(
    "/cases/{case_id}/release",
    _case_action(casework.release),
    methods=["POST"],
    response_model=CaseOut,
    summary="Give a case back to the office's queue",
    responses=ACTION_PROBLEMS,
    name="release",
)


@cases_router.post(
    "/cases/{case_id}/assign",
    response_model=CaseOut,
    summary="Assign a case to a caseworker (supervisor)",
    responses=ACTION_PROBLEMS,
)
async def assign(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: AssignIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(body, lambda: casework.assign(repo, ctx, principal, case_id, body), status_code=200)


@cases_router.post(
    "/cases/{case_id}/request-info",
    response_model=CaseOut,
    summary="Ask the resident for information: the case waits on them and its SLA clock pauses",
    responses=ACTION_PROBLEMS,
)
async def request_info(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: RequestInfoIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: casework.request_info(repo, ctx, principal, case_id, body), status_code=200
    )


@cases_router.post(
    "/cases/{case_id}/decide",
    response_model=CaseOut,
    summary="Approve or deny, with a reason code (GET /v1/reason-codes) and a note",
    responses=ACTION_PROBLEMS,
)
async def decide(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: DecideIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(body, lambda: casework.decide(repo, ctx, principal, case_id, body), status_code=200)


@cases_router.post(
    "/cases/{case_id}/transfer",
    response_model=CaseOut,
    summary="Send a case to another office, with a reason",
    responses=ACTION_PROBLEMS,
)
async def transfer(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: TransferIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: casework.transfer(repo, ctx, principal, case_id, body), status_code=200
    )


@cases_router.post(
    "/cases/{case_id}/escalate",
    response_model=CaseOut,
    summary="Escalate a case to the office's supervisors",
    responses=ACTION_PROBLEMS,
)
async def escalate(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: EscalateIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: casework.escalate(repo, ctx, principal, case_id, body), status_code=200
    )


@cases_router.post(
    "/cases/{case_id}/notes",
    status_code=201,
    response_model=HistoryEntry,
    summary="Add a note to the case's history",
    responses={201: {"description": "The note"}, **problem_responses(404, 422)},
)
async def add_note(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: NoteIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(body, lambda: casework.add_note(repo, ctx, principal, case_id, body))


@cases_router.post(
    "/cases/{case_id}/visit",
    response_model=CaseOut,
    summary="Record an outreach visit and what it came to (outreach cases; a final outcome closes the case)",
    responses=ACTION_PROBLEMS,
)
async def record_visit(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: VisitIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: outreach.record_visit(repo, ctx, principal, case_id, body), status_code=200
    )


@cases_router.get("/outreach-outcomes", summary="What an outreach visit may come to")
async def outreach_outcomes(principal: Staff) -> list[OutreachOutcomeOut]:
    return outreach.outcomes()


@cases_router.get("/reason-codes", summary="The reason codes a decision may give")
async def reason_codes(principal: Staff) -> list[ReasonCodeOut]:
    return [ReasonCodeOut(code=r.code, decision=r.decision, label=r.label) for r in reasons.staff_reason_codes()]


# ---------------------------------------------------------------------------------------------- offerings


@partners_router.get(
    "/{partner_id}/offerings",
    summary="A partner's offerings, with the places its referrals hold (the partner itself, or an admin)",
    responses=problem_responses(403, 404),
)
async def list_offerings(
    repo: RepositoryDep, principal: PartnerOrAdmin, partner_id: PartnerIdPath
) -> list[OfferingOut]:
    return await offerings.partner_offerings(repo, principal, partner_id)


@partners_router.get("/{partner_id}/offerings/{code}", summary="One offering", responses=problem_responses(403, 404))
async def get_offering(
    repo: RepositoryDep, principal: PartnerOrAdmin, partner_id: PartnerIdPath, code: OfferingCodePath
) -> OfferingOut:
    return await offerings.partner_offering(repo, principal, partner_id, code)


@partners_router.put(
    "/{partner_id}/offerings/{code}",
    summary="Publish or replace an offering: service type, districts, languages, capacity, conditions",
    responses={201: {"description": "Created", "model": OfferingOut}, **problem_responses(403, 404, 422)},
)
async def put_offering(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: PartnerOrAdmin,
    partner_id: PartnerIdPath,
    code: OfferingCodePath,
    body: OfferingIn,
    response: Response,
) -> OfferingOut:
    offering, created = await offerings.put_offering(repo, principal, partner_id, code, body, ctx.clock.now())
    response.status_code = 201 if created else 200
    return offering


# ---------------------------------------------------------------------------------------------- referrals


@referrals_router.get(
    "/cases/{case_id}/offerings",
    summary="Partners' offerings with room for the case's resident (their district and language)",
    responses=problem_responses(403, 404),
)
async def offerings_for_case(
    repo: RepositoryDep,
    principal: Staff,
    case_id: CaseIdPath,
    service_type: ServiceType | None = None,
    purpose: Purpose = "referral",
) -> list[OfferingForCase]:
    return await offerings.with_room_for_case(repo, principal, case_id, service_type, purpose)


@referrals_router.post(
    "/cases/{case_id}/referrals",
    status_code=201,
    response_model=ReferralOut,
    summary="Refer the case's resident to an offering with room, with their consent to the partner",
    responses={201: {"description": "The referral; a place is held"}, **problem_responses(403, 404, 409, 422)},
)
async def refer(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    case_id: CaseIdPath,
    body: ReferralIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: referrals.refer(repo, ctx, principal, case_id, body),
        location=lambda created: f"/v1/referrals/{created['id']}",
    )


@referrals_router.get(
    "/cases/{case_id}/referrals", summary="The case's referrals", responses=problem_responses(403, 404)
)
async def case_referrals(
    repo: RepositoryDep, principal: Staff, case_id: CaseIdPath, purpose: Purpose = "referral"
) -> list[ReferralOut]:
    return await referrals.of_case(repo, principal, case_id, purpose)


@referrals_router.get(
    "/referrals",
    summary="The referrals to a partner (the caller's own), newest first",
    responses=problem_responses(403),
)
async def list_referrals(
    repo: RepositoryDep,
    principal: PartnerOrAdmin,
    status: ReferralStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[ReferralOut]:
    return await referrals.listed(repo, principal, status, limit)


@referrals_router.get(
    "/referrals/{referral_id}",
    summary="A referral (its partner, or staff of its case's office)",
    responses=problem_responses(403, 404),
)
async def get_referral(repo: RepositoryDep, principal: StaffOrPartner, referral_id: ReferralIdPath) -> ReferralOut:
    return await referrals.read(repo, principal, referral_id)


@referrals_router.post(
    "/referrals/{referral_id}/accept",
    response_model=ReferralOut,
    summary="The partner accepts a referral",
    responses=ACTION_PROBLEMS,
)
async def accept_referral(
    repo: RepositoryDep, ctx: ContextDep, principal: Partner, referral_id: ReferralIdPath, idempotent: IdempotentDep
) -> JSONResponse:
    return await idempotent.create(None, lambda: referrals.accept(repo, ctx, principal, referral_id), status_code=200)


@referrals_router.post(
    "/referrals/{referral_id}/decline",
    response_model=ReferralOut,
    summary="The partner declines a referral, with a reason; the place it held is free again",
    responses=ACTION_PROBLEMS,
)
async def decline_referral(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Partner,
    referral_id: ReferralIdPath,
    body: DeclineIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: referrals.decline(repo, ctx, principal, referral_id, body), status_code=200
    )


@referrals_router.post(
    "/referrals/{referral_id}/complete",
    response_model=ReferralOut,
    summary="The partner reports the outcome of an accepted referral; the place it held is free again",
    responses=ACTION_PROBLEMS,
)
async def complete_referral(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Partner,
    referral_id: ReferralIdPath,
    body: CompleteIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: referrals.complete(repo, ctx, principal, referral_id, body), status_code=200
    )


# ---------------------------------------------------------------------------------------------- statistics


@statistics_router.get(
    "/capacity",
    summary="Demand against capacity per office and program (supervisors: their offices; admins: all)",
    responses=problem_responses(403),
)
async def capacity(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Supervisor,
    office: Annotated[list[Annotated[str, Field(pattern=OFFICE_CODE_PATTERN)]] | None, Query()] = None,
) -> CapacityReport:
    return await statistics.capacity(repo, ctx, principal, office)


@statistics_router.get("/open-data", summary="The open datasets and their metadata (DCAT-style)")
async def open_data_catalogue(ctx: ContextDep, principal: Anyone) -> list[DatasetInfo]:
    return statistics.catalogue(ctx)


@statistics_router.get(
    "/open-data/{dataset}",
    response_model=Dataset,
    summary="An aggregated, anonymised dataset with its metadata (small counts suppressed), as JSON or CSV",
    responses={200: {"content": {"text/csv": {}}}, **problem_responses(404)},
)
async def open_data(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Anyone,
    dataset: Annotated[str, Path(min_length=1, max_length=50)],
    format: Literal["json", "csv"] = "json",
) -> Dataset | Response:
    result = await statistics.open_dataset(repo, ctx, dataset)
    if format == "csv":
        return _csv(result)
    return result


def _csv(dataset: Dataset) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=dataset.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(dataset.rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="onestop-{dataset.dataset}.csv"'},
    )


# ================================================================================================ a resident's data

residents_router = APIRouter(prefix="/v1/residents", tags=["rights"])


@residents_router.get(
    "/{resident_id}/data",
    summary="Everything routing holds about a resident: their part of the resident's export (the resident, or intake "
    "gathering it)",
    responses=problem_responses(404),
)
async def resident_data_part(
    resident_id: uuid.UUID,
    principal: PrincipalDep,
    repo: WriteRepositoryDep,
    export_id: uuid.UUID | None = Query(default=None, description="The export this read is for (in the audit log)"),
) -> ResidentDataPart:
    return await resident_data.part(repo, principal, resident_id, export_id)


# ================================================================================================ household cases

households_router = APIRouter(prefix="/v1/household-cases", tags=["household cases"])
HouseholdIdPath = Annotated[uuid.UUID, Path(description="The household case id")]
FollowUpIdPath = Annotated[uuid.UUID, Path(description="The follow-up id")]
HouseholdStatusName = Literal["open", "active", "closed"]


@households_router.post(
    "",
    status_code=201,
    response_model=HouseholdCaseOut,
    summary="Open a household case (integrated case management) for residents whose cases you work",
    responses={201: {"description": "The household case"}, **problem_responses(403, 409, 422)},
)
async def open_household_case(
    repo: RepositoryDep, ctx: ContextDep, principal: Staff, body: HouseholdOpenIn, idempotent: IdempotentDep
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: households.open_by_caseworker(repo, ctx, principal, body),
        location=lambda created: f"/v1/household-cases/{created['id']}",
    )


@households_router.get("", summary="The household cases of your integrated case-management offices")
async def list_household_cases(
    repo: RepositoryDep,
    principal: Staff,
    office: Annotated[str | None, Query(pattern=OFFICE_CODE_PATTERN)] = None,
    status: Annotated[list[HouseholdStatusName] | None, Query(description="Default: open and active")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[HouseholdCaseSummary]:
    return await households.listing(repo, principal, office, status or ["open", "active"], limit)


@households_router.get(
    "/{household_case_id}",
    summary="A household case: members (their department cases for the lead, with their consent), plan, follow-ups, "
    "conferences, history",
    responses=problem_responses(403, 404),
)
async def get_household_case(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    purpose: Purpose = "case_management",
) -> HouseholdCaseOut:
    return await households.read(repo, ctx, principal, household_case_id, purpose)


@households_router.post(
    "/{household_case_id}/claim",
    response_model=HouseholdCaseOut,
    summary="Become the lead of an unled household case (a caseworker of its office)",
    responses=problem_responses(403, 404, 409),
)
async def claim_household_case(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        None, lambda: households.claim(repo, ctx, principal, household_case_id), status_code=200
    )


@households_router.post(
    "/{household_case_id}/assign",
    response_model=HouseholdCaseOut,
    summary="Assign or reassign the lead (supervisor)",
    responses=ACTION_PROBLEMS | problem_responses(403),
)
async def assign_household_lead(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    body: LeadIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: households.assign(repo, ctx, principal, household_case_id, body), status_code=200
    )


@households_router.post(
    "/{household_case_id}/members",
    response_model=HouseholdCaseOut,
    summary="Add a member of the household (the lead or a supervisor)",
    responses=ACTION_PROBLEMS | problem_responses(403),
)
async def add_household_member(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    body: HouseholdMemberIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: households.add_member(repo, ctx, principal, household_case_id, body), status_code=200
    )


@households_router.put(
    "/{household_case_id}/plan",
    summary="Write the shared plan (a new version): needs by domain, goals, services with owners and dates",
    responses=ACTION_PROBLEMS | problem_responses(403),
)
async def change_household_plan(
    repo: RepositoryDep, ctx: ContextDep, principal: Staff, household_case_id: HouseholdIdPath, body: PlanIn
) -> HouseholdCaseOut:
    return await households.change_plan(repo, ctx, principal, household_case_id, body)


@households_router.post(
    "/{household_case_id}/follow-ups",
    status_code=201,
    response_model=FollowUpOut,
    summary="Schedule a follow-up, due within its SLA in working days",
    responses={201: {"description": "The follow-up"}, **problem_responses(403, 404, 409, 422)},
)
async def schedule_household_follow_up(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    body: FollowUpIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: households.schedule_follow_up(repo, ctx, principal, household_case_id, body)
    )


@households_router.post(
    "/{household_case_id}/follow-ups/{follow_up_id}/done",
    response_model=FollowUpOut,
    summary="Record a follow-up as done, with its result",
    responses=ACTION_PROBLEMS | problem_responses(403),
)
async def complete_household_follow_up(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    follow_up_id: FollowUpIdPath,
    body: FollowUpDoneIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: households.complete_follow_up(repo, ctx, principal, household_case_id, follow_up_id, body),
        status_code=200,
    )


@households_router.post(
    "/{household_case_id}/conferences",
    status_code=201,
    response_model=ConferenceOut,
    summary="Record a case conference: participants, decisions, actions",
    responses={201: {"description": "The conference"}, **problem_responses(403, 404, 409, 422)},
)
async def record_household_conference(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    body: ConferenceIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: households.record_conference(repo, ctx, principal, household_case_id, body)
    )


@households_router.post(
    "/{household_case_id}/close",
    response_model=HouseholdCaseOut,
    summary="Close the household case with an outcome; a check follows after the set months",
    responses=ACTION_PROBLEMS | problem_responses(403),
)
async def close_household_case(
    repo: RepositoryDep,
    ctx: ContextDep,
    principal: Staff,
    household_case_id: HouseholdIdPath,
    body: HouseholdCloseIn,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: households.close(repo, ctx, principal, household_case_id, body), status_code=200
    )
