"""Intake's HTTP API: thin routes over the domain modules. The app factory adds authentication to every router."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import applications, residents
from services.intake.access import (
    FILING_ROLES,
    PURPOSE_NOTIFICATION,
    application_read_purpose,
    is_self,
    record_access,
    require_self,
    resident_read_purpose,
)
from services.intake.catalogue import Catalogue, CatalogueSnapshot, CatalogueUnavailable, get_catalogue
from services.intake.repository import RepositoryDep
from services.intake.schemas import (
    AccessLogEntryView,
    AccessLogPage,
    ApplicationCreate,
    ApplicationPage,
    ApplicationStatus,
    ApplicationSummary,
    ApplicationView,
    ConsentsUpdate,
    ConsentsView,
    ContactView,
    FeedbackCreate,
    FeedbackView,
    InfoProvide,
    LifeEvent,
    ResidentCreate,
    ResidentUpdate,
    ResidentView,
    Withdrawal,
)
from services.intake.settings import IntakeSettings
from services.intake.status import build_view
from shared.auth import Principal, Role
from shared.deps import IdempotencyDep, OutboxDep, PrincipalDep, SessionDep, get_runtime
from shared.events import Channel, Language
from shared.idempotency import Idempotency
from shared.problems import NotFound, problem_responses


def get_settings(request: Request) -> IntakeSettings:
    settings = get_runtime(request).settings
    assert isinstance(settings, IntakeSettings)
    return settings


SettingsDep = Annotated[IntakeSettings, Depends(get_settings)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
ResidentId = Annotated[uuid.UUID, Path(description="The resident's pseudonymous id")]
ApplicationId = Annotated[uuid.UUID, Path(description="The application's id")]
# Documents the header; shared.idempotency reads and checks it.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Makes a retry safe: the same key and body return the first answer; another body is refused",
    ),
]


async def idempotent(
    request: Request,
    session: AsyncSession,
    idempotency: Idempotency,
    principal: Principal,
    body: BaseModel | None,
    *,
    status_code: int,
    create: Callable[[], Awaitable[BaseModel]],
    location: Callable[[dict[str, Any]], str] | None = None,
) -> JSONResponse:
    """Run ``create`` once per ``Idempotency-Key``: a retry gets the stored answer (same status, same body), the same
    key with another body is refused (422). The key is stored in the transaction that did the work."""
    answer = await idempotency.run(request, session, principal, body, create, status_code=status_code)
    headers = {"Location": location(answer.body)} if location is not None and isinstance(answer.body, dict) else {}
    return answer.response(headers)


async def catalogue_or_error(catalogue: Catalogue) -> CatalogueSnapshot | CatalogueUnavailable:
    """The catalogue, read before the transaction starts (no database lock is held while eligibility answers). If
    it is unavailable, a retry of a request that already succeeded is still answered from the idempotency store."""
    try:
        return await catalogue.snapshot()
    except CatalogueUnavailable as exc:
        return exc


def _snapshot(result: CatalogueSnapshot | CatalogueUnavailable) -> CatalogueSnapshot:
    if isinstance(result, CatalogueUnavailable):
        raise result
    return result


# ================================================================================================ residents

residents_router = APIRouter(prefix="/v1/residents", tags=["residents"])


@residents_router.post(
    "",
    operation_id="registerResident",
    status_code=201,
    response_model=ResidentView,
    responses={
        201: {"headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
        **problem_responses(403, 409),
    },
    summary="Register a resident (themselves, or assisted by staff at a counter)",
)
async def register_resident(
    request: Request,
    body: ResidentCreate,
    principal: PrincipalDep,
    session: SessionDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    idempotency: IdempotencyDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A resident's token registers that resident (its resident id becomes the record's id). Staff registering
    someone at a counter get a new id back, for which a resident token can then be issued."""
    principal.require(*FILING_ROLES)

    async def create() -> ResidentView:
        resident = await residents.register(repo, outbox, principal, body, settings.today())
        return residents.view(resident, [])

    return await idempotent(
        request,
        session,
        idempotency,
        principal,
        body,
        status_code=201,
        create=create,
        location=lambda b: f"/v1/residents/{b['id']}",
    )


@residents_router.get(
    "/{resident_id}", operation_id="readResident", responses=problem_responses(404), summary="A resident's record"
)
async def read_resident(resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep) -> ResidentView:
    resident = await repo.visible_resident(principal, resident_id)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="resident",
        record_id=resident.id,
        purpose=await resident_read_purpose(repo, principal, resident),
    )
    return residents.view(resident, await repo.consents(resident.id))


