"""Every query of the eligibility service. Nothing here commits: the request or the event handler does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility.catalogue import ProgramData
from services.eligibility.facts import FactLayers, MedianIncomeYear, ReportedValue, registry_facts
from services.eligibility.models import (
    ApplicationRow,
    CaseOfficeRow,
    CatalogueStateRow,
    DepartmentFactRow,
    DeterminationRow,
    EvaluationRoundRow,
    MedianIncomeRow,
    OpportunityRow,
    ProgramRow,
    ResidentRow,
    RuleVersionRow,
    ScreeningRow,
    platform,
)
from services.eligibility.specs import ProgramAttributes, VersionSpec
from shared.audit import AuditLog
from shared.auth import Principal

audit_log = AuditLog(platform)

# ---------------------------------------------------------------------------------------------- the catalogue


async def catalogue_revision(session: AsyncSession) -> int:
    revision = await session.scalar(select(CatalogueStateRow.revision).where(CatalogueStateRow.id == 1))
    return int(revision or 0)


async def bump_catalogue_revision(session: AsyncSession, now: dt.datetime) -> int:
    row = await session.get(CatalogueStateRow, 1, with_for_update=True)
    if row is None:
        row = CatalogueStateRow(id=1, revision=1, updated_at=now)
        session.add(row)
    else:
        row.revision += 1
        row.updated_at = now
    await session.flush()
    return row.revision


async def program_rows(session: AsyncSession) -> list[ProgramRow]:
    return list((await session.scalars(select(ProgramRow).order_by(ProgramRow.code))).all())


async def program_row(session: AsyncSession, code: str, *, for_update: bool = False) -> ProgramRow | None:
    return await session.get(ProgramRow, code, with_for_update=for_update)


async def version_rows(session: AsyncSession, code: str | None = None) -> list[RuleVersionRow]:
    query = select(RuleVersionRow).order_by(RuleVersionRow.program_code, RuleVersionRow.version)
    if code is not None:
        query = query.where(RuleVersionRow.program_code == code)
    return list((await session.scalars(query)).all())


async def load_program_data(session: AsyncSession) -> list[ProgramData]:
    programs = await program_rows(session)
    versions: dict[str, list[RuleVersionRow]] = defaultdict(list)
    for row in await version_rows(session):
        versions[row.program_code].append(row)
    return [
        ProgramData(
            p.code,
            ProgramAttributes.model_validate(p.attributes),
            [
                (v.version, VersionSpec.model_validate(v.document), v.superseded_at is not None)
                for v in versions[p.code]
            ],
        )
        for p in programs
    ]


async def median_years(session: AsyncSession) -> list[MedianIncomeYear]:
    rows = (await session.scalars(select(MedianIncomeRow).order_by(MedianIncomeRow.year))).all()
    by_year: dict[int, list[MedianIncomeRow]] = defaultdict(list)
    for row in rows:
        by_year[row.year].append(row)
    return [
        MedianIncomeYear(
            year=year,
            effective_from=items[0].effective_from,
            amounts={r.household_size: r.amount for r in items},
            source=items[0].source,
        )
        for year, items in by_year.items()
    ]


# ---------------------------------------------------------------------------------------------- residents and facts


async def resident(session: AsyncSession, resident_id: uuid.UUID, *, for_update: bool = False) -> ResidentRow | None:
    return await session.get(ResidentRow, resident_id, with_for_update=for_update)


async def resident_or_new(session: AsyncSession, resident_id: uuid.UUID) -> ResidentRow:
    row = await resident(session, resident_id, for_update=True)
    if row is None:
        row = ResidentRow(resident_id=resident_id, proactive_screening=False)
        session.add(row)
    return row


def registry_of(row: ResidentRow | None) -> dict[str, Any]:
    if row is None or row.registry_version is None:
        return {}
    return registry_facts(
        birth_date=row.birth_date,
        district_code=row.district_code,
        household=row.household,
        vulnerability=row.vulnerability,
    )


def reported_of(rows: Iterable[DepartmentFactRow]) -> list[ReportedValue]:
    return [ReportedValue(r.name, r.value, r.department, r.source, r.observed_at, r.valid_until) for r in rows]


async def department_facts(session: AsyncSession, resident_id: uuid.UUID) -> list[DepartmentFactRow]:
    return list(
        (await session.scalars(select(DepartmentFactRow).where(DepartmentFactRow.resident_id == resident_id))).all()
    )


async def report_seen(session: AsyncSession, report_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(func.count()).select_from(DepartmentFactRow).where(DepartmentFactRow.report_id == report_id)
    )
    return bool(found)


async def layers_for(session: AsyncSession, resident_id: uuid.UUID, declared: dict[str, Any]) -> FactLayers:
    row = await resident(session, resident_id)
    return FactLayers(
        declared=declared,
        registry=registry_of(row),
        reported=reported_of(await department_facts(session, resident_id)),
        consents=(row.consents or {}) if row is not None else {},
    )


# ---------------------------------------------------------------------------------------------- applications


async def application(
    session: AsyncSession, application_id: uuid.UUID, *, for_update: bool = False
) -> ApplicationRow | None:
    return await session.get(ApplicationRow, application_id, with_for_update=for_update)


async def open_applications(session: AsyncSession, resident_id: uuid.UUID) -> list[ApplicationRow]:
    query = (
        select(ApplicationRow)
        .where(ApplicationRow.resident_id == resident_id, ApplicationRow.status == "open")
        .order_by(ApplicationRow.submitted_at)
        .with_for_update()
    )
    return list((await session.scalars(query)).all())


async def round_determinations(session: AsyncSession, application_id: uuid.UUID, round_: int) -> list[DeterminationRow]:
    query = (
        select(DeterminationRow)
        .where(DeterminationRow.application_id == application_id, DeterminationRow.round == round_)
        .order_by(DeterminationRow.id)
    )
    return list((await session.scalars(query)).all())


async def rounds(session: AsyncSession, application_id: uuid.UUID) -> list[EvaluationRoundRow]:
    query = (
        select(EvaluationRoundRow)
        .where(EvaluationRoundRow.application_id == application_id)
        .order_by(EvaluationRoundRow.round)
    )
    return list((await session.scalars(query)).all())


async def applied_programs(session: AsyncSession, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
    """The programs each resident was ever judged for in an application (in one query)."""
    out: dict[uuid.UUID, set[str]] = defaultdict(set)
    if not resident_ids:
        return out
    query = (
        select(DeterminationRow.resident_id, DeterminationRow.program_code)
        .where(DeterminationRow.resident_id.in_(resident_ids))
        .distinct()
    )
    for resident_id, code in (await session.execute(query)).all():
        out[resident_id].add(code)
    return out


# ---------------------------------------------------------------------------------------------- case offices


async def case_office(session: AsyncSession, case_id: uuid.UUID, *, for_update: bool = False) -> CaseOfficeRow | None:
    return await session.get(CaseOfficeRow, case_id, with_for_update=for_update)


async def has_case_in_offices(session: AsyncSession, application_id: uuid.UUID, offices: Iterable[str]) -> bool:
    """Whether a case of the application is now in one of ``offices``."""
    codes = sorted(offices)
    if not codes:
        return False
    query = select(exists().where(CaseOfficeRow.application_id == application_id, CaseOfficeRow.office_code.in_(codes)))
    return bool(await session.scalar(query))


# ---------------------------------------------------------------------------------------------- screenings


async def screening_residents(session: AsyncSession, after: uuid.UUID | None, limit: int) -> list[ResidentRow]:
    """Residents who consented to proactive screening, by id, a page at a time."""
    query = select(ResidentRow).where(ResidentRow.proactive_screening.is_(True)).order_by(ResidentRow.resident_id)
    if after is not None:
        query = query.where(ResidentRow.resident_id > after)
    return list((await session.scalars(query.limit(limit))).all())


async def department_facts_of(
    session: AsyncSession, resident_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[DepartmentFactRow]]:
    out: dict[uuid.UUID, list[DepartmentFactRow]] = defaultdict(list)
    if not resident_ids:
        return out
    query = select(DepartmentFactRow).where(DepartmentFactRow.resident_id.in_(resident_ids))
    for row in (await session.scalars(query)).all():
        out[row.resident_id].append(row)
    return out


async def notified(session: AsyncSession, resident_ids: Sequence[uuid.UUID]) -> set[tuple[uuid.UUID, str]]:
    if not resident_ids:
        return set()
    query = select(OpportunityRow.resident_id, OpportunityRow.program_code).where(
        OpportunityRow.resident_id.in_(resident_ids)
    )
    return {(r, c) for r, c in (await session.execute(query)).all()}


async def screening(session: AsyncSession, screening_id: uuid.UUID) -> ScreeningRow | None:
    return await session.get(ScreeningRow, screening_id)


# ---------------------------------------------------------------------------------------------- audit


async def audit(
    session: AsyncSession,
    principal: Principal,
    *,
    action: str,
    object_type: str,
    object_id: str,
    purpose: str,
    resident_id: uuid.UUID | None = None,
) -> None:
    await audit_log.record(
        session,
        principal,
        action=action,
        record_type=object_type,
        record_id=object_id,
        purpose=purpose,
        resident_id=resident_id,
    )


async def supersede_versions(session: AsyncSession, ids: Sequence[int], now: dt.datetime) -> None:
    if ids:
        await session.execute(update(RuleVersionRow).where(RuleVersionRow.id.in_(ids)).values(superseded_at=now))
