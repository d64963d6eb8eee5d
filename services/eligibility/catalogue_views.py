"""The catalogue as the API shows it: programs with the rule version in force today, a program's every version with
where it stands, the life events with the programs each reaches, and the fact types."""

from __future__ import annotations

import datetime as dt

from services.eligibility.catalogue import Program, version_in_force, version_status
from services.eligibility.models import ProgramRow, RuleVersionRow
from services.eligibility.repository import Repository
from services.eligibility.schemas import (
    FactTypeOut,
    LifeEventOut,
    ProgramDetail,
    ProgramRef,
    ProgramSummary,
    VersionOut,
)
from services.eligibility.specs import LifeEvent, ProgramAttributes, VersionSpec
from services.eligibility.store import CatalogueStore
from shared.events import Department
from shared.problems import NotFound


async def programs(
    repo: Repository, store: CatalogueStore, *, department: Department | None, life_event: LifeEvent | None
) -> list[ProgramSummary]:
    catalogue = await store.get(repo)
    today = store.today()
    return [
        _summary(p, today)
        for p in catalogue.programs.values()
        if (department is None or p.attributes.department == department)
        and (life_event is None or life_event in p.attributes.life_events)
    ]


async def program(repo: Repository, store: CatalogueStore, code: str) -> ProgramDetail:
    """A program with every rule version as stored (including superseded ones), read from the database."""
    row = await repo.program_row(code)
    if row is None:
        raise NotFound(f"No program {code}.")
    return program_detail(row, await repo.version_rows(code), store.today())


async def life_events(repo: Repository, store: CatalogueStore) -> list[LifeEventOut]:
    return (await versioned_life_events(repo, store))[1]


async def versioned_life_events(repo: Repository, store: CatalogueStore) -> tuple[str, list[LifeEventOut]]:
    """The life events and the version of the catalogue they come from (an ``ETag`` for a client's copy)."""
    catalogue = await store.get(repo)
    today = store.today()
    return store.version(catalogue), [
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


def fact_types_version(store: CatalogueStore) -> str:
    """The fact types come from the files alone."""
    return store.files_version


def fact_types(store: CatalogueStore) -> list[FactTypeOut]:
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
        for t in store.facts.types.values()
    ]


def program_detail(row: ProgramRow, versions: list[RuleVersionRow], today: dt.date) -> ProgramDetail:
    attributes = ProgramAttributes.model_validate(row.attributes)
    current = version_in_force(versions, today)
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
        versions=[
            VersionOut.model_validate(
                {
                    **VersionSpec.model_validate(v.document).model_dump(by_alias=True),
                    "version": v.version,
                    "status": version_status(v, current, today),
                    "origin": v.origin,
                    "created_at": v.created_at,
                }
            )
            for v in versions
        ],
    )


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
