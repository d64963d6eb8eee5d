"""Intake's HTTP API: thin routes over the domain modules. The app factory adds authentication to every router."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from services.intake import access, applications, counter, erasure, exports, opportunities, representatives, residents
from services.intake.access import FILING_ROLES
from services.intake.catalogue import Catalogue, CatalogueSnapshot, CatalogueUnavailable, available, fetch
from services.intake.context import ContextDep, get_context
from services.intake.repository import RepositoryDep
from services.intake.schemas import (
    AccessLogPage,
    ApplicationCreate,
    ApplicationPage,
    ApplicationStatus,
    ApplicationView,
    ConsentsUpdate,
    ConsentsView,
    ContactList,
    ContactsRequest,
    ContactView,
    CounterAuthorityCreate,
    CounterAuthorityView,
    DataExportRequest,
    DataExportView,
    ErasureCreate,
    ErasureView,
    FeedbackCreate,
    FeedbackView,
    InfoProvide,
    LifeEvent,
    OpportunityAccept,
    OpportunityAccepted,
    OpportunityDecline,
    OpportunityStatus,
    OpportunityView,
    QuestionAnswer,
    QuestionStatus,
    RepresentationCreate,
    RepresentationView,
    ResidentCreate,
    ResidentUpdate,
    ResidentView,
    ScreeningQuestionView,
    Withdrawal,
)
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotentDep, PrincipalDep
from shared.idempotency import CREATED_AT_LOCATION
from shared.outbox import Outbox
from shared.problems import problem_responses


async def get_catalogue(ctx: ContextDep) -> Catalogue:
    return ctx.catalogue


async def get_fetched_catalogue(request: Request) -> CatalogueSnapshot | CatalogueUnavailable:
    # The context is had by calling its getter: as a sub-dependency FastAPI would solve it again (a route that files
    # takes the context too), at a cost per request well above the call's.
    return await fetch((await get_context(request)).catalogue)


async def get_outbox(ctx: ContextDep) -> Outbox:
    return ctx.outbox


CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
FetchedCatalogueDep = Annotated[CatalogueSnapshot | CatalogueUnavailable, Depends(get_fetched_catalogue)]
OutboxDep = Annotated[Outbox, Depends(get_outbox)]
# Who may register residents and file applications: the resident for themselves, staff at a counter for anyone.
Filer = Annotated[Principal, Depends(require_roles(*FILING_ROLES))]
ApplicationReader = Annotated[
    Principal, Depends(require_roles(Role.RESIDENT, Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN))
]
Resident = Annotated[Principal, Depends(require_roles(Role.RESIDENT))]
ResidentId = Annotated[uuid.UUID, Path(description="The resident's pseudonymous id")]
ApplicationId = Annotated[uuid.UUID, Path(description="The application's id")]
RepresentationId = Annotated[uuid.UUID, Path(description="The representation's id")]
OpportunityId = Annotated[uuid.UUID, Path(description="The offer's id")]
QuestionId = Annotated[uuid.UUID, Path(description="The screening question's id")]
AuthorityId = Annotated[uuid.UUID, Path(description="The counter authority's id")]
ExportId = Annotated[uuid.UUID, Path(description="The export's id")]
ErasureId = Annotated[uuid.UUID, Path(description="The erasure request's id")]
ACCEPTED_AT_LOCATION: dict[int | str, dict[str, Any]] = {
    202: {"headers": {"Location": {"required": True, "schema": {"type": "string"}}}}
}


# ================================================================================================ residents

residents_router = APIRouter(prefix="/v1/residents", tags=["residents"])


@residents_router.post(
    "",
    operation_id="registerResident",
    status_code=201,
    response_model=ResidentView,
    responses={
        **CREATED_AT_LOCATION,
        **problem_responses(403, 409),
    },
    summary="Register a resident (themselves, or assisted by staff at a counter)",
)
async def register_resident(
    body: ResidentCreate,
    principal: Filer,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """A resident's token registers that resident (its resident id becomes the record's id). Staff registering
    someone at a counter get a new id back, for which a resident token can then be issued."""
    return await idempotent.create(
        body,
        lambda: residents.register(repo, ctx.outbox, principal, body, ctx.clock.today()),
        location=lambda view: f"/v1/residents/{view['id']}",
    )


@residents_router.get(
    "/{resident_id}", operation_id="readResident", responses=problem_responses(404), summary="A resident's record"
)
async def read_resident(
    resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ResidentView:
    return await residents.read(repo, principal, resident_id, ctx.clock.today())


@residents_router.patch(
    "/{resident_id}",
    operation_id="updateResident",
    responses=problem_responses(404),
    summary="Change a resident's record (only the fields given)",
)
async def update_resident(
    resident_id: ResidentId, body: ResidentUpdate, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ResidentView:
    return await residents.update(repo, ctx.outbox, principal, resident_id, body, ctx.clock.today())


@residents_router.get(
    "/{resident_id}/consents",
    operation_id="readConsents",
    responses=problem_responses(404),
    summary="Current consents and their full history",
)
async def read_consents(
    resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ConsentsView:
    return await residents.read_consents(repo, principal, resident_id, ctx.clock.today())


@residents_router.put(
    "/{resident_id}/consents",
    operation_id="setConsents",
    responses=problem_responses(403, 404),
    summary="Set the resident's consents (the complete set; a purpose left out is withdrawn)",
)
async def put_consents(
    resident_id: ResidentId, body: ConsentsUpdate, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ConsentsView:
    return await residents.set_consents(repo, ctx.outbox, principal, resident_id, body, ctx.clock.today())


@residents_router.get(
    "/{resident_id}/access-log",
    operation_id="readAccessLog",
    responses=problem_responses(404),
    summary="Who looked at the resident's data or acted for them, when, why and under which authority (the resident "
    "only)",
)
async def read_access_log(
    resident_id: ResidentId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    limit: int = Query(default=50, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=20, pattern=r"^[0-9]{1,18}$"),
) -> AccessLogPage:
    return await access.read_log(repo, principal, resident_id, cursor=cursor, limit=limit)


@residents_router.get(
    "/{resident_id}/contact",
    operation_id="readContact",
    responses=problem_responses(404),
    summary="Where to reach the resident (the notify service only)",
)
async def read_contact(resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep) -> ContactView:
    return await residents.contact(repo, principal, resident_id)


@residents_router.post(
    "/{resident_id}/representations",
    operation_id="nameRepresentative",
    status_code=201,
    response_model=RepresentationView,
    responses=problem_responses(403, 404, 409),
    summary="Name a representative who may act for the resident in some things, through a day (the resident, or "
    "counter staff under the resident's authority)",
)
async def name_representative(
    resident_id: ResidentId,
    body: RepresentationCreate,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: representatives.name(repo, ctx.outbox, principal, resident_id, body, ctx.clock.today())
    )


@residents_router.get(
    "/{resident_id}/representations",
    operation_id="listRepresentatives",
    responses=problem_responses(404),
    summary="The representatives the resident named, revoked and expired ones too",
)
async def list_representatives(
    resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> list[RepresentationView]:
    return await representatives.of_resident(repo, principal, resident_id, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/representations/{representation_id}/revoke",
    operation_id="revokeRepresentative",
    responses=problem_responses(403, 404),
    summary="Revoke a representation at once (revoking again changes nothing)",
)
async def revoke_representative(
    resident_id: ResidentId,
    representation_id: RepresentationId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
) -> RepresentationView:
    return await representatives.revoke(repo, ctx.outbox, principal, resident_id, representation_id, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/authorities",
    operation_id="recordCounterAuthority",
    status_code=201,
    response_model=CounterAuthorityView,
    responses=problem_responses(403, 404),
    summary="Record how the resident agreed at the counter that its staff act for them (signed form, ID checked)",
)
async def record_counter_authority(
    resident_id: ResidentId,
    body: CounterAuthorityCreate,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(body, lambda: counter.record(repo, principal, resident_id, body, ctx.clock.today()))


@residents_router.get(
    "/{resident_id}/authorities",
    operation_id="listCounterAuthorities",
    responses=problem_responses(404),
    summary="The authorities the resident gave at counters, newest first",
)
async def list_counter_authorities(
    resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> list[CounterAuthorityView]:
    return await counter.of_resident(repo, principal, resident_id, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/authorities/{authority_id}/revoke",
    operation_id="revokeCounterAuthority",
    responses=problem_responses(403, 404),
    summary="End a counter authority at once (the resident, or staff of its office)",
)
async def revoke_counter_authority(
    resident_id: ResidentId, authority_id: AuthorityId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> CounterAuthorityView:
    return await counter.revoke(repo, principal, resident_id, authority_id, ctx.clock.today())


@residents_router.get(
    "/{resident_id}/opportunities",
    operation_id="listOpportunities",
    responses=problem_responses(404),
    summary="Programs proactive screening found the resident eligible for: offers to accept with one confirmation",
    description="For the resident, a representative they named (scope apply or answer), counter staff they authorised "
    "and staff who may see their record (audited). Only a resident who consents to proactive screening is offered "
    "anything; an offer stands until its `expires_on` (the intake setting `offer_valid_days` after it was made).",
)
async def list_opportunities(
    resident_id: ResidentId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    status: OpportunityStatus | None = None,
) -> list[OpportunityView]:
    return await opportunities.offers_of(repo, principal, resident_id, status, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/opportunities/{opportunity_id}/accept",
    operation_id="acceptOpportunity",
    status_code=201,
    response_model=OpportunityAccepted,
    responses={**CREATED_AT_LOCATION, **problem_responses(403, 404, 409, 503)},
    summary="Accept an offer: an application for that program is filed with what is known already",
)
async def accept_opportunity(
    resident_id: ResidentId,
    opportunity_id: OpportunityId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    catalogue: FetchedCatalogueDep,
    idempotent: IdempotentDep,
    body: Annotated[OpportunityAccept | None, Body()] = None,
) -> JSONResponse:
    accepting = body or OpportunityAccept()
    return await idempotent.create(
        accepting,
        lambda: opportunities.accept(
            repo,
            ctx.outbox,
            available(catalogue),
            principal,
            resident_id,
            opportunity_id,
            accepting,
            ctx.clock.today(),
        ),
        location=lambda view: f"/v1/applications/{view['application']['id']}",
    )


@residents_router.post(
    "/{resident_id}/opportunities/{opportunity_id}/decline",
    operation_id="declineOpportunity",
    response_model=OpportunityView,
    responses=problem_responses(403, 404, 409),
    summary="Decline an offer, with a reason",
)
async def decline_opportunity(
    resident_id: ResidentId,
    opportunity_id: OpportunityId,
    body: OpportunityDecline,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: opportunities.decline(
            repo, ctx.outbox, principal, resident_id, opportunity_id, body, ctx.clock.today()
        ),
        status_code=200,
    )


@residents_router.get(
    "/{resident_id}/questions",
    operation_id="listScreeningQuestions",
    responses=problem_responses(404),
    summary="Questions screening asks: one fact that could make the resident eligible for a program, and why",
)
async def list_questions(
    resident_id: ResidentId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    status: QuestionStatus | None = None,
) -> list[ScreeningQuestionView]:
    return await opportunities.questions_of(repo, principal, resident_id, status, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/questions/{question_id}/answer",
    operation_id="answerScreeningQuestion",
    response_model=ScreeningQuestionView,
    responses=problem_responses(403, 404, 409, 503),
    summary="Answer a screening question: the resident is screened again with the answer",
)
async def answer_question(
    resident_id: ResidentId,
    question_id: QuestionId,
    body: QuestionAnswer,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    catalogue: FetchedCatalogueDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: opportunities.answer(
            repo, ctx.outbox, available(catalogue), principal, resident_id, question_id, body, ctx.clock.today()
        ),
        status_code=200,
    )


@residents_router.post(
    "/{resident_id}/data-exports",
    operation_id="requestDataExport",
    status_code=202,
    response_model=DataExportView,
    responses={**ACCEPTED_AT_LOCATION, **problem_responses(403, 404)},
    summary="Ask for everything held about the resident, in every service, as one JSON document (개인정보 보호법 "
    "제35조, 제35조의2): gathered in the background; fetch it from the Location",
    tags=["rights"],
)
async def request_data_export(
    resident_id: ResidentId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
    body: Annotated[DataExportRequest | None, Body()] = None,
) -> JSONResponse:
    """The resident, a representative they named in the ``data_rights`` scope, or counter staff under the resident's
    authority. Each request and each fetch of the document is in the resident's access log."""
    request = body or DataExportRequest()
    return await idempotent.create(
        request,
        lambda: exports.request(repo, ctx.settings, principal, resident_id, ctx.clock.today()),
        status_code=202,
        location=lambda view: f"/v1/residents/{resident_id}/data-exports/{view['id']}",
    )