@residents_router.patch(
    "/{resident_id}",
    operation_id="updateResident",
    responses=problem_responses(404),
    summary="Change a resident's record (only the fields given)",
)
async def update_resident(
    resident_id: ResidentId,
    body: ResidentUpdate,
    principal: PrincipalDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    settings: SettingsDep,
) -> ResidentView:
    resident = await repo.visible_resident(principal, resident_id, for_update=True)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    purpose = await resident_read_purpose(repo, principal, resident)
    resident = await residents.update(repo, outbox, principal, resident, body, settings.today())
    record_access(
        repo, principal, resident.id, action="update", record_type="resident", record_id=resident.id, purpose=purpose
    )
    return residents.view(resident, await repo.consents(resident.id))


@residents_router.get(
    "/{resident_id}/consents",
    operation_id="readConsents",
    responses=problem_responses(404),
    summary="Current consents and their full history",
)
async def read_consents(resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep) -> ConsentsView:
    resident = await repo.visible_resident(principal, resident_id)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="consents",
        record_id=resident.id,
        purpose=await resident_read_purpose(repo, principal, resident),
    )
    return await residents.consents_view(repo, resident)


@residents_router.put(
    "/{resident_id}/consents",
    operation_id="setConsents",
    responses=problem_responses(403, 404),
    summary="Set the resident's consents (the complete set; a purpose left out is withdrawn)",
)
async def put_consents(
    resident_id: ResidentId, body: ConsentsUpdate, principal: PrincipalDep, repo: RepositoryDep, outbox: OutboxDep
) -> ConsentsView:
    resident = await repo.visible_resident(principal, resident_id, for_update=True)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    require_self(principal, resident.id, "give or withdraw their consent")
    return await residents.set_consents(repo, outbox, principal, resident, body)


@residents_router.get(
    "/{resident_id}/access-log",
    operation_id="readAccessLog",
    responses=problem_responses(404),
    summary="Who looked at the resident's data, when and why (the resident only)",
)
async def read_access_log(
    resident_id: ResidentId,
    principal: PrincipalDep,
    repo: RepositoryDep,
    limit: int = Query(default=50, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=20, pattern=r"^[0-9]{1,18}$"),
) -> AccessLogPage:
    if not is_self(principal, resident_id) or await repo.resident(resident_id) is None:
        raise NotFound(f"No resident {resident_id}.")
    before = int(cursor) if cursor else None
    entries = await repo.access_log(resident_id, before_id=before, limit=limit + 1)
    page = entries[:limit]
    return AccessLogPage(
        items=[
            AccessLogEntryView(
                at=e.at,
                actor=e.actor,
                actor_role=e.actor_role,
                actor_name=e.actor_name,
                offices=e.offices,
                action=e.action,
                record_type=e.record_type,
                record_id=e.record_id,
                purpose=e.purpose,
            )
            for e in page
        ],
        next_cursor=str(page[-1].id) if len(entries) > limit else None,
    )


@residents_router.get(
    "/{resident_id}/contact",
    operation_id="readContact",
    responses=problem_responses(404),
    summary="Where to reach the resident (the notify service only)",
)
async def read_contact(resident_id: ResidentId, principal: PrincipalDep, repo: RepositoryDep) -> ContactView:
    if principal.role is not Role.SERVICE or principal.service != "notify":
        raise NotFound(f"No resident {resident_id}.")
    resident = await repo.resident(resident_id)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="contact",
        record_id=resident.id,
        purpose=PURPOSE_NOTIFICATION,
    )
    return ContactView(
        resident_id=resident.id,
        email=resident.email,
        phone=resident.phone,
        preferred_language=Language(resident.preferred_language),
        preferred_channels=resident.preferred_channels,
    )


# ================================================================================================ applications

applications_router = APIRouter(prefix="/v1/applications", tags=["applications"])


