"""The eligibility HTTP API: thin routes over the catalogue, the rules engine, facts and screenings. Each route parses,
authorises through its dependencies, calls one domain function and returns its answer."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from services.eligibility import catalogue_views, determinations, reports, resident_data, screener, screenings
from services.eligibility.catalogue_admin import put_program_version
from services.eligibility.context import ContextDep
from services.eligibility.determinations import Eligibility
from services.eligibility.repository import ReadRepositoryDep, RepositoryDep, WriteRepositoryDep
from services.eligibility.schemas import (
    ApplicationDeterminations,
    EvaluateRequest,
    EvaluateResponse,
    FactReportIn,
    FactReportOut,
    FactTypeOut,
    LifeEventOut,
    ProgramDetail,
    ProgramSummary,
    ScreeningIn,
    ScreeningOut,
    ScreeningPage,
)
from services.eligibility.specs import CODE_PATTERN, LifeEvent, ProgramVersionPut
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotentDep, PrincipalDep
from shared.events import Department
from shared.personal_data import ResidentDataPart
from shared.problems import Forbidden, problem_responses

router = APIRouter(prefix="/v1", tags=["eligibility"])

CodePath = Annotated[str, Path(pattern=CODE_PATTERN, max_length=64, description="The program's code")]


async def get_eligibility(ctx: ContextDep) -> Eligibility:
    return ctx.eligibility


async def determination_reader(principal: PrincipalDep) -> Principal:
    if principal.role is Role.PARTNER:
        raise Forbidden("Partners see determinations through their event subscriptions.")
    return principal


ServiceDep = Annotated[Eligibility, Depends(get_eligibility)]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
ScreeningStaff = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]
DeterminationReader = Annotated[Principal, Depends(determination_reader)]


# ---------------------------------------------------------------------------------------------- the catalogue


@router.get("/programs", summary="The program catalogue, with the rule version in force today")
async def list_programs(
    repo: RepositoryDep,
    service: ServiceDep,
    department: Department | None = None,
    life_event: LifeEvent | None = None,
) -> list[ProgramSummary]:
    return await catalogue_views.programs(repo, service.store, department=department, life_event=life_event)


@router.get("/programs/{code}", summary="A program with every rule version", responses=problem_responses(404))
async def get_program(code: CodePath, repo: RepositoryDep, service: ServiceDep) -> ProgramDetail:
    return await catalogue_views.program(repo, service.store, code)


@router.put(
    "/programs/{code}",
    summary="Add a rule version (and create or update the program)",
    description=(
        "Adds a new rule version taking effect after today (a version in force is never edited or replaced "
        "retroactively); a not-yet-in-force version on or after the new date is superseded. The version is "
        "validated: unknown facts or programs, type errors (expressions are checked against the fact types), "
        "cycles and malformed criteria trees are refused with problem+json naming the field."
    ),
    responses={201: {"description": "The program was created"}, **problem_responses(403, 422)},
)
async def put_program(
    code: CodePath,
    body: ProgramVersionPut,
    repo: RepositoryDep,
    service: ServiceDep,
    principal: Admin,
    response: Response,
) -> ProgramDetail:
    now = dt.datetime.now(dt.UTC)
    result = await put_program_version(repo, service.store, code, body, actor=principal.subject, now=now)
    response.status_code = 201 if result.created else 200
    return result.program


_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "The client's copy (its `If-None-Match`) is this version of the catalogue"}
}
_LIFE_EVENTS = TypeAdapter(list[LifeEventOut])
_FACT_TYPES = TypeAdapter(list[FactTypeOut])


def _versioned(request: Request, version: str, body: Callable[[], bytes]) -> Response:
    """The answer with its version as an ``ETag``, or 304 with no body when the client already has that version
    (intake revalidates its copy of the catalogue this way)."""
    etag = f'"{version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body(), media_type="application/json", headers=headers)


@router.get(
    "/life-events",
    summary="Life events and the programs each reaches",
    response_model=list[LifeEventOut],
    responses=_NOT_MODIFIED,
)
async def list_life_events(request: Request, repo: RepositoryDep, service: ServiceDep) -> Response:
    version, events = await catalogue_views.versioned_life_events(repo, service.store)
    return _versioned(request, version, lambda: _LIFE_EVENTS.dump_json(events))


@router.get(
    "/fact-types",
    summary="Every fact a rule may read, with its type and question",
    response_model=list[FactTypeOut],
    responses=_NOT_MODIFIED,
)
async def list_fact_types(request: Request, service: ServiceDep) -> Response:
    return _versioned(
        request,
        catalogue_views.fact_types_version(service.store),
        lambda: _FACT_TYPES.dump_json(catalogue_views.fact_types(service.store)),
    )


# ---------------------------------------------------------------------------------------------- the screener


@router.post(
    "/evaluate",
    summary="Screener: facts in, determinations out (nothing is stored)",
    responses=problem_responses(422),
)
async def evaluate(body: EvaluateRequest, repo: ReadRepositoryDep, service: ServiceDep) -> EvaluateResponse:
    return await screener.evaluate_facts(repo, service.store, body, now=dt.datetime.now(dt.UTC))


# ---------------------------------------------------------------------------------------------- department facts


@router.post(
    "/facts",
    status_code=201,
    response_model=FactReportOut,
    summary="A department source reports facts about a resident",
    description=(
        "For a partner whose id is mapped to a department, or an administrator naming the department. The resident's "
        "open applications are re-evaluated; a new eligibility round is emitted only where an outcome changed."
    ),
    responses=problem_responses(403, 409, 422),
)
async def report_facts(
    body: FactReportIn,
    repo: RepositoryDep,
    service: ServiceDep,
    principal: PrincipalDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    return await idempotent.create(
        body, lambda: reports.report_facts(repo, service, principal, body, now=dt.datetime.now(dt.UTC))
    )


# ---------------------------------------------------------------------------------------------- screenings


@router.post(
    "/screenings",
    status_code=201,
    response_model=ScreeningOut,
    summary="Proactive screening of every resident who consented to it",
    description=(
        "Finds programs each resident who consented to `proactive_screening` is eligible for and never applied to, "
        "and emits `eligibility.opportunity` for each (once per resident and program). Answered when done (201), or "
        "with `background: true` queued for the scheduler and answered at once (202): follow its progress at "
        "`GET /v1/screenings/{id}`. Screening also runs by itself (see `GET /v1/screenings`)."
    ),
    responses={202: {"description": "Queued to run in the background"}, **problem_responses(403, 409, 422)},
)
async def start_screening(
    body: ScreeningIn,
    repo: RepositoryDep,
    service: ServiceDep,
    ctx: ContextDep,
    principal: ScreeningStaff,
    idempotent: IdempotentDep,
    tasks: BackgroundTasks,
) -> JSONResponse:
    if body.background:
        tasks.add_task(ctx.scheduler.wake)  # after the commit: the scheduler finds the run at once
    return await idempotent.create(
        body,
        lambda: screenings.start(
            repo, service, body, actor=principal.subject, now=dt.datetime.now(dt.UTC), reads=ctx.scheduler.db.reads()
        ),
        status_code=202 if body.background else 201,
    )


@router.get(
    "/screenings",
    summary="Every screening, newest first: what started it, how far it got, what it found",
    description=(
        "Screenings an administrator called, and those that ran by themselves: `full` when the rules changed, "
        "`daily` for residents whose dates crossed a boundary, `incremental` for residents whose facts, consents "
        "or answers changed. A running one shows its progress (`residents_screened` of `residents_total`)."
    ),
    responses=problem_responses(403, 422),
)
async def list_screenings(
    repo: RepositoryDep,
    principal: ScreeningStaff,
    kind: Annotated[
        Literal["manual", "requested", "full", "daily", "incremental"] | None, Query(description="Only this kind")
    ] = None,
    status: Annotated[
        Literal["queued", "running", "completed", "failed", "interrupted"] | None, Query(description="Only this status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> ScreeningPage:
    return await screenings.list_screenings(repo, kind=kind, status=status, cursor=cursor, limit=limit)


@router.get("/screenings/{screening_id}", summary="A screening's counts", responses=problem_responses(403, 404))
async def get_screening(screening_id: uuid.UUID, repo: RepositoryDep, principal: ScreeningStaff) -> ScreeningOut:
    return await screenings.report(repo, screening_id)


# ---------------------------------------------------------------------------------------------- determinations


@router.get(
    "/applications/{application_id}/determinations",
    summary="An application's determinations: the latest round (or ?round=N) with explanations",
    description=(
        "Readable by the application's resident; by a caseworker or supervisor while a case of the application is "
        "in one of their offices (a transfer away ends it); and by administrators. Staff reads are audited. To "
        "anyone else the application does not exist (404); partners get 403 (they follow determinations through "
        "their event subscriptions)."
    ),
    responses=problem_responses(403, 404),
)
async def application_determinations(
    application_id: uuid.UUID,
    repo: RepositoryDep,
    principal: DeterminationReader,
    round_: Annotated[int | None, Query(alias="round", ge=1, le=100_000)] = None,
) -> ApplicationDeterminations:
    return await determinations.application_determinations(repo, principal, application_id, round_)


# ---------------------------------------------------------------------------------------------- a resident's data


@router.get(
    "/residents/{resident_id}/data",
    summary="Everything eligibility holds about a resident: their part of the resident's export (the resident, or "
    "intake gathering it)",
    responses=problem_responses(404),
    tags=["rights"],
)
async def resident_data_part(
    resident_id: uuid.UUID,
    principal: PrincipalDep,
    repo: WriteRepositoryDep,
    export_id: uuid.UUID | None = Query(default=None, description="The export this read is for (in the audit log)"),
) -> ResidentDataPart:
    return await resident_data.part(repo, principal, resident_id, export_id)