@residents_router.get(
    "/{resident_id}/data-exports/{export_id}",
    operation_id="readDataExport",
    responses=problem_responses(403, 404),
    summary="An export's progress per service, and the document once ready (kept a few days, then destroyed)",
    tags=["rights"],
)
async def read_data_export(
    resident_id: ResidentId, export_id: ExportId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> DataExportView:
    return await exports.read(repo, principal, resident_id, export_id, ctx.clock.today())


@residents_router.post(
    "/{resident_id}/erasure-requests",
    operation_id="requestErasure",
    status_code=201,
    response_model=ErasureView,
    responses={**CREATED_AT_LOCATION, **problem_responses(403, 404, 409)},
    summary="Ask that the resident's data be erased in every service (개인정보 보호법 제36조): what the law keeps is "
    "kept, pseudonymous, until a stated day; refused while an application is still being handled",
    tags=["rights"],
)
async def request_erasure(
    resident_id: ResidentId,
    body: ErasureCreate,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: erasure.request(repo, ctx, principal, resident_id, body),
        location=lambda view: f"/v1/residents/{resident_id}/erasure-requests/{view['id']}",
    )


@residents_router.get(
    "/{resident_id}/erasure-requests/{erasure_id}",
    operation_id="readErasureRequest",
    responses=problem_responses(403, 404),
    summary="An erasure request per service: what each erased, and what it keeps, why and until when",
    tags=["rights"],
)
async def read_erasure_request(
    resident_id: ResidentId, erasure_id: ErasureId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ErasureView:
    return await erasure.read(repo, ctx, principal, resident_id, erasure_id)


# Not under /v1/residents, where a path of one segment more is a resident's id.
contacts_router = APIRouter(prefix="/v1/contact-lookups", tags=["residents"])


@contacts_router.post(
    "",
    operation_id="lookUpContacts",
    responses=problem_responses(403),
    summary="Where to reach several residents at once (the notify service only); those it may not reach are left out",
)
async def look_up_contacts(body: ContactsRequest, principal: PrincipalDep, repo: RepositoryDep) -> ContactList:
    return await residents.contacts(repo, principal, body.resident_ids)


representations_router = APIRouter(prefix="/v1/representations", tags=["residents"])


@representations_router.get(
    "",
    operation_id="listRepresented",
    responses=problem_responses(403),
    summary="Whom I represent (the residents who named me), revoked and expired ones too",
)
async def list_represented(principal: Resident, repo: RepositoryDep, ctx: ContextDep) -> list[RepresentationView]:
    return await representatives.of_representative(repo, principal, ctx.clock.today())


# ================================================================================================ applications

applications_router = APIRouter(prefix="/v1/applications", tags=["applications"])


@applications_router.post(
    "",
    operation_id="submitApplication",
    status_code=201,
    response_model=ApplicationView,
    responses={
        **CREATED_AT_LOCATION,
        **problem_responses(403, 503),
    },
    summary="File one application for a life event (by the resident, or by staff on their behalf)",
)
async def submit_application(
    body: ApplicationCreate,
    principal: Filer,
    repo: RepositoryDep,
    ctx: ContextDep,
    catalogue: FetchedCatalogueDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: applications.submit(repo, ctx.outbox, available(catalogue), principal, body, ctx.clock.today()),
        location=lambda view: f"/v1/applications/{view['id']}",
    )


@applications_router.get(
    "",
    operation_id="listApplications",
    responses=problem_responses(403),
    summary="Applications the caller may see, newest first",
)
async def list_applications(
    principal: ApplicationReader,
    repo: RepositoryDep,
    ctx: ContextDep,
    resident_id: uuid.UUID | None = None,
    status: ApplicationStatus | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    cursor: str | None = Query(default=None, max_length=200),
) -> ApplicationPage:
    return await applications.list_visible(
        repo,
        principal,
        today=ctx.clock.today(),
        resident_id=resident_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )


@applications_router.get(
    "/{application_id}",
    operation_id="readApplication",
    responses=problem_responses(404),
    summary="One status across every department: programs, cases, notifications and the timeline",
)
async def read_application(
    application_id: ApplicationId, principal: PrincipalDep, repo: RepositoryDep, ctx: ContextDep
) -> ApplicationView:
    return await applications.read(repo, principal, application_id, ctx.clock.today())


@applications_router.post(
    "/{application_id}/info",
    operation_id="provideInformation",
    response_model=ApplicationView,
    responses=problem_responses(403, 404, 409, 503),
    summary="Answer the questions eligibility or a caseworker asked",
)
async def provide_info(
    application_id: ApplicationId,
    body: InfoProvide,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    catalogue: FetchedCatalogueDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body,
        lambda: applications.provide_info(
            repo, ctx.outbox, available(catalogue), principal, application_id, body, ctx.clock.today()
        ),
        status_code=200,
    )


@applications_router.post(
    "/{application_id}/withdraw",
    operation_id="withdrawApplication",
    response_model=ApplicationView,
    responses=problem_responses(403, 404, 409),
    summary="Withdraw the application (its open cases are closed)",
)
async def withdraw_application(
    application_id: ApplicationId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
    body: Annotated[Withdrawal | None, Body()] = None,
) -> JSONResponse:
    withdrawal = body or Withdrawal()
    return await idempotent.create(
        withdrawal,
        lambda: applications.withdraw(repo, ctx.outbox, principal, application_id, withdrawal, ctx.clock.today()),
        status_code=200,
    )


@applications_router.post(
    "/{application_id}/feedback",
    operation_id="giveFeedback",
    status_code=201,
    response_model=FeedbackView,
    responses=problem_responses(403, 404, 409),
    summary="Rate the service (1-5), once, when the application or one of its cases is completed",
)
async def give_feedback(
    application_id: ApplicationId,
    body: FeedbackCreate,
    principal: PrincipalDep,
    repo: RepositoryDep,
    ctx: ContextDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: applications.give_feedback(repo, ctx.outbox, principal, application_id, body, ctx.clock.today())
    )


# ================================================================================================ the catalogue

catalogue_router = APIRouter(prefix="/v1", tags=["catalogue"])


@catalogue_router.get(
    "/life-events",
    operation_id="listLifeEvents",
    responses=problem_responses(503),
    summary="Life events and the programs each may trigger (from eligibility's catalogue)",
)
async def list_life_events(catalogue: CatalogueDep) -> list[LifeEvent]:
    return await catalogue.life_events()


# In the order FastAPI tries them for a request (each route tried costs microseconds): the busiest first, filing and
# reading applications, which came after some thirty routes of residents.
ROUTERS = (applications_router, residents_router, contacts_router, representations_router, catalogue_router)
