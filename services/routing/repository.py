"""Every query of the routing service. Reads of cases take the caller and are scoped to the offices they work in,
so a case of another office is simply not found; the unscoped lookups are for event handlers and the SLA timer,
which act on behalf of no caller."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends
from sqlalchemy import ColumnElement, Table, and_, case, event, exists, false, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, make_transient_to_detached

from services.routing.models import (
    APPLICATION,
    ApplicationRecord,
    Case,
    CaseEntry,
    CaseStatus,
    HouseholdCase,
    HouseholdCaseStatus,
    HouseholdConference,
    HouseholdEntry,
    HouseholdFollowUp,
    HouseholdMember,
    Offer,
    Offering,
    Office,
    Referral,
    ReferralStatus,
    ResidentConsents,
    ResidentErasure,
    ResidentFeedback,
    ResidentHousehold,
    SlaBreach,
)
from services.routing.schemas import QueueSort
from shared.auth import Principal, Role
from shared.db import execute_rows, execute_rows_sync, get_unflushed, hold_loaded, note_absent, pending_rows
from shared.deps import SessionDep, WriteSessionDep

# What a consumer's transaction loaded for its events (session.info): see Repository.load_for_cases.
_LOCKED = "routing_locked_rows"
_CASES_OF_APPLICATIONS = "routing_loaded_cases"
# The offices and their loads as a consumer's transaction routes its cases (services.routing.cases.router_of).
ROUTER_KEY = "routing_router"
# The history entries a consumer's transaction keeps aside to write at its end (see Repository.keep_entries_aside).
_KEPT_ENTRIES = "routing_kept_entries"
# The cases a consumer's transaction makes, kept aside to write in one INSERT (see Repository.keep_new_cases_aside).
_NEW_CASES = "routing_new_cases"


# Made once: a statement used again keeps its cache key.
@dataclass(frozen=True, slots=True)
class ActiveCaseBrief:
    """What the household rule reads of an active case (:meth:`Repository.active_cases_in_brief`)."""

    resident_id: uuid.UUID
    department: str
    vulnerability: list[str]
    application_id: uuid.UUID | None


_INSERT_ENTRIES = insert(cast(Table, CaseEntry.__table__))
_INSERT_CASES = insert(cast(Table, Case.__table__))


def _case_columns() -> tuple[tuple[str, Any], ...]:
    """Each attribute of a case with the value a new case takes when it is not set (the column's default, else
    NULL): a case kept aside is written with every column (one statement for rows set differently)."""
    columns = []
    for column in cast(Table, Case.__table__).columns:
        default = column.default
        if default is not None and not default.is_scalar:
            raise TypeError(f"cases.{column.key}: only a constant default is written for a case kept aside")
        columns.append((column.key, getattr(default, "arg", None)))
    return tuple(columns)


_CASE_COLUMNS = _case_columns()
# What the ORM gives a new row's version column (version_id_col) on its INSERT.
_FIRST_VERSION = 1


@event.listens_for(Session, "before_commit")
def _no_entry_kept_unwritten(session: Session) -> None:
    """No history entry (nor new case) kept aside is lost: a transaction that commits with some unwritten fails."""
    if session.in_nested_transaction():  # a savepoint's release: not yet
        return
    if session.info.get(_KEPT_ENTRIES):
        raise RuntimeError("case history entries kept aside were not written before the commit")
    if session.info.get(_NEW_CASES):
        raise RuntimeError("new cases kept aside were not written before the commit")


def _write_new_cases(session: Session, *, attach: bool) -> None:
    """Write the new cases kept aside (:meth:`Repository.keep_new_cases_aside`) in one INSERT. ``attach``: each then
    joins the session as if it had been read (the transaction's later changes to it are UPDATEs, and a query finds
    it in the identity map), for a write before the transaction's end."""
    cases: list[Case] | None = session.info.get(_NEW_CASES)
    if not cases:
        return
    if session.in_nested_transaction():
        # Written now they would go with the savepoint's rollback while their events stand.
        raise RuntimeError("new cases kept aside before a savepoint are to be written before it begins")
    session.info[_NEW_CASES] = []
    rows = []
    for new in cases:
        new.version = _FIRST_VERSION
        values = new.__dict__
        rows.append({key: values.get(key, default) for key, default in _CASE_COLUMNS})
    execute_rows_sync(session.connection(), _INSERT_CASES, rows)
    if attach:
        for new, row in zip(cases, rows, strict=True):
            for key, value in row.items():
                if key not in new.__dict__:
                    setattr(new, key, value)  # nothing left to load: a lazy load would fail (asyncio)
            make_transient_to_detached(new)
            session.add(new)


def _new_cases_first(state: ORMExecuteState) -> None:
    """Before any statement of the session, the new cases kept aside are written (what autoflush does for the rows
    added to it): a query finds them, no row referring to them comes before them."""
    _write_new_cases(state.session, attach=True)


def _new_cases_before_flush(session: Session, *_: Any) -> None:
    _write_new_cases(session, attach=True)


