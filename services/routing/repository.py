"""Every query of the routing service. Reads of cases take the caller and are scoped to the offices they work in,
so a case of another office is simply not found; the unscoped lookups are for event handlers and the SLA timer,
which act on behalf of no caller."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.routing.models import ApplicationRecord, Case, CaseEntry, CaseStatus, Office, SlaBreach
from shared.auth import Principal, Role
from shared.deps import SessionDep


def case_scope(principal: Principal) -> ColumnElement[bool]:
    """The cases a principal may see: admins all, caseworkers and supervisors their offices', anyone else none."""
    if principal.role is Role.ADMIN:
        return true()
    if principal.role in (Role.CASEWORKER, Role.SUPERVISOR) and principal.offices:
        return Case.office_code.in_(sorted(principal.offices))
    return false()


@dataclass(frozen=True)
class QueueFilter:
    statuses: tuple[str, ...] = CaseStatus.ACTIVE
    programs: tuple[str, ...] = ()
    priorities: tuple[int, ...] = ()
    due_before: dt.date | None = None
    assignee: str | None = None
    unassigned: bool = False


@dataclass(frozen=True)
class QueuePosition:
    """Where a page ended, in the queue's order (priority descending, due date, id)."""

    priority: int
    due_date: dt.date
    case_id: uuid.UUID


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------------------------------ cases

    async def visible_case(self, principal: Principal, case_id: uuid.UUID) -> Case | None:
        query = select(Case).where(Case.id == case_id, case_scope(principal)).execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def case_history(self, case_id: uuid.UUID) -> Sequence[CaseEntry]:
        query = select(CaseEntry).where(CaseEntry.case_id == case_id).order_by(CaseEntry.id)
        return (await self.session.execute(query)).scalars().all()

    # ------------------------------------------------------------------------------------------ the queue

    async def queue_page(
        self, office_code: str, filters: QueueFilter, after: QueuePosition | None, limit: int
    ) -> Sequence[Case]:
        query: Select[Case] = select(Case).where(Case.office_code == office_code, Case.status.in_(filters.statuses))
        if filters.programs:
            query = query.where(Case.program_code.in_(filters.programs))
        if filters.priorities:
            query = query.where(Case.priority.in_(filters.priorities))
        if filters.due_before is not None:
            query = query.where(Case.due_date < filters.due_before)
        if filters.assignee is not None:
            query = query.where(Case.assignee == filters.assignee)
        if filters.unassigned:
            query = query.where(Case.assignee.is_(None))
        if after is not None:
            # Keyset pagination: strictly after the last row of the previous page, in the same order.
            query = query.where(
                or_(
                    Case.priority < after.priority,
                    and_(Case.priority == after.priority, Case.due_date > after.due_date),
                    and_(Case.priority == after.priority, Case.due_date == after.due_date, Case.id > after.case_id),
                )
            )
        query = query.order_by(Case.priority.desc(), Case.due_date, Case.id).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    # ------------------------------------------------------------------------------------------ offices

    async def all_offices(self) -> Sequence[Office]:
        return (await self.session.execute(select(Office).order_by(Office.code))).scalars().all()

    async def office(self, code: str) -> Office | None:
        return await self.session.get(Office, code)

    async def office_loads(self) -> dict[str, tuple[int, float]]:
        """Per office: open cases and their weighted load (every active case counts by its case weight)."""
        query = (
            select(Case.office_code, func.count(), func.coalesce(func.sum(Case.case_weight), 0.0))
            .where(Case.status.in_(CaseStatus.ACTIVE))
            .group_by(Case.office_code)
        )
        return {row[0]: (int(row[1]), float(row[2])) for row in await self.session.execute(query)}

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID) -> ApplicationRecord | None:
        # FOR UPDATE (PostgreSQL): two consumers of one application serialise here. SQLite's writer lock does the same.
        query = select(ApplicationRecord).where(ApplicationRecord.application_id == application_id).with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def cases_of_application(self, application_id: uuid.UUID) -> Sequence[Case]:
        query = select(Case).where(Case.application_id == application_id).order_by(Case.program_code).with_for_update()
        return (await self.session.execute(query)).scalars().all()

    # ------------------------------------------------------------------------------------------ case writes

    async def claim(self, case_id: uuid.UUID, version: int, assignee: str, now: dt.datetime) -> bool:
        """Take an open, unassigned case in one conditional UPDATE; False when someone else got there first."""
        result = await self.session.execute(
            update(Case)
            .where(
                Case.id == case_id,
                Case.status == CaseStatus.OPEN,
                Case.assignee.is_(None),
                Case.version == version,
            )
            .values(
                assignee=assignee,
                assigned_at=now,
                status=CaseStatus.ASSIGNED,
                updated_at=now,
                version=Case.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def add_entry(self, case: Case, actor: str, action: str, at: dt.datetime, **details: object) -> CaseEntry:
        entry = CaseEntry(case_id=case.id, at=at, actor=actor, action=action, details=details)
        self.session.add(entry)
        return entry

    # ------------------------------------------------------------------------------------------ SLA timer

    async def breach_candidates(self, due_before: dt.date, limit: int = 500) -> Sequence[uuid.UUID]:
        """Running cases (not paused) due before ``due_before`` whose breach for that due date is not recorded yet."""
        recorded = exists().where(SlaBreach.case_id == Case.id, SlaBreach.due_date == Case.due_date)
        query = (
            select(Case.id)
            .where(Case.status.in_((CaseStatus.OPEN, CaseStatus.ASSIGNED)), Case.due_date < due_before, ~recorded)
            .order_by(Case.due_date, Case.id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def case_for_breach(self, case_id: uuid.UUID) -> Case | None:
        """Unscoped, locked and freshly read: the timer decides on the case as it is now."""
        query = select(Case).where(Case.id == case_id).with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def running_cases_due_by(self, horizon: dt.date) -> Sequence[Case]:
        query = select(Case).where(Case.status.in_((CaseStatus.OPEN, CaseStatus.ASSIGNED)), Case.due_date <= horizon)
        return (await self.session.execute(query)).scalars().all()

    async def active_cases_by_office_and_department(self) -> dict[tuple[str, str], int]:
        query = (
            select(Case.office_code, Case.department, func.count())
            .where(Case.status.in_(CaseStatus.ACTIVE))
            .group_by(Case.office_code, Case.department)
        )
        return {(row[0], row[1]): int(row[2]) for row in await self.session.execute(query)}

    async def breach_count(self, case_id: uuid.UUID) -> int:
        return int(await self.session.scalar(select(func.count()).where(SlaBreach.case_id == case_id)) or 0)

    # ------------------------------------------------------------------------------------------ statistics

    async def cases_for_capacity(self, office_codes: Sequence[str] | None, since: dt.date) -> Sequence[Case]:
        """Work cases (not automatic grants) that are active, or arrived or were decided in the window."""
        query = select(Case).where(
            Case.automatic.is_(False),
            or_(Case.status.in_(CaseStatus.ACTIVE), Case.routed_on >= since, Case.decided_on >= since),
        )
        if office_codes is not None:
            query = query.where(Case.office_code.in_(office_codes))
        return (await self.session.execute(query)).scalars().all()

    async def cases_for_open_data(self) -> Sequence[Any]:
        """The few columns open data aggregates (rows with attribute access), not whole cases."""
        query = select(
            Case.routed_on,
            Case.district_code,
            Case.department,
            Case.status,
            Case.decision,
            Case.automatic,
            Case.decided_on,
            Case.due_date,
            Case.breached_on,
        )
        return (await self.session.execute(query)).all()

    # ------------------------------------------------------------------------------------------ audit


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]
