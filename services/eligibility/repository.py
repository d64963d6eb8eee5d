"""Every query of the eligibility service, as methods of one :class:`Repository` bound to the request's or the event
handler's session. Reads a caller makes are scoped to the caller: what the caller may not see is simply not found.
Nothing here commits: the request or the event handler does."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends
from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

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
    ResidentAnswerRow,
    ResidentErasureRow,
    ResidentRow,
    RuleVersionRow,
    ScreeningQuestionRow,
    ScreeningQueueRow,
    ScreeningReviewRow,
    ScreeningRow,
    ScreeningScheduleRow,
)
from services.eligibility.specs import ProgramAttributes, VersionSpec
from shared.auth import Principal, Role
from shared.consumer import WRITE_EVERY
from shared.db import (
    BULK_PIECE,
    bulk_insert,
    dialect_insert,
    execute_rows_sync,
    get_unflushed,
    hold_loaded,
    is_read_only,
    note_absent,
)
from shared.deps import ReadSessionDep, SessionDep, WriteSessionDep

if TYPE_CHECKING:
    import polars as pl

OFFICE_ROLES = (Role.CASEWORKER, Role.SUPERVISOR)
# The residents a transaction found not erased (session.info): see Repository.erased.
_NOT_ERASED = "eligibility_not_erased"
# What a consumer's transaction loaded for its events (session.info): see Repository.load_for_events.
_LOCKED = "eligibility_locked_rows"
_ANSWERS = "eligibility_loaded_answers"
_FACTS = "eligibility_loaded_facts"
_REVISION = "eligibility_loaded_revision"
# The determinations a consumer's transaction keeps aside, as plain rows, to write in one INSERT (session.info): see
# Repository.keep_determinations_aside.
_KEPT_DETERMINATIONS = "eligibility_kept_determinations"
# Made once: a statement used again keeps its cache key.
_INSERT_DETERMINATIONS = insert(cast(Table, DeterminationRow.__table__))


def _write_kept_determinations(session: Session) -> None:
    """Write the determinations kept aside (:meth:`Repository.keep_determinations_aside`) in one INSERT, after what the
    session holds (their applications, new in this transaction)."""
    kept: list[dict[str, Any]] | None = session.info.get(_KEPT_DETERMINATIONS)
    if not kept:
        return
    rows = list(kept)
    kept.clear()
    session.flush()
    execute_rows_sync(session.connection(), _INSERT_DETERMINATIONS, rows)


def _determinations_first(state: ORMExecuteState) -> None:
    """Before a statement that would write what the session holds first (autoflush), the determinations kept aside
    are written too: a query finds them, as it found them when they were added to the session."""
    if state.session.autoflush:
        _write_kept_determinations(state.session)


@event.listens_for(Session, "before_commit")
def _no_determination_kept_unwritten(session: Session) -> None:
    """No determination kept aside is lost: a transaction that commits with some unwritten fails."""
    if not session.in_nested_transaction() and session.info.get(_KEPT_DETERMINATIONS):
        raise RuntimeError("determinations kept aside were not written before the commit")


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
        """As the transaction found it when it loaded what its events look up (the catalogue is never changed in a
        consumer's transaction), else asked."""
        loaded: int | None = self.session.info.get(_REVISION)
        if loaded is not None:
            return loaded
        revision = await self.session.scalar(select(CatalogueStateRow.revision).where(CatalogueStateRow.id == 1))
        return int(revision or 0)

    async def bump_catalogue_revision(self, now: dt.datetime) -> int:
        self.session.info.pop(_REVISION, None)
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

    async def load_for_events(self, application_ids: set[uuid.UUID], resident_ids: set[uuid.UUID]) -> None:
        """Unscoped (the events consumer, and its work ahead): what a transaction's events will look up, in a query
        per kind — the applications they name (locked, in a write transaction) and the residents, whether these
        were erased, what they answered and what departments reported of them, and the catalogue's revision — and
        what is not there noted as absent (shared.db.note_absent), so that each event's lookups ask the database
        nothing more. Not within a savepoint (a lock taken there would go with its rollback)."""
        if self.session.in_nested_transaction():
            return
        lock = not is_read_only(self.session)
        hold_loaded(self.session)
        locked: set[tuple[type[Any], uuid.UUID]] = self.session.info.setdefault(_LOCKED, set())
        with self.session.no_autoflush:
            self.session.info[_REVISION] = await self.catalogue_revision()
            if application_ids:
                query = select(ApplicationRow).where(ApplicationRow.application_id.in_(application_ids))
                if lock:
                    query = query.order_by(ApplicationRow.application_id).with_for_update()
                found = {a.application_id for a in await self.session.scalars(query)}
                note_absent(self.session, ApplicationRow, application_ids - found)
                if lock:
                    locked.update((ApplicationRow, i) for i in application_ids)
            if not resident_ids:
                return
            # Not locked: only a registry's or a consent's change locks its resident (Repository.resident_or_new).
            residents = select(ResidentRow).where(ResidentRow.resident_id.in_(resident_ids))
            found = {r.resident_id for r in await self.session.scalars(residents)}
            note_absent(self.session, ResidentRow, resident_ids - found)
            erasures = select(ResidentErasureRow).where(ResidentErasureRow.resident_id.in_(resident_ids))
            found = {e.resident_id for e in await self.session.scalars(erasures)}
            note_absent(self.session, ResidentErasureRow, resident_ids - found)
            answers = self.session.info.setdefault(_ANSWERS, {})
            answers.update({r: {} for r in resident_ids} | await self.resident_answers_of(list(resident_ids)))
            facts: dict[uuid.UUID, list[DepartmentFactRow]] = {r: [] for r in resident_ids}
            reported = select(DepartmentFactRow).where(DepartmentFactRow.resident_id.in_(resident_ids))
            for fact in await self.session.scalars(reported.order_by(DepartmentFactRow.id)):
                facts[fact.resident_id].append(fact)
            self.session.info.setdefault(_FACTS, {}).update(facts)

    def facts_changed(self, resident_id: uuid.UUID) -> None:
        """The resident's answers or department facts are being written in this transaction: what was loaded of them
        is no longer what they are (they are read again, pending writes with them)."""
        self.session.info.get(_ANSWERS, {}).pop(resident_id, None)
        self.session.info.get(_FACTS, {}).pop(resident_id, None)

    async def resident(self, resident_id: uuid.UUID, *, for_update: bool = False) -> ResidentRow | None:
        if for_update and (ResidentRow, resident_id) not in self.session.info.get(_LOCKED, ()):
            return await self.session.get(ResidentRow, resident_id, with_for_update=True)
        return await get_unflushed(self.session, ResidentRow, resident_id)

    async def resident_or_new(self, resident_id: uuid.UUID) -> ResidentRow:
        row = await self.resident(resident_id, for_update=True)
        if row is None:
            row = ResidentRow(resident_id=resident_id, proactive_screening=False)
            self.session.add(row)
        return row

    async def erased(self, resident_id: uuid.UUID) -> bool:
        """Whether the resident's data was erased here (``resident.erasure_requested``). A resident found not erased is
        remembered for the rest of the transaction (a consumer's batch asks about the same residents event after
        event), until an erasure of theirs is written in it (:meth:`erasing`)."""
        known: set[uuid.UUID] = self.session.info.setdefault(_NOT_ERASED, set())
        if resident_id in known:
            return False
        if await get_unflushed(self.session, ResidentErasureRow, resident_id) is not None:
            return True
        known.add(resident_id)
        return False

    def erasing(self, resident_id: uuid.UUID) -> None:
        """The resident's erasure is being written in this transaction: from here on they are erased."""
        self.session.info.get(_NOT_ERASED, set()).discard(resident_id)
        self.facts_changed(resident_id)

    async def erased_among(self, resident_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not resident_ids:
            return set()
        query = select(ResidentErasureRow.resident_id).where(ResidentErasureRow.resident_id.in_(resident_ids))
        return set((await self.session.scalars(query)).all())

    async def department_facts(self, resident_id: uuid.UUID) -> list[DepartmentFactRow]:
        loaded: list[DepartmentFactRow] | None = self.session.info.get(_FACTS, {}).get(resident_id)
        if loaded is not None:
            return list(loaded)
        query = select(DepartmentFactRow).where(DepartmentFactRow.resident_id == resident_id)
        return list((await self.session.scalars(query)).all())

    async def report_seen(self, report_id: uuid.UUID) -> bool:
        found = await self.session.scalar(
            select(func.count()).select_from(DepartmentFactRow).where(DepartmentFactRow.report_id == report_id)
        )
        return bool(found)

    async def layers_for(self, resident_id: uuid.UUID, declared: dict[str, Any]) -> FactLayers:
        """What is known of the resident for an application: what it declares, over what the resident answered to
        screening questions (once told, never asked again), the registry and the department facts."""
        row = await self.resident(resident_id)
        loaded: dict[str, Any] | None = self.session.info.get(_ANSWERS, {}).get(resident_id)
        answers = (
            dict(loaded) if loaded is not None else (await self.resident_answers_of([resident_id])).get(resident_id, {})
        )
        return FactLayers(
            declared={**answers, **declared},
            registry=registry_of(row),
            reported=reported_of(await self.department_facts(resident_id)),
            consents=(row.consents or {}) if row is not None else {},
        )

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID, *, for_update: bool = False) -> ApplicationRow | None:
        """Unscoped: for event handlers, which act on behalf of no caller. Found among the rows the transaction
        added, or loaded (and locked) for its events, without asking again."""
        if for_update and (ApplicationRow, application_id) not in self.session.info.get(_LOCKED, ()):
            return await self.session.get(ApplicationRow, application_id, with_for_update=True)
        return await get_unflushed(self.session, ApplicationRow, application_id)

    async def visible_application(self, principal: Principal, application_id: uuid.UUID) -> ApplicationRow | None:
        query = select(ApplicationRow).where(
            ApplicationRow.application_id == application_id, application_scope(principal)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def open_applications(self, resident_id: uuid.UUID, *, for_update: bool = True) -> list[ApplicationRow]:
        """Locked for the handler that re-evaluates them; read as they are when working ahead (read-only)."""
        query = (
            select(ApplicationRow)
            .where(ApplicationRow.resident_id == resident_id, ApplicationRow.status == "open")
            .order_by(ApplicationRow.submitted_at)
        )
        if for_update:
            query = query.with_for_update()
        return list((await self.session.scalars(query)).all())

    async def add_determinations(self, rows: Sequence[dict[str, Any]]) -> None:
        """A round's determinations (each a ``DeterminationRow``'s columns). In a transaction that keeps them aside
        (:meth:`keep_determinations_aside`), written with the others in one INSERT (every ``WRITE_EVERY`` rows, as the
        consumer flushes: what a statement's rows are made into is done with the loop held); otherwise (and within a
        savepoint, whose rollback takes them back) added to the session."""
        kept: list[dict[str, Any]] | None = self.session.info.get(_KEPT_DETERMINATIONS)
        if kept is None or self.session.in_nested_transaction():
            self.session.add_all(DeterminationRow(**row) for row in rows)
            return
        kept.extend(rows)
        if len(kept) >= WRITE_EVERY:
            await self.session.run_sync(_write_kept_determinations)

    def keep_determinations_aside(self) -> None:
        """From now on in this transaction, keep the determinations added (:meth:`add_determinations`, outside
        savepoints) aside as plain rows, to write them in one core INSERT: at the latest at its end
        (:meth:`write_determinations`, to reach before the commit: a commit with some left unwritten fails), and before
        any statement that writes what the session holds first (autoflush: a query that must find them). For a
        consumer's transaction, that adds a row per program of each application evaluated: through the ORM's unit of
        work (an object each, its state, its flush) a row cost more than the statement."""
        if self.session.in_nested_transaction() or _KEPT_DETERMINATIONS in self.session.info:
            return
        self.session.info[_KEPT_DETERMINATIONS] = []
        event.listen(self.session.sync_session, "do_orm_execute", _determinations_first)

    async def write_determinations(self) -> None:
        """Write the determinations kept aside (the events consumer's ``finish``, before the commit)."""
        if self.session.info.get(_KEPT_DETERMINATIONS):
            await self.session.run_sync(_write_kept_determinations)

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

    # ------------------------------------------------------------------------------------------ case offices

    async def case_office(self, case_id: uuid.UUID, *, for_update: bool = False) -> CaseOfficeRow | None:
        """Found among the rows the transaction added too, without writing them first (a batch writes once), or
        among those it loaded (and locked) for its events."""
        locked = (CaseOfficeRow, case_id) in self.session.info.get(_LOCKED, ())
        return await get_unflushed(self.session, CaseOfficeRow, case_id, with_for_update=for_update and not locked)

    async def load_case_offices(self, case_ids: set[uuid.UUID], resident_ids: set[uuid.UUID]) -> None:
        """Unscoped (the case-offices consumer): where the cases a transaction's events name are (locked), and whether
        their residents were erased, in a query each at its start — what is not there noted as absent — so that each
        event's lookups ask the database nothing more. Not within a savepoint."""
        if self.session.in_nested_transaction():
            return
        hold_loaded(self.session)  # the identity map would let go of a row nothing else refers to, and ask again
        with self.session.no_autoflush:
            if case_ids:
                query = select(CaseOfficeRow).where(CaseOfficeRow.case_id.in_(case_ids)).order_by(CaseOfficeRow.case_id)
                found = {c.case_id for c in await self.session.scalars(query.with_for_update())}
                note_absent(self.session, CaseOfficeRow, case_ids - found)
                self.session.info.setdefault(_LOCKED, set()).update((CaseOfficeRow, c) for c in case_ids)
            if resident_ids:
                erasures = select(ResidentErasureRow).where(ResidentErasureRow.resident_id.in_(resident_ids))
                found = {e.resident_id for e in await self.session.scalars(erasures)}
                note_absent(self.session, ResidentErasureRow, resident_ids - found)

    # ------------------------------------------------------------------------------------------ proactive screening
    # Unscoped: the scheduler and the event handlers act on behalf of no caller.

    async def queue_for_screening(self, resident_id: uuid.UUID, reason: str, now: dt.datetime) -> None:
        """Mark the resident for the next incremental screening (a new reason moves the mark's time)."""
        row = await self.session.get(ScreeningQueueRow, resident_id, with_for_update=True)
        if row is None:
            await self.session.execute(
                dialect_insert(self.session)(ScreeningQueueRow)
                .values(resident_id=resident_id, reasons=[reason], queued_at=now)
                .on_conflict_do_update(index_elements=["resident_id"], set_={"queued_at": now})
            )
            return
        if reason not in row.reasons:
            row.reasons = [*row.reasons, reason]
        row.queued_at = max(now, row.queued_at + dt.timedelta(microseconds=1))

    async def queued(self, limit: int) -> list[ScreeningQueueRow]:
        query = select(ScreeningQueueRow).order_by(ScreeningQueueRow.queued_at, ScreeningQueueRow.resident_id)
        return list((await self.session.scalars(query.limit(limit))).all())

    async def queue_size(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(ScreeningQueueRow)) or 0)

    async def clear_queued(self, marks: Sequence[tuple[uuid.UUID, dt.datetime]]) -> None:
        """Remove the marks a run saw; one made again since (a later ``queued_at``) stays for the next run."""
        if marks:
            await self.session.execute(
                delete(ScreeningQueueRow).where(
                    tuple_(ScreeningQueueRow.resident_id, ScreeningQueueRow.queued_at).in_(list(marks))
                )
            )

    def _due(self, today: dt.date) -> ColumnElement[bool]:
        reviewed = select(ScreeningReviewRow.resident_id).where(ScreeningReviewRow.review_on > today)
        return and_(ResidentRow.proactive_screening.is_(True), ResidentRow.resident_id.not_in(reviewed))

    async def count_due(self, today: dt.date) -> int:
        return int(
            await self.session.scalar(select(func.count()).select_from(ResidentRow).where(self._due(today))) or 0
        )

    async def count_consenting(self) -> int:
        query = select(func.count()).select_from(ResidentRow).where(ResidentRow.proactive_screening.is_(True))
        return int(await self.session.scalar(query) or 0)

    async def record_reviews(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            insert = dialect_insert(self.session)(ScreeningReviewRow)
            await self.session.execute(
                insert.on_conflict_do_update(
                    index_elements=["resident_id"],
                    set_={"review_on": insert.excluded.review_on, "screened_on": insert.excluded.screened_on},
                ),
                list(rows),
            )

    async def resident_answers_of(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        out: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
        if resident_ids:
            query = select(ResidentAnswerRow).where(ResidentAnswerRow.resident_id.in_(resident_ids))
            for row in (await self.session.scalars(query)).all():
                out[row.resident_id][row.name] = row.value
        return out

    async def resident_answer(self, resident_id: uuid.UUID, name: str) -> ResidentAnswerRow | None:
        return await self.session.get(ResidentAnswerRow, (resident_id, name), with_for_update=True)

    async def asked_between(
        self, first: uuid.UUID, last: uuid.UUID, only: Sequence[uuid.UUID] | None = None
    ) -> list[Any]:
        """(resident, program, fact) of every question already asked of the residents from ``first`` to ``last`` (by
        id; ``only``: of these alone)."""
        chosen = (
            ScreeningQuestionRow.resident_id.in_(only)
            if only is not None
            else ScreeningQuestionRow.resident_id.between(first, last)
        )
        query = select(
            ScreeningQuestionRow.resident_id, ScreeningQuestionRow.program_code, ScreeningQuestionRow.fact
        ).where(chosen)
        return list((await self.session.execute(query)).all())

    async def question(self, question_id: uuid.UUID, *, for_update: bool = False) -> ScreeningQuestionRow | None:
        return await self.session.get(ScreeningQuestionRow, question_id, with_for_update=for_update)

    async def open_questions(self, resident_id: uuid.UUID, fact: str) -> list[ScreeningQuestionRow]:
        query = select(ScreeningQuestionRow).where(
            ScreeningQuestionRow.resident_id == resident_id,
            ScreeningQuestionRow.fact == fact,
            ScreeningQuestionRow.status == "open",
        )
        return list((await self.session.scalars(query)).all())

    async def _make_schedule(self) -> None:
        """The scheduler's one row, made by whichever process comes first."""
        await self.session.execute(
            dialect_insert(self.session)(ScreeningScheduleRow).values(id=1).on_conflict_do_nothing()
        )

    async def schedule(self) -> ScreeningScheduleRow:
        """The scheduler's row, locked (made on first use)."""
        await self._make_schedule()
        row = await self.session.get(ScreeningScheduleRow, 1, with_for_update=True, populate_existing=True)
        assert row is not None
        return row

    async def take_lease(self, holder: str, now: dt.datetime, until: dt.datetime) -> bool:
        """Hold the right to run screenings until ``until`` — if no other process holds it now (one UPDATE)."""
        await self._make_schedule()
        result = await self.session.execute(
            update(ScreeningScheduleRow)
            .where(
                ScreeningScheduleRow.id == 1,
                or_(
                    ScreeningScheduleRow.lease_holder.is_(None),
                    ScreeningScheduleRow.lease_holder == holder,
                    ScreeningScheduleRow.lease_until < now,
                ),
            )
            .values(lease_holder=holder, lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def release_lease(self, holder: str) -> None:
        await self.session.execute(
            update(ScreeningScheduleRow)
            .where(ScreeningScheduleRow.id == 1, ScreeningScheduleRow.lease_holder == holder)
            .values(lease_holder=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )

    async def requested_screening(self) -> ScreeningRow | None:
        """The oldest screening an administrator asked to run in the background that has not started."""
        query = select(ScreeningRow).where(ScreeningRow.status == "queued").order_by(ScreeningRow.started_at)
        return (await self.session.scalars(query.limit(1))).first()

    async def screenings_page(
        self, kind: str | None, status: str | None, after: tuple[dt.datetime, uuid.UUID] | None, limit: int
    ) -> list[ScreeningRow]:
        """Newest first; ``after`` is the (started_at, id) of the previous page's last row."""
        query = select(ScreeningRow)
        if kind is not None:
            query = query.where(ScreeningRow.kind == kind)
        if status is not None:
            query = query.where(ScreeningRow.status == status)
        if after is not None:
            at, last = after
            query = query.where(
                or_(
                    ScreeningRow.started_at < at,
                    and_(ScreeningRow.started_at == at, ScreeningRow.screening_id < last),
                )
            )
        query = query.order_by(ScreeningRow.started_at.desc(), ScreeningRow.screening_id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    # ------------------------------------------------------------------------------------------ screenings

    async def screening(self, screening_id: uuid.UUID) -> ScreeningRow | None:
        return await self.session.get(ScreeningRow, screening_id)

    # ------------------------------------------------------------------------------------------ the registry table

    async def registry_page(
        self, after: str | None, limit: int, only: Sequence[uuid.UUID] | None = None, *, due: dt.date | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """A page of consenting residents (by id, after ``after``: 32 hex digits) for the registry table, and their
        department facts (theirs alone), as columns: the residents (resident_id as 32 hex digits, registry_version,
        birth_date, district_code, and household, vulnerability and consents as JSON text) and one row per fact
        (resident_id, id, name, value as JSON text, department, observed_at, valid_until). ``only``: these residents
        alone (a re-screen of those whose facts changed); ``due``: those whose review day (``screening_reviews``) is
        not after it, or who have none (the daily run). Unscoped: for screening.

        A page holds up to hundreds of thousands of residents and a dozen facts each, so no value becomes a Python
        object of its own: PostgreSQL sends both as CSV (``COPY (SELECT ...) TO STDOUT``), parsed by Polars; SQLite
        (whose driver has no bulk read) sends one text per resident with their facts joined by separators, read
        through the covering index ``ix_department_facts_resident_covering`` (migration 0009): a seek per resident,
        without a lookup in the table per fact."""
        if self.session.get_bind().dialect.name == "postgresql":
            return await self._registry_page_copy(after, limit, only, due)
        return await self._registry_page_sqlite(after, limit, only, due)

    async def _registry_page_copy(
        self, after: str | None, limit: int, only: Sequence[uuid.UUID] | None, due: dt.date | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        # The text of dates and timestamps follows DateStyle: ISO for this transaction, whatever the server's default.
        # No JIT: compiling these plain scans costs more than running them. Said through the session, which begins
        # its transaction first: said on the driver before it, they would hold for nothing, and each COPY below
        # would read a snapshot of its own.
        await self.session.execute(text("SELECT set_config('DateStyle', 'ISO', true), set_config('jit', 'off', true)"))
        connection = await self.session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        where, args, source = "r.proactive_screening", list[Any](), "residents r"
        if after is not None:
            where += " AND r.resident_id > $1::uuid"
            args.append(uuid.UUID(after))
        if only is not None:
            # Residents named one by one: a lookup each, in the order of their ids (``= ANY`` of thousands of ids is
            # planned as a scan of the whole table, or as one of its index with a rough guess of the rows).
            source = f"unnest(${len(args) + 1}::uuid[]) AS p(resident_id) JOIN residents r USING (resident_id)"
            args.append(list(dict.fromkeys(only)))  # each once, as ``= ANY`` would have them
        if due is not None:
            where += (
                " AND NOT EXISTS (SELECT 1 FROM screening_reviews s WHERE s.resident_id = r.resident_id"  # noqa: S608
                f" AND s.review_on > ${len(args) + 1}::date)"
            )
            args.append(due)
        # The SQL is this method's own text; every value is a parameter.
        residents = await _copy_csv(
            driver,
            "SELECT r.resident_id, r.registry_version, r.birth_date, r.district_code, r.household::text, "  # noqa: S608
            f"r.vulnerability::text, r.consents::text FROM {source} WHERE {where} "
            f"ORDER BY r.resident_id LIMIT {int(limit)}",
            args,
            _RESIDENT_COLUMNS,
        )
        if not residents.height:
            return _residents_of(residents), _no_facts()
        # The facts of the page's id range (a bitmap or index scan: the heap pages in order, each read once), less
        # those of residents not on the page (who do not consent); of residents named or due, their own.
        ids = residents.get_column("resident_id")
        fact_args: list[Any] = [uuid.UUID(ids[0]), uuid.UUID(ids[-1])]
        chosen = "department_facts f WHERE f.resident_id BETWEEN $1::uuid AND $2::uuid"
        if only is not None or due is not None:  # residents spread over every id: their own facts, not the range's
            fact_args = [[uuid.UUID(i) for i in ids]]
            chosen = "unnest($1::uuid[]) AS p(resident_id) JOIN department_facts f USING (resident_id)"
        # Never a scan of the whole table for a page's share of it: once the facts lie in residents' order (as
        # ``registry load`` writes them) the planner, seeing a fifth of the rows asked for, would rather read them all.
        await driver.execute("SET LOCAL enable_seqscan = off")
        facts = await _copy_csv(
            driver,
            "SELECT f.resident_id, f.id, f.name, f.value::text, f.department, f.observed_at AT TIME ZONE 'UTC', "  # noqa: S608
            f"f.valid_until AT TIME ZONE 'UTC' FROM {chosen}",
            fact_args,
            _FACT_COLUMNS,
        )
        await driver.execute("SET LOCAL enable_seqscan = on")
        facts = facts.join(residents.select("resident_id"), on="resident_id", how="semi")
        return _residents_of(residents), _facts_of(facts)

    async def _registry_page_sqlite(
        self, after: str | None, limit: int, only: Sequence[uuid.UUID] | None, due: dt.date | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        import polars as pl

        after_clause = "AND r.resident_id > :after" if after is not None else ""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if only is not None:
            after_clause += " AND r.resident_id IN :only"
            params["only"] = [u.hex for u in only]
        if due is not None:
            after_clause += (
                " AND NOT EXISTS (SELECT 1 FROM screening_reviews s WHERE s.resident_id = r.resident_id"
                " AND s.review_on > :due)"
            )
            params["due"] = due.isoformat()
        expanding: list[Any] = [bindparam("only", expanding=True)] if only is not None else []
        # The page's residents as one text (fields joined by unit separators, residents by record separators; a NULL
        # as an empty field: no column of these is ever an empty text), split by Polars: no Python object per value.
        line = " || char(31) || ".join(f"coalesce(r.{c}, '')" for c in _RESIDENT_COLUMNS)
        packed_residents = await self.session.scalar(
            text(
                "SELECT group_concat(line, char(30)) FROM (SELECT "  # noqa: S608
                f"{line} AS line FROM residents r WHERE r.proactive_screening {after_clause} "
                "ORDER BY r.resident_id LIMIT :limit)"
            ).bindparams(*expanding),
            params,
        )
        # Split off the event loop (Polars lets go of the GIL): a page of thousands of residents held it 100+ ms.
        residents = await asyncio.to_thread(
            lambda: (
                _unpacked([packed_residents], _RESIDENT_COLUMNS)
                .with_columns(pl.col("registry_version").cast(pl.Int64))
                .sort("resident_id")
            )
        )
        if not residents.height:
            return _residents_of(residents), _no_facts()
        # Their facts through the covering index, as one text per slice of residents (each fact's resident and fields
        # joined by unit separators, facts by record separators): a slice's text stays well within SQLite's limit.
        packed = " || char(31) || ".join(
            ["r.resident_id", "f.name", "f.department", "f.value", "f.observed_at", "coalesce(f.valid_until, '')",
             "CAST(f.id AS TEXT)"]
        )  # fmt: skip
        sparse = only is not None or due is not None  # residents spread over every id: their own facts only
        # CROSS JOIN keeps the residents outside (SQLite's way of fixing the join order): a seek in the covering
        # index per consenting resident, rather than every fact of the range and a lookup of its resident.
        where = "r.resident_id IN :only" if sparse else "r.resident_id BETWEEN :first AND :last"
        query = text(
            f"SELECT group_concat({packed}, char(30)) FROM residents r "  # noqa: S608
            f"CROSS JOIN department_facts f ON f.resident_id = r.resident_id WHERE r.proactive_screening AND {where}"
        )
        if sparse:
            query = query.bindparams(bindparam("only", expanding=True))
        ids = residents.get_column("resident_id").to_list()
        texts = []
        for start in range(0, len(ids), _FACTS_PER_TEXT):
            chunk = ids[start : start + _FACTS_PER_TEXT]
            bounds = {"only": chunk} if sparse else {"first": chunk[0], "last": chunk[-1]}
            texts.append(await self.session.scalar(query, bounds))
        columns = ["resident_id", "name", "department", "value", "observed_at", "valid_until", "id"]
        return await asyncio.to_thread(lambda: (_residents_of(residents), _facts_of(_unpacked(texts, columns))))

    async def declared_answers(
        self, first: uuid.UUID, last: uuid.UUID, only: Sequence[uuid.UUID] | None = None
    ) -> pl.DataFrame:
        """What the residents from ``first`` to ``last`` (by id; ``only``: these alone) declared in answer to screening
        questions, as columns (resident_id as 32 hex digits, name, value as JSON text): the declared layer of
        ``fact_table.registry_table``. Few rows (one per answer), so read through the ORM. Unscoped: for screening."""
        import polars as pl

        chosen = (
            ResidentAnswerRow.resident_id.in_(only)
            if only is not None
            else ResidentAnswerRow.resident_id.between(first, last)
        )
        query = select(ResidentAnswerRow.resident_id, ResidentAnswerRow.name, ResidentAnswerRow.value).where(chosen)
        rows = [(r.hex, n, json.dumps(v)) for r, n, v in (await self.session.execute(query)).all()]
        return pl.DataFrame(
            rows, schema={"resident_id": pl.String(), "name": pl.String(), "value": pl.String()}, orient="row"
        )

    async def add_opportunities(self, rows: pl.DataFrame, *, piece: int = BULK_PIECE) -> None:
        """Opportunities found by a screening, in one bulk write (``screening.opportunity_rows``' columns; ``piece``:
        see ``shared.db.bulk_insert``)."""
        await bulk_insert(self.session, cast(Table, OpportunityRow.__table__), rows, piece=piece)

    async def judged_pairs(
        self, first: uuid.UUID, last: uuid.UUID, only: Sequence[uuid.UUID] | None = None
    ) -> tuple[list[Any], list[Any]]:
        """The (resident, program) pairs of the residents from ``first`` to ``last`` (by id; ``only``: of these
        alone) already judged in an application, and already told of an opportunity. Unscoped: for screening."""
        applied_in = (
            DeterminationRow.resident_id.in_(only)
            if only is not None
            else DeterminationRow.resident_id.between(first, last)
        )
        told_in = (
            OpportunityRow.resident_id.in_(only)
            if only is not None
            else OpportunityRow.resident_id.between(first, last)
        )
        applied = select(DeterminationRow.resident_id, DeterminationRow.program_code).where(applied_in)
        told = select(OpportunityRow.resident_id, OpportunityRow.program_code).where(told_in)
        return (
            list((await self.session.execute(applied.distinct())).all()),
            list((await self.session.execute(told)).all()),
        )


# ---------------------------------------------------------------------------------------------- the registry table


def _schema(columns: Sequence[str]) -> dict[str, Any]:
    import polars as pl

    types = {**_RESIDENT_COLUMNS_T, **_FACT_COLUMNS_T}
    return {c: pl.Int64() if types[c] == "int" else pl.String() for c in columns}


_RESIDENT_COLUMNS_T = {
    "resident_id": "str", "registry_version": "int", "birth_date": "str", "district_code": "str", "household": "str",
    "vulnerability": "str", "consents": "str",
}  # fmt: skip
_FACT_COLUMNS_T = {
    "resident_id": "str", "id": "int", "name": "str", "value": "str", "department": "str", "observed_at": "str",
    "valid_until": "str",
}  # fmt: skip
_RESIDENT_COLUMNS = list(_RESIDENT_COLUMNS_T)
_FACT_COLUMNS = list(_FACT_COLUMNS_T)
# Timestamps as both backends write them in UTC ("2026-03-02 03:00:00" with ".123456" when there are microseconds).
_MOMENT = "%Y-%m-%d %H:%M:%S%.f"


async def _copy_csv(driver: Any, query: str, args: Sequence[Any], columns: list[str]) -> pl.DataFrame:
    """The rows of ``query`` as a frame of text and integer columns, sent by PostgreSQL as CSV (``COPY``)."""
    import polars as pl

    # An async writer: a file would cost a thread hop per chunk of the stream.
    chunks: list[bytes] = []

    async def write(chunk: bytes) -> None:
        chunks.append(chunk)

    await driver.copy_from_query(query, *args, output=write, format="csv")
    schema = _schema(columns)
    if not any(chunks):
        return pl.DataFrame(schema=schema)
    # Polars parses in its own threads; on this one it would hold the event loop for the whole page meanwhile.
    return await asyncio.to_thread(pl.read_csv, b"".join(chunks), has_header=False, new_columns=columns, schema=schema)


# Residents whose facts SQLite sends as one text (a few hundred bytes each: a text of some megabytes).
_FACTS_PER_TEXT = 20_000


def _unpacked(texts: Sequence[str | None], columns: Sequence[str]) -> pl.DataFrame:
    """Texts of records (``columns``' fields joined by unit separators, records by record separators; an empty field
    is NULL) as a frame of text columns."""
    import polars as pl

    return (
        pl.DataFrame({"packed": [t for t in texts if t]}, schema={"packed": pl.String()})
        .select(pl.col("packed").str.split("\x1e"))
        .explode("packed")
        .select(pl.col("packed").str.split_exact("\x1f", len(columns) - 1).struct.rename_fields(list(columns)))
        .unnest("packed")
        .select(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in columns)
    )


def _residents_of(frame: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    return frame.with_columns(
        pl.col("resident_id").str.replace_all("-", ""),
        pl.col("birth_date").str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
    )


def _facts_of(frame: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    return frame.select(
        pl.col("resident_id").str.replace_all("-", ""),
        pl.col("id").cast(pl.Int64),
        "name",
        "value",
        "department",
        pl.col("observed_at").str.to_datetime(_MOMENT, time_zone="UTC", strict=False),
        pl.col("valid_until").str.to_datetime(_MOMENT, time_zone="UTC", strict=False),
    )


def _no_facts() -> pl.DataFrame:
    import polars as pl

    return _facts_of(pl.DataFrame(schema=_schema(_FACT_COLUMNS)))


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


async def get_read_repository(session: ReadSessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_write_repository(session: WriteSessionDep) -> Repository:
    return Repository(session)


# For a GET that must write what it shows (a resident's data export, which lists its own read).
WriteRepositoryDep = Annotated[Repository, Depends(get_write_repository)]
# For a POST that writes nothing (the screener): it reads without waiting for the database's writers.
ReadRepositoryDep = Annotated[Repository, Depends(get_read_repository)]