def case_scope(principal: Principal) -> ColumnElement[bool]:
    """The cases a principal may see: admins all, caseworkers and supervisors their offices', anyone else none."""
    if principal.role is Role.ADMIN:
        return true()
    if principal.role in (Role.CASEWORKER, Role.SUPERVISOR) and principal.offices:
        return Case.office_code.in_(sorted(principal.offices))
    return false()


def referral_scope(principal: Principal) -> ColumnElement[bool]:
    """The referrals a principal may see: a partner its own, staff those of their offices' cases, admins all."""
    if principal.role is Role.ADMIN:
        return true()
    if principal.role is Role.PARTNER and principal.partner_id:
        return Referral.partner_id == principal.partner_id
    if principal.role in (Role.CASEWORKER, Role.SUPERVISOR) and principal.offices:
        return Referral.case_id.in_(select(Case.id).where(Case.office_code.in_(sorted(principal.offices))))
    return false()


def household_scope(principal: Principal) -> ColumnElement[bool]:
    """The household cases a principal may see whole: admins all, staff of the integrated case-management office
    holding it. A department's staff see only that one exists and who leads it (on their case), never the case."""
    if principal.role is Role.ADMIN:
        return true()
    if principal.role in (Role.CASEWORKER, Role.SUPERVISOR) and principal.offices:
        return HouseholdCase.office_code.in_(sorted(principal.offices))
    return false()


@dataclass(frozen=True)
class QueueFilter:
    statuses: tuple[str, ...] = CaseStatus.ACTIVE
    programs: tuple[str, ...] = ()
    priorities: tuple[int, ...] = ()
    due_before: dt.date | None = None
    assignee: str | None = None
    unassigned: bool = False


# Each order of the queue: the case's keys, each ascending or descending (True), the id last so that no two cases
# tie and keyset pagination visits each case once.
QUEUE_ORDERS: dict[QueueSort, tuple[tuple[str, bool], ...]] = {
    QueueSort.URGENCY: (("priority", True), ("due_date", False), ("id", False)),
    QueueSort.DUE: (("due_date", False), ("priority", True), ("id", False)),
    QueueSort.NEWEST: (("created_at", True), ("id", True)),
}

QueueKey = int | dt.date | dt.datetime | uuid.UUID


@dataclass(frozen=True)
class QueuePosition:
    """Where a page ended: the order it was read in, and the last case's values of that order's keys."""

    sort: QueueSort
    keys: tuple[QueueKey, ...]

    @classmethod
    def of(cls, case: Case, sort: QueueSort) -> QueuePosition:
        return cls(sort, tuple(getattr(case, name) for name, _ in QUEUE_ORDERS[sort]))


def queue_order(sort: QueueSort) -> list[tuple[Any, bool]]:
    """The order's columns of the cases table, each with whether it runs descending."""
    return [(getattr(Case, name), descending) for name, descending in QUEUE_ORDERS[sort]]


