"""The eligibility HTTP API: thin routes over the catalogue, the rules engine, facts and screenings."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.eligibility import repository
from services.eligibility.catalogue import Catalogue, Program
from services.eligibility.catalogue_admin import put_program_version
from services.eligibility.determinations import Eligibility, eligibility
from services.eligibility.facts import FactLayers
from services.eligibility.models import ProgramRow, RuleVersionRow, ScreeningRow
from services.eligibility.schemas import (
    ApplicationDeterminations,
    EvaluateRequest,
    EvaluateResponse,
    FactReportIn,
    FactReportOut,
    FactTypeOut,
    LifeEventOut,
    ProgramDetail,
    ProgramRef,
    ProgramSummary,
    RoundOut,
    ScreeningIn,
    ScreeningOut,
    VersionOut,
    VersionStatus,
)
from services.eligibility.screening import run_screening
from services.eligibility.settings import EligibilitySettings
from services.eligibility.specs import CODE_PATTERN, LifeEvent, ProgramAttributes, ProgramVersionPut, VersionSpec
from shared.auth import Principal, Role, require_roles
from shared.deps import IdempotencyDep, PrincipalDep, SessionDep, get_runtime
from shared.events import Department
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent, problem_responses

router = APIRouter(prefix="/v1", tags=["eligibility"])

CodePath = Annotated[str, Path(pattern=CODE_PATTERN, max_length=64, description="The program's code")]


def get_eligibility(request: Request) -> Eligibility:
    return eligibility(get_runtime(request))


def get_settings(request: Request) -> EligibilitySettings:
    settings: EligibilitySettings = get_runtime(request).settings  # type: ignore[assignment]
    return settings


ServiceDep = Annotated[Eligibility, Depends(get_eligibility)]
SettingsDep = Annotated[EligibilitySettings, Depends(get_settings)]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
ScreeningStaff = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]


# ---------------------------------------------------------------------------------------------- the catalogue


@router.get("/programs", summary="The program catalogue, with the rule version in force today")
async def list_programs(
    session: SessionDep,
    service: ServiceDep,
    department: Department | None = None,
    life_event: LifeEvent | None = None,
) -> list[ProgramSummary]:
    catalogue = await service.store.get(session)
    today = service.store.today()
    return [
        _summary(p, today)
        for p in catalogue.programs.values()
        if (department is None or p.attributes.department == department)
        and (life_event is None or life_event in p.attributes.life_events)
    ]


@router.get("/programs/{code}", summary="A program with every rule version", responses=problem_responses(404))
async def get_program(code: CodePath, session: SessionDep, service: ServiceDep) -> ProgramDetail:
    return await _detail(session, service, code)


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
    session: SessionDep,
    service: ServiceDep,
    principal: Admin,
    response: Response,
) -> ProgramDetail:
    now = dt.datetime.now(dt.UTC)
    result = await put_program_version(session, service.store, code, body, actor=principal.subject, now=now)
    response.status_code = 201 if result.created else 200
    return await _detail(session, service, code)


@router.get("/life-events", summary="Life events and the programs each reaches")
async def list_life_events(session: SessionDep, service: ServiceDep) -> list[LifeEventOut]:
    catalogue = await service.store.get(session)
    today = service.store.today()
    return [
        LifeEventOut(
            code=event.code,
            name=event.name,
            description=event.description,
            programs=[
                ProgramRef(code=c, name=catalogue.programs[c].name, department=catalogue.programs[c].department)
                for c in catalogue.by_life_event.get(event.code, [])
                if catalogue.programs[c].version_on(today) is not None
            ],
        )
        for event in catalogue.life_events.values()
    ]


@router.get("/fact-types", summary="Every fact a rule may read, with its type and question")
async def list_fact_types(service: ServiceDep) -> list[FactTypeOut]:
    return [
        FactTypeOut(
            name=t.name,
            type=t.type,
            question=t.question,
            asked_of=t.asked_of,
            enum=list(t.enum) if t.enum else None,
            items=t.items,
            pattern=t.pattern,
            derived=t.derived,
            inputs=list(t.inputs),
            authorities=sorted(t.authorities),
            registry=t.registry,
        )
        for t in service.store.facts.types.values()
    ]


# ---------------------------------------------------------------------------------------------- the screener


@router.post(
    "/evaluate",
    summary="Screener: facts in, determinations out (nothing is stored)",
    responses=problem_responses(422),
)
async def evaluate(body: EvaluateRequest, session: SessionDep, service: ServiceDep) -> EvaluateResponse:
    catalogue = await service.store.get(session)
    values, problems = catalogue.facts.coerce_all(body.facts)
    if problems:
        raise UnprocessableContent(
            f"Facts that cannot be used: {', '.join(sorted(problems))}",
            errors=[
                {"field": f"facts.{name}", "message": message, "type": "invalid"} for name, message in problems.items()
            ],
        )
    day = body.application_date or service.store.today()
    env = catalogue.environment(day, FactLayers(declared=values), dt.datetime.now(dt.UTC))
    if body.programs is not None:
        codes = _known_codes(catalogue, body.programs, day, "programs")
    elif body.life_event is not None:
        codes = catalogue.programs_for(body.life_event.value, env)
    else:
        codes = catalogue.in_force(day)
    determinations = [r.determination(catalogue.facts) for r in catalogue.evaluate(env, codes)]
    missing: dict[str, Any] = {}
    for d in determinations:
        for m in d["missing"]:
            missing.setdefault(m["name"], m)
    return EvaluateResponse.model_validate(
        {
            "application_date": day,
            "life_event": body.life_event,
            "programs": determinations,
            "missing": list(missing.values()),
        }
    )


# ---------------------------------------------------------------------------------------------- department facts


@router.post(
    "/facts",
    status_code=201,
    response_model=FactReportOut,
    summary="A department source reports facts about a resident",
    description=(
        "For a partner whose id is mapped to a department, or an administrator naming the department. The resident's "
        "open applications are re-evaluated; a new eligibility round is emitted only where an outcome changed. "
        "Supports Idempotency-Key."
    ),
    responses=problem_responses(403, 409, 422),
)
async def report_facts(
    body: FactReportIn,
    request: Request,
    session: SessionDep,
    service: ServiceDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency: IdempotencyDep,
) -> Any:
    department = _reporting_department(principal, body, settings)

    async def create() -> FactReportOut:
        report_id = body.report_id or uuid.uuid4()
        if body.report_id is not None and await repository.report_seen(session, report_id):
            raise Conflict(
                f"Report {report_id} was already received.",
                errors=[{"field": "report_id", "message": "already received", "type": "duplicate"}],
            )
        now = dt.datetime.now(dt.UTC)
        source = body.source or (principal.partner_id or principal.subject)
        result = await service.record_report(
            session,
            report_id=report_id,
            resident_id=body.resident_id,
            department=department.value,
            source=source,
            facts=body.facts,
            reported_at=now,
            now=now,
            strict=True,
        )
        if result.problems:
            raise UnprocessableContent(
                f"Facts that cannot be accepted: {', '.join(p.field for p in result.problems)}",
                errors=[{"field": p.field, "message": p.message, "type": "invalid"} for p in result.problems],
            )
        out = FactReportOut(
            report_id=report_id,
            resident_id=body.resident_id,
            department=department,
            source=source,
            accepted=result.accepted,
            reevaluated_applications=result.reevaluated,
            new_rounds=result.new_rounds,
        )
        return out

    return (await idempotency.run(request, session, principal, body, create)).response()


def _reporting_department(principal: Principal, body: FactReportIn, settings: EligibilitySettings) -> Department:
    if principal.role is Role.ADMIN:
        if body.department is None:
            raise UnprocessableContent.for_field("department", "an administrator must name the reporting department")
        return body.department
    if principal.role is Role.PARTNER:
        mapped = settings.partner_departments.get(principal.partner_id or "")
        if mapped is None:
            raise Forbidden("This partner is not registered as a department source.")
        if body.department is not None and body.department != mapped:
            raise Forbidden(f"This partner reports for {mapped.value} only.")
        return mapped
    raise Forbidden("Only department sources (partners) and administrators report facts.")


# ---------------------------------------------------------------------------------------------- screenings


@router.post(
    "/screenings",
    status_code=201,
    response_model=ScreeningOut,
    summary="Proactive screening of every resident who consented to it",
    description=(
        "Finds programs each resident who consented to `proactive_screening` is eligible for and never applied to, "
        "and emits `eligibility.opportunity` for each (once per resident and program). Supports Idempotency-Key."
    ),
    responses=problem_responses(403, 422),
)
async def start_screening(
    body: ScreeningIn,
    request: Request,
    session: SessionDep,
    service: ServiceDep,
    settings: SettingsDep,
    principal: ScreeningStaff,
    idempotency: IdempotencyDep,
) -> Any:
    async def create() -> ScreeningOut:
        catalogue = await service.store.get(session)
        as_of = body.as_of or service.store.today()
        if body.programs is not None:
            codes = _known_codes(catalogue, body.programs, as_of, "programs")
        else:
            codes = [c for c, p in catalogue.programs.items() if p.attributes.proactive and p.version_on(as_of)]
        row = await run_screening(
            session,
            service,
            codes=codes,
            as_of=as_of,
            actor=principal.subject,
            now=dt.datetime.now(dt.UTC),
            batch_size=settings.screening_batch_size,
            max_residents=settings.screening_max_residents,
        )
        return _screening_out(row)

    return (await idempotency.run(request, session, principal, body, create)).response()


@router.get("/screenings/{screening_id}", summary="A screening's counts", responses=problem_responses(403, 404))
async def get_screening(screening_id: uuid.UUID, session: SessionDep, principal: ScreeningStaff) -> ScreeningOut:
    row = await repository.screening(session, screening_id)
    if row is None:
        raise NotFound(f"No screening {screening_id}.")
    return _screening_out(row)


def _screening_out(row: ScreeningRow) -> ScreeningOut:
    rate = None
    if row.duration_ms:
        rate = round(row.residents_screened / (row.duration_ms / 1000), 1)
    return ScreeningOut(
        screening_id=row.screening_id,
        status=row.status,
        as_of=row.as_of,
        programs=list(row.programs),
        residents_screened=row.residents_screened,
        judgements=row.judgements,
        evaluations=row.evaluations,
        eligible_found=row.eligible_found,
        already_applied=row.already_applied,
        already_notified=row.already_notified,
        opportunities=row.opportunities,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        residents_per_second=rate,
    )


# ---------------------------------------------------------------------------------------------- determinations


@router.get(
    "/applications/{application_id}/determinations",
    summary="An application's determinations: the latest round (or ?round=N) with explanations",
    responses=problem_responses(403, 404),
)
async def application_determinations(
    application_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    round_: Annotated[int | None, Query(alias="round", ge=1, le=100_000)] = None,
) -> ApplicationDeterminations:
    if principal.role is Role.PARTNER:
        raise Forbidden("Partners see determinations through their event subscriptions.")
    app = await repository.application(session, application_id)
    not_found = NotFound(f"No application {application_id}.")
    if app is None or app.status == "pending":
        raise not_found
    if principal.role is Role.RESIDENT and app.resident_id != principal.resident_id:
        raise not_found
    history = await repository.rounds(session, application_id)
    chosen = history[-1] if history and round_ is None else next((r for r in history if r.round == round_), None)
    if round_ is not None and chosen is None:
        raise NotFound(f"Application {application_id} has no round {round_}.")
    rows = await repository.round_determinations(session, application_id, chosen.round) if chosen else []
    if principal.is_staff:
        await repository.audit(
            session,
            actor=principal.subject,
            role=principal.role.value,
            action="read_determinations",
            object_type="application",
            object_id=str(application_id),
            purpose="case review",
        )
    return ApplicationDeterminations.model_validate(
        {
            "application_id": app.application_id,
            "resident_id": app.resident_id,
            "status": app.status,
            "life_event": app.life_event,
            "application_date": app.application_date,
            "round": chosen.round if chosen else 0,
            "trigger": chosen.trigger if chosen else None,
            "evaluated_at": chosen.evaluated_at if chosen else None,
            "determination_id": chosen.determination_id if chosen else None,
            "programs": [r.determination for r in rows],
            "rounds": [
                RoundOut(
                    round=r.round, trigger=r.trigger, evaluated_at=r.evaluated_at, determination_id=r.determination_id
                )
                for r in history
            ],
        }
    )


# ---------------------------------------------------------------------------------------------- helpers


def _known_codes(catalogue: Catalogue, codes: list[str], day: dt.date, field: str) -> list[str]:
    errors = []
    for i, code in enumerate(codes):
        program = catalogue.programs.get(code)
        if program is None:
            errors.append({"field": f"{field}[{i}]", "message": f"there is no program '{code}'", "type": "unknown"})
        elif program.version_on(day) is None:
            message = f"'{code}' has no rule version in force on {day.isoformat()}"
            errors.append({"field": f"{field}[{i}]", "message": message, "type": "not_in_force"})
    if errors:
        raise UnprocessableContent(f"Unknown programs: {', '.join(e['field'] for e in errors)}", errors=errors)
    return list(dict.fromkeys(codes))


def _summary(program: Program, today: dt.date) -> ProgramSummary:
    current = program.version_on(today)
    a = program.attributes
    return ProgramSummary(
        code=program.code,
        name=a.name.model_dump(),
        department=a.department,
        life_events=list(a.life_events),
        automatic=a.automatic,
        sla_days=a.sla_days,
        overflow_allowed=a.overflow_allowed,
        case_weight=a.case_weight,
        proactive=a.proactive,
        current_version=current.version if current else None,
        in_force_since=current.effective_from if current else None,
    )


async def _detail(session: Any, service: Eligibility, code: str) -> ProgramDetail:
    row = await repository.program_row(session, code)
    if row is None:
        raise NotFound(f"No program {code}.")
    return _detail_from_rows(row, await repository.version_rows(session, code), service.store.today())


def _detail_from_rows(row: ProgramRow, versions: list[RuleVersionRow], today: dt.date) -> ProgramDetail:
    attributes = ProgramAttributes.model_validate(row.attributes)
    live = [v for v in versions if v.superseded_at is None and v.effective_from <= today
            and (v.effective_to is None or today <= v.effective_to)]  # fmt: skip
    current = max(live, key=lambda v: (v.effective_from, v.version), default=None)
    out = []
    for v in versions:
        spec = VersionSpec.model_validate(v.document)
        if v.superseded_at is not None:
            status: VersionStatus = "superseded"
        elif current is not None and v.id == current.id:
            status = "in_force"
        elif v.effective_from > today:
            status = "scheduled"
        elif v.effective_to is not None and v.effective_to < today:
            status = "ended"
        else:
            status = "replaced"
        out.append(_version_out(v.version, spec, status, v))
    return ProgramDetail(
        code=row.code,
        name=attributes.name.model_dump(),
        department=attributes.department,
        life_events=list(attributes.life_events),
        automatic=attributes.automatic,
        sla_days=attributes.sla_days,
        overflow_allowed=attributes.overflow_allowed,
        case_weight=attributes.case_weight,
        proactive=attributes.proactive,
        current_version=current.version if current else None,
        in_force_since=current.effective_from if current else None,
        description=attributes.description,
        versions=out,
    )


def _version_out(number: int, spec: VersionSpec, status: VersionStatus, row: RuleVersionRow) -> VersionOut:
    return VersionOut.model_validate(
        {
            **spec.model_dump(by_alias=True),
            "version": number,
            "status": status,
            "origin": row.origin,
            "created_at": row.created_at,
        }
    )
