"""Every query of the eligibility service, as methods of one :class:`Repository` bound to the request's or the event
handler's session. Reads a caller makes are scoped to the caller: what the caller may not see is simply not found.
Nothing here commits: the request or the event handler does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import ColumnElement, exists, false, func, select, true, update
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
)
from services.eligibility.specs import ProgramAttributes, VersionSpec
from shared.auth import Principal, Role
from shared.deps import ReadSessionDep, SessionDep

OFFICE_ROLES = (Role.CASEWORKER, Role.SUPERVISOR)


def application_scope(principal: Principal) -> ColumnElement[bool]:
    """The applications whose determinations the caller may read: a resident their own; a caseworker or supervisor
    those with a case now in one of their offices (a transfer away ends it); an administrator all."""
    if principal.role is Role.ADMIN:
        return true()
    if principal.role is Role.RESIDENT and principal.resident_id is not None:
        return ApplicationRow.resident_id == principal.resident_id
    if principal.role in OFFICE_ROLES and principal.offices:
        return exists().where(
            CaseOfficeRow.application_id == ApplicationRow.application_id,
            CaseOfficeRow.office_code.in_(sorted(principal.offices)),
        )
    return false()


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


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------------------------------ the catalogue

    async def catalogue_revision(self) -> int:
        revision = await self.session.scalar(select(CatalogueStateRow.revision).where(CatalogueStateRow.id == 1))
        return int(revision or 0)

    async def bump_catalogue_revision(self, now: dt.datetime) -> int:
        row = await self.session.get(CatalogueStateRow, 1, with_for_update=True)
        if row is None:
            row = CatalogueStateRow(id=1, revision=1, updated_at=now)
            self.session.add(row)
        else:
            row.revision += 1
            row.updated_at = now
        await self.session.flush()
        return row.revision

    async def program_rows(self) -> list[ProgramRow]:
        return list((await self.session.scalars(select(ProgramRow).order_by(ProgramRow.code))).all())

    async def program_row(self, code: str, *, for_update: bool = False) -> ProgramRow | None:
        return await self.session.get(ProgramRow, code, with_for_update=for_update)

    async def version_rows(self, code: str | None = None) -> list[RuleVersionRow]:
        query = select(RuleVersionRow).order_by(RuleVersionRow.program_code, RuleVersionRow.version)
        if code is not None:
            query = query.where(RuleVersionRow.program_code == code)
        return list((await self.session.scalars(query)).all())

    async def supersede_versions(self, ids: Sequence[int], now: dt.datetime) -> None:
        if ids:
            await self.session.execute(
                update(RuleVersionRow).where(RuleVersionRow.id.in_(ids)).values(superseded_at=now)
            )

    async def load_program_data(self) -> list[ProgramData]:
        programs = await self.program_rows()
        versions: dict[str, list[RuleVersionRow]] = defaultdict(list)
        for row in await self.version_rows():
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

    async def median_rows(self) -> list[MedianIncomeRow]:
        return list((await self.session.scalars(select(MedianIncomeRow))).all())

    async def median_years(self) -> list[MedianIncomeYear]:
        rows = (await self.session.scalars(select(MedianIncomeRow).order_by(MedianIncomeRow.year))).all()
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

    # ------------------------------------------------------------------------------------------ residents and facts

    async def resident(self, resident_id: uuid.UUID, *, for_update: bool = False) -> ResidentRow | None:
        return await self.session.get(ResidentRow, resident_id, with_for_update=for_update)

    async def resident_or_new(self, resident_id: uuid.UUID) -> ResidentRow:
        row = await self.resident(resident_id, for_update=True)
        if row is None:
            row = ResidentRow(resident_id=resident_id, proactive_screening=False)
            self.session.add(row)
        return row

    async def department_facts(self, resident_id: uuid.UUID) -> list[DepartmentFactRow]:
        query = select(DepartmentFactRow).where(DepartmentFactRow.resident_id == resident_id)
        return list((await self.session.scalars(query)).all())

    async def report_seen(self, report_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(func.count()).select_from(DepartmentFactRow).where(DepartmentFactRow.report_id == report_id)
        )
        return bool(found)

    async def layers_for(self, resident_id: uuid.UUID, declared: dict[str, Any]) -> FactLayers:
        row = await self.resident(resident_id)
        return FactLayers(
            declared=declared,
            registry=registry_of(row),
            reported=reported_of(await self.department_facts(resident_id)),
            consents=(row.consents or {}) if row is not None else {},
        )

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID, *, for_update: bool = False) -> ApplicationRow | None:
        """Unscoped: for event handlers, which act on behalf of no caller."""
        return await self.session.get(ApplicationRow, application_id, with_for_update=for_update)

    async def visible_application(self, principal: Principal, application_id: uuid.UUID) -> ApplicationRow | None:
        query = select(ApplicationRow).where(
            ApplicationRow.application_id == application_id, application_scope(principal)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def open_applications(self, resident_id: uuid.UUID) -> list[ApplicationRow]:
        query = (
            select(ApplicationRow)
            .where(ApplicationRow.resident_id == resident_id, ApplicationRow.status == "open")
            .order_by(ApplicationRow.submitted_at)
            .with_for_update()
        )
        return list((await self.session.scalars(query)).all())

    async def round_determinations(self, application_id: uuid.UUID, round_: int) -> list[DeterminationRow]:
        query = (
            select(DeterminationRow)
            .where(DeterminationRow.application_id == application_id, DeterminationRow.round == round_)
            .order_by(DeterminationRow.id)
        )
        return list((await self.session.scalars(query)).all())

    async def rounds(self, application_id: uuid.UUID) -> list[EvaluationRoundRow]:
        query = (
            select(EvaluationRoundRow)
            .where(EvaluationRoundRow.application_id == application_id)
            .order_by(EvaluationRoundRow.round)
        )
        return list((await self.session.scalars(query)).all())

    async def applied_programs(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
        """The programs each resident was ever judged for in an application (in one query)."""
        out: dict[uuid.UUID, set[str]] = defaultdict(set)
        if not resident_ids:
            return out
        query = (
            select(DeterminationRow.resident_id, DeterminationRow.program_code)
            .where(DeterminationRow.resident_id.in_(resident_ids))
            .distinct()
        )
        for resident_id, code in (await self.session.execute(query)).all():
            out[resident_id].add(code)
        return out

    # ------------------------------------------------------------------------------------------ case offices

    async def case_office(self, case_id: uuid.UUID, *, for_update: bool = False) -> CaseOfficeRow | None:
        return await self.session.get(CaseOfficeRow, case_id, with_for_update=for_update)

    # ------------------------------------------------------------------------------------------ screenings

    async def screening_residents(self, after: uuid.UUID | None, limit: int) -> list[ResidentRow]:
        """Residents who consented to proactive screening, by id, a page at a time."""
        query = select(ResidentRow).where(ResidentRow.proactive_screening.is_(True)).order_by(ResidentRow.resident_id)
        if after is not None:
            query = query.where(ResidentRow.resident_id > after)
        return list((await self.session.scalars(query.limit(limit))).all())

    async def department_facts_of(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[DepartmentFactRow]]:
        out: dict[uuid.UUID, list[DepartmentFactRow]] = defaultdict(list)
        if not resident_ids:
            return out
        query = select(DepartmentFactRow).where(DepartmentFactRow.resident_id.in_(resident_ids))
        for row in (await self.session.scalars(query)).all():
            out[row.resident_id].append(row)
        return out

    async def notified(self, resident_ids: Sequence[uuid.UUID]) -> set[tuple[uuid.UUID, str]]:
        if not resident_ids:
            return set()
        query = select(OpportunityRow.resident_id, OpportunityRow.program_code).where(
            OpportunityRow.resident_id.in_(resident_ids)
        )
        return {(r, c) for r, c in (await self.session.execute(query)).all()}

    async def screening(self, screening_id: uuid.UUID) -> ScreeningRow | None:
        return await self.session.get(ScreeningRow, screening_id)


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


async def get_read_repository(session: ReadSessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]
# For a POST that writes nothing (the screener): it reads without waiting for the database's writers.
ReadRepositoryDep = Annotated[Repository, Depends(get_read_repository)]