def after_position(position: QueuePosition) -> ColumnElement[bool]:
    """Strictly after ``position`` in its order: past it on the first key, or equal on the first and past it on the
    second, and so on (keyset pagination)."""
    order = queue_order(position.sort)
    alternatives = []
    for i, ((column, descending), value) in enumerate(zip(order, position.keys, strict=True)):
        equal_before = [c == v for (c, _), v in zip(order[:i], position.keys[:i], strict=True)]
        alternatives.append(and_(*equal_before, column < value if descending else column > value))
    return or_(*alternatives)


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
        self, office_code: str, filters: QueueFilter, sort: QueueSort, after: QueuePosition | None, limit: int
    ) -> list[Case] | None:
        """The office's cases that pass ``filters``, in ``sort``'s order after ``after``; None when there is no such
        office. One statement: the office outer-joined to its cases."""
        on = [Case.office_code == Office.code, Case.status.in_(filters.statuses)]
        if filters.programs:
            on.append(Case.program_code.in_(filters.programs))
        if filters.priorities:
            on.append(Case.priority.in_(filters.priorities))
        if filters.due_before is not None:
            on.append(Case.due_date < filters.due_before)
        if filters.assignee is not None:
            on.append(Case.assignee == filters.assignee)
        if filters.unassigned:
            on.append(Case.assignee.is_(None))
        if after is not None:
            # Keyset pagination: strictly after the last row of the previous page, in the same order.
            on.append(after_position(after))
        query = (
            select(Office.code, Case)
            .outerjoin(Case, and_(*on))
            .where(Office.code == office_code)
            .order_by(*(c.desc() if descending else c for c, descending in queue_order(sort)))
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        if not rows:
            return None
        return [case for _, case in rows if case is not None]  # one row without a case: the office has none

    # ------------------------------------------------------------------------------------------ offices

    async def all_offices(self) -> Sequence[Office]:
        return (await self.session.execute(select(Office).order_by(Office.code))).scalars().all()

    async def office(self, code: str) -> Office | None:
        return await self.session.get(Office, code)

    async def office_loads(self) -> dict[str, tuple[int, float]]:
        """Per office: open cases and their weighted load (every active case counts by its case weight, and so does
        every running household case at its integrated case-management office)."""
        query = (
            select(Case.office_code, func.count(), func.coalesce(func.sum(Case.case_weight), 0.0))
            .where(Case.status.in_(CaseStatus.ACTIVE))
            .group_by(Case.office_code)
        )
        loads = {row[0]: (int(row[1]), float(row[2])) for row in await self.session.execute(query)}
        households = (
            select(HouseholdCase.office_code, func.count(), func.coalesce(func.sum(HouseholdCase.case_weight), 0.0))
            .where(HouseholdCase.status.in_(HouseholdCaseStatus.RUNNING))
            .group_by(HouseholdCase.office_code)
        )
        for code, count, weighted in await self.session.execute(households):
            before = loads.get(code, (0, 0.0))
            loads[code] = (before[0] + int(count), before[1] + float(weighted))
        return loads

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID) -> ApplicationRecord | None:
        # FOR UPDATE (PostgreSQL): two consumers of one application serialise here. SQLite's writer lock does the same.
        if (ApplicationRecord, application_id) in self.session.info.get(_LOCKED, ()):
            return await get_unflushed(self.session, ApplicationRecord, application_id)
        query = select(ApplicationRecord).where(ApplicationRecord.application_id == application_id).with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def cases_of_application(self, application_id: uuid.UUID) -> Sequence[Case]:
        loaded: dict[uuid.UUID, list[Case]] = self.session.info.get(_CASES_OF_APPLICATIONS, {})
        if application_id in loaded:
            # Those the transaction loaded (locked) and those it added since (a savepoint's rollback takes these back).
            added = [c for c in pending_rows(self.session, Case) if c.application_id == application_id]
            cases = [c for c in loaded[application_id] if c not in self.session.deleted] + added
            return sorted(cases, key=lambda c: c.program_code)
        query = select(Case).where(Case.application_id == application_id).order_by(Case.program_code).with_for_update()
        return (await self.session.execute(query)).scalars().all()

    async def load_for_cases(
        self, application_ids: set[uuid.UUID], resident_ids: set[uuid.UUID], housed: set[uuid.UUID]
    ) -> None:
        """Unscoped (the cases consumer): what a transaction's events will look up, in a query per kind at its start —
        the applications they name and their cases (locked), whether their residents were erased, and the
        households of those whose events tell of one (locked) — what is not there noted as absent
        (shared.db.note_absent), so that each event's lookups ask the database nothing more. The rows are held to
        the end of the transaction. Not within a savepoint (a lock taken there would go with its rollback)."""
        if self.session.in_nested_transaction():
            return
        hold_loaded(self.session)  # the identity map would let go of a row nothing else refers to, and ask again
        locked: set[tuple[type[Any], uuid.UUID]] = self.session.info.setdefault(_LOCKED, set())
        with self.session.no_autoflush:
            if application_ids:
                records = select(ApplicationRecord).where(ApplicationRecord.application_id.in_(application_ids))
                found = {
                    r.application_id
                    for r in await self.session.scalars(
                        records.order_by(ApplicationRecord.application_id).with_for_update()
                    )
                }
                note_absent(self.session, ApplicationRecord, application_ids - found)
                locked.update((ApplicationRecord, i) for i in application_ids)
                cases: dict[uuid.UUID, list[Case]] = {i: [] for i in application_ids}
                query = select(Case).where(Case.application_id.in_(application_ids)).order_by(Case.id)
                for case in await self.session.scalars(query.with_for_update()):
                    assert case.application_id is not None
                    cases[case.application_id].append(case)
                self.session.info.setdefault(_CASES_OF_APPLICATIONS, {}).update(cases)
            if resident_ids:
                erasures = select(ResidentErasure).where(ResidentErasure.resident_id.in_(resident_ids))
                found = {e.resident_id for e in await self.session.scalars(erasures)}
                note_absent(self.session, ResidentErasure, resident_ids - found)
            if housed:
                households = select(ResidentHousehold).where(ResidentHousehold.resident_id.in_(housed))
                households = households.order_by(ResidentHousehold.resident_id).with_for_update()
                found = {h.resident_id for h in await self.session.scalars(households)}
                note_absent(self.session, ResidentHousehold, housed - found)
                locked.update((ResidentHousehold, i) for i in housed)

    def forget_loaded_cases(self) -> None:
        """Cases were destroyed in this transaction (an erasure): they, and the offices' loads, are read again."""
        self.session.info.pop(_CASES_OF_APPLICATIONS, None)
        self.session.info.pop(ROUTER_KEY, None)

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

    def add_entry(self, case: Case, actor: str, action: str, at: dt.datetime, **details: object) -> None:
        """A line of the case's history. In a transaction that keeps its entries aside (:meth:`keep_entries_aside`),
        written with the others at its end; otherwise (and within a savepoint) added to the session."""
        values = {"case_id": case.id, "at": at, "actor": actor, "action": action, "details": details}
        kept: list[dict[str, Any]] | None = self.session.info.get(_KEPT_ENTRIES)
        if kept is not None:
            if not self.session.in_nested_transaction():
                kept.append(values)
                return
            if kept:
                # Written now they would go with the savepoint's rollback; left aside, after the savepoint's own.
                raise RuntimeError("entries kept aside before a savepoint are to be written before it begins")
        self.session.add(CaseEntry(**values))

    def add_case(self, case: Case) -> None:
        """A case new in this transaction. In a transaction that keeps them aside (:meth:`keep_new_cases_aside`),
        written with the others in one INSERT; otherwise (and within a savepoint) added to the session."""
        cases: list[Case] | None = self.session.info.get(_NEW_CASES)
        if cases is None or self.session.in_nested_transaction():
            self.session.add(case)
            return
        cases.append(case)
        # Found by a later event of the transaction about its application (cases_of_application), written or not.
        loaded: dict[uuid.UUID, list[Case]] | None = self.session.info.get(_CASES_OF_APPLICATIONS)
        if loaded is not None and case.application_id in loaded:
            loaded[case.application_id].append(case)

    def keep_new_cases_aside(self) -> None:
        """From now on in this transaction, keep the new cases (:meth:`add_case`, outside savepoints) aside as plain
        objects, not in the session, to write them in one core INSERT: at the latest at its end
        (:meth:`write_new_cases`, to reach before the commit: a commit with cases left unwritten fails), and before
        any earlier statement of the session (a query that must find them, a row that refers to them), when each then
        joins the session as if read. For a consumer's transaction, that makes a case or more per event: through
        the ORM's unit of work (add, flush) a case costs more than the statement. A later event of the transaction
        finds them among its application's cases (:meth:`cases_of_application`), as before."""
        if self.session.in_nested_transaction() or _NEW_CASES in self.session.info:
            return
        self.session.info[_NEW_CASES] = []
        sync = self.session.sync_session
        event.listen(sync, "do_orm_execute", _new_cases_first)
        event.listen(sync, "before_flush", _new_cases_before_flush)

    async def write_new_cases(self) -> None:
        """Write the new cases kept aside, at the end of the transaction (the cases consumer's ``finish``), when no
        event changes them any more: they stay out of the session (a query reads them as it reads any case), and the
        transaction's lookups of an application's cases go to the database from here on."""
        if self.session.info.get(_NEW_CASES):
            self.session.info.pop(_CASES_OF_APPLICATIONS, None)
            await self.session.run_sync(_write_new_cases, attach=False)

    def entry(self, case: Case, actor: str, action: str, at: dt.datetime, **details: object) -> CaseEntry:
        """A line of the case's history added to the session at once, for a caller that shows it."""
        entry = CaseEntry(case_id=case.id, at=at, actor=actor, action=action, details=details)
        self.session.add(entry)
        return entry

    def keep_entries_aside(self) -> None:
        """From now on in this transaction, keep the history entries added (outside savepoints) aside, to write them
        in one core INSERT (:meth:`write_entries`, to reach before the commit: a commit with entries left unwritten
        fails). For a consumer's transaction, that adds an entry or more per case: through the ORM's unit of work an
        entry costs more than the statement. Within a savepoint an entry is added to the session at once, so that
        the savepoint's rollback takes it back (a consumer applies a failed batch's events in a savepoint each,
        ``Consumer._apply_apart``, none of them outside one before)."""
        if not self.session.in_nested_transaction():
            self.session.info.setdefault(_KEPT_ENTRIES, [])

    async def write_entries(self) -> None:
        """Write the entries kept aside, after what the session holds (their cases, new in this transaction): at the
        end of the transaction (the cases consumer's ``finish``), and before a statement that must find them (an
        erasure deleting a resident's cases)."""
        kept: list[dict[str, Any]] | None = self.session.info.get(_KEPT_ENTRIES)
        if kept:
            rows = list(kept)
            kept.clear()
            await self.session.run_sync(_write_new_cases, attach=True)  # what they are of, first
            await self.session.flush()
            await execute_rows(self.session, _INSERT_ENTRIES, rows)

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
        """The few columns open data aggregates (rows with attribute access), not whole cases: applications' cases
        (an outreach visit is no case a resident brought)."""
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
        ).where(Case.kind == APPLICATION)
        return (await self.session.execute(query)).all()

    # ------------------------------------------------------------------------------------------ offers and outreach
    # Unscoped: for the event handlers, the outreach timer and the aggregate figures.

    async def offer(self, opportunity_id: uuid.UUID, *, for_update: bool = False) -> Offer | None:
        query = select(Offer).where(Offer.opportunity_id == opportunity_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def outreach_candidates(self, late_before: dt.date, limit: int = 500) -> Sequence[uuid.UUID]:
        """Offers still unanswered whose resident is one to visit and whose time to answer has run out."""
        query = (
            select(Offer.opportunity_id)
            .where(
                Offer.status == "offered",
                Offer.outreach_due_on < late_before,
                Offer.outreach_case_id.is_(None),
            )
            .order_by(Offer.outreach_due_on, Offer.opportunity_id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def case_for_update(self, case_id: uuid.UUID) -> Case | None:
        query = select(Case).where(Case.id == case_id).with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def standing_offers_by_office(self, office_codes: Sequence[str] | None) -> dict[tuple[str, str, str], int]:
        """(office, program, department) -> offers still unanswered."""
        query = (
            select(Offer.office_code, Offer.program_code, Offer.department, func.count())
            .where(Offer.status == "offered", Offer.office_code.is_not(None))
            .group_by(Offer.office_code, Offer.program_code, Offer.department)
        )
        if office_codes is not None:
            query = query.where(Offer.office_code.in_(office_codes))
        return {(str(row[0]), row[1], row[2]): int(row[3]) for row in await self.session.execute(query)}

    async def take_up(self) -> Sequence[Any]:
        """Per program and district: residents found eligible (offers), those who applied for the program since (they
        accepted the offer, or an application of theirs has a case of it), and those granted it since."""
        after_offer = and_(
            Case.kind == APPLICATION,
            Case.resident_id == Offer.resident_id,
            Case.program_code == Offer.program_code,
            Case.routed_on >= Offer.offered_on,
        )
        applied = or_(Offer.status == "accepted", exists().where(after_offer))
        granted = exists().where(after_offer, Case.decision == "approved")
        query = (
            select(
                Offer.program_code,
                func.min(Offer.department).label("department"),
                Offer.district_code,
                func.count().label("found_eligible"),
                func.sum(case((applied, 1), else_=0)).label("applied"),
                func.sum(case((granted, 1), else_=0)).label("granted"),
            )
            .where(Offer.district_code != "")
            .group_by(Offer.program_code, Offer.district_code)
            .order_by(Offer.program_code, Offer.district_code)
        )
        rows: Sequence[Any] = (await self.session.execute(query)).all()
        return rows

    async def answered_offers(self) -> dict[str, tuple[int, int, str]]:
        """Per program: (answered offers — accepted, declined or expired —, accepted ones, department)."""
        query = (
            select(
                Offer.program_code,
                func.count(),
                func.sum(case((Offer.status == "accepted", 1), else_=0)),
                func.min(Offer.department),
            )
            .where(Offer.status != "offered")
            .group_by(Offer.program_code)
        )
        return {row[0]: (int(row[1]), int(row[2] or 0), str(row[3])) for row in await self.session.execute(query)}

    async def program_weights(self) -> dict[str, float]:
        """Each program's case weight, as its cases carry it."""
        query = select(Case.program_code, func.max(Case.case_weight)).where(Case.kind == APPLICATION)
        return {row[0]: float(row[1]) for row in await self.session.execute(query.group_by(Case.program_code))}

    async def referrals_for_open_data(self) -> Sequence[Any]:
        query = select(Referral.referred_on, Referral.service_type, Referral.status)
        return (await self.session.execute(query)).all()

    async def cases_for_feedback_data(self) -> Sequence[Any]:
        """Each application's case's office, program and decision, with how its application was made and rated (rows
        with attribute access): the channel is the application's, or, when routing never heard it, the rating's."""
        query = (
            select(
                Case.office_code,
                Case.program_code,
                Case.decision,
                func.coalesce(ApplicationRecord.channel, ResidentFeedback.channel).label("channel"),
                ResidentFeedback.score,
            )
            .outerjoin(ApplicationRecord, ApplicationRecord.application_id == Case.application_id)
            .outerjoin(ResidentFeedback, ResidentFeedback.application_id == Case.application_id)
            .where(Case.kind == APPLICATION)
        )
        return (await self.session.execute(query)).all()

    # ------------------------------------------------------------------------------------------ what intake told

    async def resident_consents(self, resident_id: uuid.UUID) -> ResidentConsents | None:
        return await self.session.get(ResidentConsents, resident_id)

    async def feedback(self, application_id: uuid.UUID) -> ResidentFeedback | None:
        return await self.session.get(ResidentFeedback, application_id)

    # ------------------------------------------------------------------------------------------ offerings

    async def partner_offerings(self, partner_id: str) -> Sequence[Offering]:
        query = select(Offering).where(Offering.partner_id == partner_id).order_by(Offering.code)
        return (await self.session.execute(query)).scalars().all()

    async def partner_offering(self, partner_id: str, code: str, *, for_update: bool = False) -> Offering | None:
        query = select(Offering).where(Offering.partner_id == partner_id, Offering.code == code)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def offering(self, offering_id: uuid.UUID) -> Offering | None:
        """Freshly read: ``places_taken`` changes by conditional UPDATEs the session does not track."""
        query = select(Offering).where(Offering.id == offering_id).execution_options(populate_existing=True)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def offerings_with_room(self, service_type: str | None) -> Sequence[Offering]:
        """Offerings with a free place (of one service type); the caller filters by district and language, which
        are JSON lists."""
        query = select(Offering).where(Offering.places_taken < Offering.capacity)
        if service_type is not None:
            query = query.where(Offering.service_type == service_type)
        return (await self.session.execute(query.order_by(Offering.partner_id, Offering.code))).scalars().all()

    async def take_place(self, offering_id: uuid.UUID, now: dt.datetime) -> bool:
        """Hold one place in one conditional UPDATE; False when the offering is full (two referrals racing for the
        last place: exactly one gets it)."""
        result = await self.session.execute(
            update(Offering)
            .where(Offering.id == offering_id, Offering.places_taken < Offering.capacity)
            .values(places_taken=Offering.places_taken + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def give_back_place(self, offering_id: uuid.UUID, now: dt.datetime) -> None:
        await self.session.execute(
            update(Offering)
            .where(Offering.id == offering_id, Offering.places_taken > 0)
            .values(places_taken=Offering.places_taken - 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    # ------------------------------------------------------------------------------------------ referrals

    async def visible_referral(self, principal: Principal, referral_id: uuid.UUID) -> Referral | None:
        query = (
            select(Referral)
            .where(Referral.id == referral_id, referral_scope(principal))
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def referrals(self, principal: Principal, status: str | None, limit: int) -> Sequence[Referral]:
        """The caller's referrals (a partner's own), newest first."""
        query = select(Referral).where(referral_scope(principal))
        if status is not None:
            query = query.where(Referral.status == status)
        query = query.order_by(Referral.created_at.desc(), Referral.id).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def referrals_of_case(self, case_id: uuid.UUID) -> Sequence[Referral]:
        query = select(Referral).where(Referral.case_id == case_id).order_by(Referral.created_at, Referral.id)
        return (await self.session.execute(query)).scalars().all()

    async def case_of_referral(self, referral: Referral) -> Case:
        """Unscoped: a partner's answer is written into the history of a case the partner itself cannot see."""
        case = await self.session.get(Case, referral.case_id)
        assert case is not None, "a referral's case is never deleted"
        return case

    async def holding_referral(self, case_id: uuid.UUID, offering_id: uuid.UUID) -> Referral | None:
        query = select(Referral).where(
            Referral.case_id == case_id,
            Referral.offering_id == offering_id,
            Referral.status.in_(ReferralStatus.HOLDING),
        )
        return (await self.session.execute(query.limit(1))).scalar_one_or_none()

    # ------------------------------------------------------------------------------------------ household cases

    async def visible_household_case(self, principal: Principal, household_case_id: uuid.UUID) -> HouseholdCase | None:
        query = (
            select(HouseholdCase)
            .where(HouseholdCase.id == household_case_id, household_scope(principal))
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def household_cases(
        self, principal: Principal, office_code: str | None, statuses: Sequence[str], limit: int
    ) -> Sequence[HouseholdCase]:
        query = select(HouseholdCase).where(household_scope(principal), HouseholdCase.status.in_(statuses))
        if office_code is not None:
            query = query.where(HouseholdCase.office_code == office_code)
        query = query.order_by(HouseholdCase.escalated.desc(), HouseholdCase.opened_at, HouseholdCase.id).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def running_household_of(self, resident_ids: Sequence[uuid.UUID]) -> HouseholdCase | None:
        """Unscoped: the running household case one of these residents is a member of (at most one each)."""
        query = (
            select(HouseholdCase)
            .join(HouseholdMember, HouseholdMember.household_case_id == HouseholdCase.id)
            .where(HouseholdMember.open_resident_id.in_(list(resident_ids)))
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def household_of_resident(self, resident_id: uuid.UUID) -> HouseholdCase | None:
        """Unscoped: the resident's running household case, else their latest closed one."""
        query = (
            select(HouseholdCase)
            .join(HouseholdMember, HouseholdMember.household_case_id == HouseholdCase.id)
            .where(HouseholdMember.resident_id == resident_id)
            .order_by(HouseholdCase.closed_at.is_(None).desc(), HouseholdCase.opened_at.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def note_household(self, resident_id: uuid.UUID, household_id: uuid.UUID | None, at: dt.datetime) -> None:
        """Unscoped (event handlers): the registered household the resident lives in, as of the event at ``at`` (an
        older event does not undo a newer one; a newer one without a household says the registry lists none)."""
        if (ResidentHousehold, resident_id) in self.session.info.get(_LOCKED, ()):
            row = await get_unflushed(self.session, ResidentHousehold, resident_id)
        else:
            row = await self.session.get(ResidentHousehold, resident_id, with_for_update=True)
        if row is not None and at < row.seen_at:
            return
        # Written with the rest of the transaction (what reads households next writes it first: autoflush); a row
        # removed at once, so that no lookup by its key finds it.
        if household_id is None:
            if row is not None:
                await self.session.delete(row)
                await self.session.flush()
        elif row is None:
            self.session.add(ResidentHousehold(resident_id=resident_id, household_id=household_id, seen_at=at))
        else:
            row.household_id, row.seen_at = household_id, at

    async def housemates(self, resident_id: uuid.UUID) -> list[uuid.UUID]:
        """Unscoped: the residents registered in the resident's household (the resident first); only the resident
        when routing knows no household of theirs."""
        mine = select(ResidentHousehold.household_id).where(ResidentHousehold.resident_id == resident_id)
        query = (
            select(ResidentHousehold.resident_id)
            .where(ResidentHousehold.household_id == mine.scalar_subquery())
            .order_by(ResidentHousehold.seen_at, ResidentHousehold.resident_id)
        )
        others = [rid for rid in (await self.session.execute(query)).scalars().all() if rid != resident_id]
        return [resident_id, *others]

    async def housemates_of(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Unscoped: :meth:`housemates` of each of these residents, in one query."""
        theirs = select(ResidentHousehold.household_id).where(ResidentHousehold.resident_id.in_(list(resident_ids)))
        query = (
            select(ResidentHousehold.household_id, ResidentHousehold.resident_id)
            .where(ResidentHousehold.household_id.in_(theirs))
            .order_by(ResidentHousehold.seen_at, ResidentHousehold.resident_id)
        )
        household_of: dict[uuid.UUID, uuid.UUID] = {}
        members: dict[uuid.UUID, list[uuid.UUID]] = {}
        for household_id, resident_id in await self.session.execute(query):
            household_of[resident_id] = household_id
            members.setdefault(household_id, []).append(resident_id)
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        for resident_id in resident_ids:
            mine = household_of.get(resident_id)
            others = members[mine] if mine is not None else []
            found[resident_id] = [resident_id, *(r for r in others if r != resident_id)]
        return found

    async def in_running_household(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Unscoped: which of these residents are members of a running household case (see
        :meth:`running_household_of`)."""
        query = (
            select(HouseholdMember.open_resident_id)
            .join(HouseholdCase, HouseholdMember.household_case_id == HouseholdCase.id)
            .where(HouseholdMember.open_resident_id.in_(list(resident_ids)))
        )
        return {r for r in (await self.session.execute(query)).scalars() if r is not None}

    async def household_members(self, household_case_id: uuid.UUID) -> Sequence[HouseholdMember]:
        query = select(HouseholdMember).where(HouseholdMember.household_case_id == household_case_id)
        return (await self.session.execute(query.order_by(HouseholdMember.id))).scalars().all()

    async def household_member_counts(self, household_case_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        query = (
            select(HouseholdMember.household_case_id, func.count())
            .where(HouseholdMember.household_case_id.in_(list(household_case_ids)))
            .group_by(HouseholdMember.household_case_id)
        )
        return {row[0]: int(row[1]) for row in await self.session.execute(query)}

    async def household_history(self, household_case_id: uuid.UUID) -> Sequence[HouseholdEntry]:
        query = select(HouseholdEntry).where(HouseholdEntry.household_case_id == household_case_id)
        return (await self.session.execute(query.order_by(HouseholdEntry.id))).scalars().all()

    def add_household_entry(
        self, household: HouseholdCase, actor: str, action: str, at: dt.datetime, **details: object
    ) -> HouseholdEntry:
        entry = HouseholdEntry(household_case_id=household.id, at=at, actor=actor, action=action, details=details)
        self.session.add(entry)
        return entry

    async def household_follow_ups(self, household_case_id: uuid.UUID) -> Sequence[HouseholdFollowUp]:
        query = select(HouseholdFollowUp).where(HouseholdFollowUp.household_case_id == household_case_id)
        return (
            (await self.session.execute(query.order_by(HouseholdFollowUp.due_date, HouseholdFollowUp.id)))
            .scalars()
            .all()
        )

    async def household_follow_up(
        self, household_case_id: uuid.UUID, follow_up_id: uuid.UUID
    ) -> HouseholdFollowUp | None:
        query = select(HouseholdFollowUp).where(
            HouseholdFollowUp.id == follow_up_id, HouseholdFollowUp.household_case_id == household_case_id
        )
        return (await self.session.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()

    async def household_conferences(self, household_case_id: uuid.UUID) -> Sequence[HouseholdConference]:
        query = select(HouseholdConference).where(HouseholdConference.household_case_id == household_case_id)
        return (
            (await self.session.execute(query.order_by(HouseholdConference.held_on, HouseholdConference.recorded_at)))
            .scalars()
            .all()
        )

    async def cases_of_residents(self, resident_ids: Sequence[uuid.UUID], *, active: bool = False) -> Sequence[Case]:
        """Unscoped: the department cases of these residents (the household case references them, never copies)."""
        query = select(Case).where(Case.resident_id.in_(list(resident_ids)))
        if active:
            query = query.where(Case.status.in_(CaseStatus.ACTIVE))
        return (await self.session.execute(query.order_by(Case.created_at, Case.id))).scalars().all()

    async def active_cases_in_brief(self, resident_ids: Sequence[uuid.UUID]) -> list[ActiveCaseBrief]:
        """Unscoped: what the household rule reads of these residents' active cases, without loading the cases. A
        consumer's batch asks it of every resident it touched: as whole cases (35 columns made into ORM objects) the
        rows of a busy batch took 40-80 ms of CPU with the event loop held."""
        query = select(Case.resident_id, Case.department, Case.vulnerability, Case.application_id).where(
            Case.resident_id.in_(list(resident_ids)), Case.status.in_(CaseStatus.ACTIVE)
        )
        return [ActiveCaseBrief(*row) for row in await self.session.execute(query)]

    async def life_events(self, application_ids: Sequence[uuid.UUID]) -> set[str]:
        query = select(ApplicationRecord.life_event).where(
            ApplicationRecord.application_id.in_(list(application_ids)), ApplicationRecord.life_event.is_not(None)
        )
        return {str(v) for v in (await self.session.execute(query)).scalars().all()}

    async def life_events_of(self, application_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The life event of each of these applications that has one (see :meth:`life_events`)."""
        query = select(ApplicationRecord.application_id, ApplicationRecord.life_event).where(
            ApplicationRecord.application_id.in_(list(application_ids)), ApplicationRecord.life_event.is_not(None)
        )
        return {application_id: str(event) for application_id, event in await self.session.execute(query)}

    async def residents_known(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these residents routing knows of (a case or an offer of theirs)."""
        ids = list(resident_ids)
        cases = select(Case.resident_id).where(Case.resident_id.in_(ids))
        offers = select(Offer.resident_id).where(Offer.resident_id.in_(ids))
        return set((await self.session.execute(cases.union(offers))).scalars().all())

    async def applications_of_residents(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        query = select(ApplicationRecord.application_id).where(ApplicationRecord.resident_id.in_(list(resident_ids)))
        return set((await self.session.execute(query)).scalars().all())

    async def offers_of_residents(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        query = select(Offer.opportunity_id).where(Offer.resident_id.in_(list(resident_ids)))
        return set((await self.session.execute(query)).scalars().all())

    async def referrals_of_residents(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        query = select(Referral.id).where(Referral.resident_id.in_(list(resident_ids)))
        return set((await self.session.execute(query)).scalars().all())

    async def missed_follow_ups(self, due_before: dt.date, limit: int = 500) -> Sequence[uuid.UUID]:
        """Follow-ups not done, due before ``due_before``, whose miss is not recorded yet (the timer's)."""
        query = (
            select(HouseholdFollowUp.id)
            .where(
                HouseholdFollowUp.done_at.is_(None),
                HouseholdFollowUp.missed_on.is_(None),
                HouseholdFollowUp.kind == "follow_up",
                HouseholdFollowUp.due_date < due_before,
            )
            .order_by(HouseholdFollowUp.due_date, HouseholdFollowUp.id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def follow_ups_falling_due(
        self, not_late_from: dt.date, today: dt.date, limit: int = 500
    ) -> Sequence[uuid.UUID]:
        """Follow-ups not done that fall due by ``today`` and are not late yet (due on or after ``not_late_from``),
        whose lead was not reminded yet (the timer's)."""
        query = (
            select(HouseholdFollowUp.id)
            .where(
                HouseholdFollowUp.done_at.is_(None),
                HouseholdFollowUp.missed_on.is_(None),
                HouseholdFollowUp.reminded_on.is_(None),
                HouseholdFollowUp.kind == "follow_up",
                HouseholdFollowUp.due_date >= not_late_from,
                HouseholdFollowUp.due_date <= today,
            )
            .order_by(HouseholdFollowUp.due_date, HouseholdFollowUp.id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def follow_up_for_update(self, follow_up_id: uuid.UUID) -> HouseholdFollowUp | None:
        query = (
            select(HouseholdFollowUp)
            .where(HouseholdFollowUp.id == follow_up_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def household_for_update(self, household_case_id: uuid.UUID) -> HouseholdCase | None:
        query = (
            select(HouseholdCase)
            .where(HouseholdCase.id == household_case_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def closure_checks_due(self, today: dt.date, limit: int = 500) -> Sequence[uuid.UUID]:
        """Closed household cases whose check after closure is due and not yet scheduled."""
        query = (
            select(HouseholdCase.id)
            .where(
                HouseholdCase.status == HouseholdCaseStatus.CLOSED,
                HouseholdCase.follow_up_check_on <= today,
                HouseholdCase.follow_up_check_id.is_(None),
            )
            .order_by(HouseholdCase.follow_up_check_on, HouseholdCase.id)
            .limit(limit)
        )
        return (await self.session.execute(query)).scalars().all()

    async def household_counts(self, office_codes: Sequence[str] | None) -> dict[tuple[str, str, str], int]:
        """(office, district, status) -> household cases."""
        query = select(
            HouseholdCase.office_code, HouseholdCase.district_code, HouseholdCase.status, func.count()
        ).group_by(HouseholdCase.office_code, HouseholdCase.district_code, HouseholdCase.status)
        if office_codes is not None:
            query = query.where(HouseholdCase.office_code.in_(office_codes))
        return {(row[0], row[1], row[2]): int(row[3]) for row in await self.session.execute(query)}

    async def households_for_open_data(self) -> Sequence[Any]:
        query = select(
            HouseholdCase.district_code, HouseholdCase.opened_on, HouseholdCase.closed_on, HouseholdCase.outcome
        )
        return (await self.session.execute(query)).all()

    # ------------------------------------------------------------------------------------------ audit


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_write_repository(session: WriteSessionDep) -> Repository:
    return Repository(session)


# For a GET that must write what it shows (a resident's data export, which lists its own read).
WriteRepositoryDep = Annotated[Repository, Depends(get_write_repository)]