@applications_router.post(
    "",
    operation_id="submitApplication",
    status_code=201,
    response_model=ApplicationView,
    responses={
        201: {"headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
        **problem_responses(403, 503),
    },
    summary="File one application for a life event (by the resident, or by staff on their behalf)",
)
async def submit_application(
    request: Request,
    body: ApplicationCreate,
    principal: PrincipalDep,
    session: SessionDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    idempotency: IdempotencyDep,
    catalogue: CatalogueDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    principal.require(*FILING_ROLES)
    fetched = await catalogue_or_error(catalogue)

    async def create() -> ApplicationView:
        application = await applications.submit(repo, outbox, _snapshot(fetched), principal, body, settings.today())
        return await build_view(repo, application)

    return await idempotent(
        request,
        session,
        idempotency,
        principal,
        body,
        status_code=201,
        create=create,
        location=lambda b: f"/v1/applications/{b['id']}",
    )


@applications_router.get(
    "",
    operation_id="listApplications",
    responses=problem_responses(403),
    summary="Applications the caller may see, newest first",
)
async def list_applications(
    principal: PrincipalDep,
    repo: RepositoryDep,
    resident_id: uuid.UUID | None = None,
    status: ApplicationStatus | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    cursor: str | None = Query(default=None, max_length=200),
) -> ApplicationPage:
    principal.require(Role.RESIDENT, Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN)
    after = applications.decode_cursor(cursor) if cursor else None
    found = await repo.list_applications(
        principal, resident_id=resident_id, status=status.value if status else None, after=after, limit=limit + 1
    )
    page = found[:limit]
    for application in page:
        record_access(
            repo,
            principal,
            application.resident_id,
            action="list",
            record_type="application",
            record_id=application.id,
            purpose=application_read_purpose(principal),
        )
    return ApplicationPage(
        items=[
            ApplicationSummary(
                id=a.id,
                resident_id=a.resident_id,
                life_event=a.life_event,
                channel=Channel(a.channel),
                status=ApplicationStatus(a.status),
                application_date=a.application_date,
                submitted_at=a.submitted_at,
                filed_by=a.filed_by,
                updated_at=a.updated_at,
            )
            for a in page
        ],
        next_cursor=applications.encode_cursor(page[-1]) if len(found) > limit else None,
    )


@applications_router.get(
    "/{application_id}",
    operation_id="readApplication",
    responses=problem_responses(404),
    summary="One status across every department: programs, cases, notifications and the timeline",
)
async def read_application(
    application_id: ApplicationId, principal: PrincipalDep, repo: RepositoryDep
) -> ApplicationView:
    application = await repo.visible_application(principal, application_id)
    if application is None:
        raise NotFound(f"No application {application_id}.")
    record_access(
        repo,
        principal,
        application.resident_id,
        action="read",
        record_type="application",
        record_id=application.id,
        purpose=application_read_purpose(principal),
    )
    return await build_view(repo, application)


@applications_router.post(
    "/{application_id}/info",
    operation_id="provideInformation",
    response_model=ApplicationView,
    responses=problem_responses(403, 404, 409, 503),
    summary="Answer the questions eligibility or a caseworker asked",
)
async def provide_info(
    request: Request,
    application_id: ApplicationId,
    body: InfoProvide,
    principal: PrincipalDep,
    session: SessionDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    idempotency: IdempotencyDep,
    catalogue: CatalogueDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    fetched = await catalogue_or_error(catalogue)

    async def create() -> ApplicationView:
        application = await applications.provide_info(repo, outbox, _snapshot(fetched), principal, application_id, body)
        return await build_view(repo, application)

    return await idempotent(request, session, idempotency, principal, body, status_code=200, create=create)


@applications_router.post(
    "/{application_id}/withdraw",
    operation_id="withdrawApplication",
    response_model=ApplicationView,
    responses=problem_responses(403, 404, 409),
    summary="Withdraw the application (its open cases are closed)",
)
async def withdraw_application(
    request: Request,
    application_id: ApplicationId,
    principal: PrincipalDep,
    session: SessionDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    idempotency: IdempotencyDep,
    body: Annotated[Withdrawal | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    withdrawal = body or Withdrawal()

    async def create() -> ApplicationView:
        application = await applications.withdraw(repo, outbox, principal, application_id, withdrawal)
        return await build_view(repo, application)

    return await idempotent(request, session, idempotency, principal, withdrawal, status_code=200, create=create)


@applications_router.post(
    "/{application_id}/feedback",
    operation_id="giveFeedback",
    status_code=201,
    response_model=FeedbackView,
    responses=problem_responses(403, 404, 409),
    summary="Rate the service (1-5), once, when the application or one of its cases is completed",
)
async def give_feedback(
    request: Request,
    application_id: ApplicationId,
    body: FeedbackCreate,
    principal: PrincipalDep,
    session: SessionDep,
    repo: RepositoryDep,
    outbox: OutboxDep,
    idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def create() -> FeedbackView:
        feedback = await applications.give_feedback(repo, outbox, principal, application_id, body)
        return FeedbackView(
            application_id=feedback.application_id,
            score=feedback.score,
            comment=feedback.comment,
            created_at=feedback.created_at,
        )

    return await idempotent(request, session, idempotency, principal, body, status_code=201, create=create)


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


ROUTERS = (residents_router, applications_router, catalogue_router)
