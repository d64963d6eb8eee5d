"""Every query of the intake service. Reads of residents and applications are scoped to the caller: what the caller
may not see is simply not found. Who acts for a resident (a representative they named, counter staff under an
authority they gave) may see what they act on while that lasts: the scopes depend on the day (``today``)."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends
from sqlalchemy import (
    ColumnElement,
    Date,
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    insert,
    inspect,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased
from sqlalchemy.sql.elements import NamedColumn

from services.intake.models import (
    Application,
    ApplicationOffice,
    Case,
    Consent,
    ConsentChange,
    CounterAuthority,
    DataExport,
    Determination,
    ErasureConfirmation,
    ErasureRequest,
    Feedback,
    HouseholdCaseStatus,
    Notification,
    Opportunity,
    Referral,
    RegistryHousehold,
    Representation,
    RepresentationScope,
    Resident,
    ScreeningQuestion,
    TimelineEntry,
)
from shared.auth import Principal, Role
from shared.consumer import WRITE_EVERY
from shared.db import dialect_insert, execute_rows, get_unflushed, hold_loaded, note_absent, pending_rows
from shared.deps import SessionDep
from shared.nested_rows import nested, unnest

OFFICE_ROLES = (Role.CASEWORKER, Role.SUPERVISOR)
# The applications a transaction locked (see Repository.application).
_LOCKED_APPLICATIONS = "intake_locked_applications"
# The timeline entries a consumer's transaction added and has not written yet (see Repository.add_timeline).
_NEW_TIMELINE = "intake_new_timeline"
# The new notifications and offices it kept aside, by class and key (see Repository.add_notification, add_office).
_NEW_ROWS = "intake_new_rows"
# A representative with one of these scopes acts on the resident's applications, so may read them.
APPLICATION_SCOPES = ("apply", "answer", "withdraw")


def _has_case_in_offices(application_id: InstrumentedAttribute[uuid.UUID], offices: Any) -> ColumnElement[bool]:
    """``offices``: the office codes, or an expanding parameter standing for them."""
    return exists().where(
        ApplicationOffice.application_id == application_id, ApplicationOffice.office_code.in_(offices)
    )


def _represents(
    representative_id: Any, resident_id: InstrumentedAttribute[uuid.UUID], scopes: tuple[str, ...], today: Any
) -> ColumnElement[bool]:
    """The representative acts for the resident today, in one of the scopes."""
    return exists().where(
        Representation.representative_id == representative_id,
        Representation.resident_id == resident_id,
        Representation.revoked_at.is_(None),
        Representation.expires_on >= today,
        exists().where(
            RepresentationScope.representation_id == Representation.id, RepresentationScope.scope.in_(scopes)
        ),
    )


def _authorised_at_counter(
    resident_id: InstrumentedAttribute[uuid.UUID], offices: Any, today: Any
) -> ColumnElement[bool]:
    """The resident gave one of these offices' counters an authority that holds today."""
    return exists().where(
        CounterAuthority.resident_id == resident_id,
        CounterAuthority.office_code.in_(offices),
        CounterAuthority.revoked_at.is_(None),
        CounterAuthority.valid_until >= today,
    )


class _ScopeKind(enum.Enum):
    """Which applications a caller may read, by the kind of caller (see :func:`application_scope`)."""

    RESIDENT = "resident"
    ADMIN = "admin"
    OFFICE = "office"
    NONE = "none"


def _scope_kind(principal: Principal) -> _ScopeKind:
    if principal.role is Role.RESIDENT and principal.resident_id is not None:
        return _ScopeKind.RESIDENT
    if principal.role is Role.ADMIN:
        return _ScopeKind.ADMIN
    if principal.role in OFFICE_ROLES and principal.offices:
        return _ScopeKind.OFFICE
    return _ScopeKind.NONE


def _application_scope(kind: _ScopeKind, resident_id: Any, offices: Any, today: Any) -> ColumnElement[bool]:
    """The applications a caller of this kind may read: a resident their own and those of a resident they represent
    (in a scope that acts on applications); office staff those with a case (now or before) in one of their offices
    and those of a resident who authorised their counter; an admin all. The caller's resident id, offices and the
    day are values, or parameters standing for them (:func:`_visible_status`)."""
    match kind:
        case _ScopeKind.RESIDENT:
            return or_(
                Application.resident_id == resident_id,
                _represents(resident_id, Application.resident_id, APPLICATION_SCOPES, today),
            )
        case _ScopeKind.ADMIN:
            return true()
        case _ScopeKind.OFFICE:
            return or_(
                _has_case_in_offices(Application.id, offices),
                _authorised_at_counter(Application.resident_id, offices, today),
            )
        case _ScopeKind.NONE:
            return false()


def application_scope(principal: Principal, today: dt.date) -> ColumnElement[bool]:
    """The applications the caller may read (see :func:`_application_scope`)."""
    return _application_scope(_scope_kind(principal), principal.resident_id, sorted(principal.offices), today)


def _scope_parameters(kind: _ScopeKind, principal: Principal, today: dt.date) -> dict[str, Any]:
    """The values of :func:`_visible_status`'s parameters for the caller (only those its kind's statement has)."""
    match kind:
        case _ScopeKind.RESIDENT:
            return {"caller_resident_id": principal.resident_id, "today": today}
        case _ScopeKind.OFFICE:
            return {"caller_offices": sorted(principal.offices), "today": today}
        case _ScopeKind.ADMIN | _ScopeKind.NONE:
            return {}


def resident_scope(principal: Principal, today: dt.date) -> ColumnElement[bool]:
    """The resident records the caller may read: their own (a representative acts within a scope, never on the whole
    record); for office staff, residents they registered at a counter, with an application that has a case in their
    offices, or who authorised their counter; an admin all. Never an erased resident."""
    live = Resident.erased_at.is_(None)  # an erased resident's stub is no one's to read (see erasure.py)
    if principal.role is Role.RESIDENT and principal.resident_id is not None:
        return and_(Resident.id == principal.resident_id, live)
    if principal.role is Role.ADMIN:
        return live
    if principal.role in OFFICE_ROLES and principal.offices:
        return and_(
            live,
            or_(
                Resident.registered_by == principal.subject,
                exists().where(
                    Application.resident_id == Resident.id,
                    _has_case_in_offices(Application.id, sorted(principal.offices)),
                ),
                _authorised_at_counter(Resident.id, sorted(principal.offices), today),
            ),
        )
    return false()


def _shown_household_case_first(cases: Any) -> tuple[Any, ...]:
    """A resident's household cases, the one to show first: the running one, else the latest closed."""
    return (cases.closed_at.is_(None).desc(), cases.updated_at.desc())


def _household_case_of(resident_id: Any, outer: Any) -> ColumnElement[bool]:
    """The join condition of the household case shown for the resident (of the enclosing query's ``outer``)."""
    latest = aliased(HouseholdCaseStatus)
    shown = (
        select(latest.household_case_id)
        .where(latest.resident_id == resident_id)
        .order_by(*_shown_household_case_first(latest))
        .limit(1)
        .correlate(outer)
        .scalar_subquery()
    )
    return and_(HouseholdCaseStatus.resident_id == resident_id, HouseholdCaseStatus.household_case_id == shown)


# The parts of a status view are the same SQL for every application: built once (building them took half the CPU of
# a status GET).


@functools.cache
def _household_case_of_application() -> ColumnElement[bool]:
    return _household_case_of(Application.resident_id, Application)


@functools.cache
def _household_case_of_resident() -> ColumnElement[bool]:
    return _household_case_of(Resident.id, Resident)


@functools.cache
def _resident_and_household_case() -> Select[Resident, HouseholdCaseStatus]:
    """:meth:`Repository.resident_and_household_case`'s query, built once (building it cost as much CPU as running
    it; a statement used again also keeps its cache key)."""
    return (
        select(Resident, HouseholdCaseStatus)
        .outerjoin(HouseholdCaseStatus, _household_case_of_resident())
        .where(Resident.id == bindparam("resident_id"))
    )


@functools.cache
def _status_part_arrays(dialect: str) -> tuple[Any, ...]:
    """An application's cases, notifications, timeline and referrals, each a JSON array in the order the view shows
    them."""
    parts: tuple[tuple[type[Any], Any, list[Any]], ...] = (
        (Case, Case.application_id, [Case.first_seen_at]),
        (Notification, Notification.application_id, [Notification.status_at, Notification.notification_id]),
        (TimelineEntry, TimelineEntry.application_id, [TimelineEntry.occurred_at, TimelineEntry.id]),
        (Referral, Referral.application_id, [Referral.referred_at, Referral.referral_id]),
    )
    return tuple(
        nested(model, of == Application.id, outer=Application, order_by=order, dialect=dialect)
        for model, of, order in parts
    )


def _with_status_parts(query: Select[Any], dialect: str) -> Select[Any]:
    """The query of one application (its first column), with the parts of its status view after it: the one-to-one
    parts as entities (outer joins), those of many rows as JSON arrays (shared.nested_rows)."""
    return (
        query.add_columns(Determination, Feedback, HouseholdCaseStatus, *_status_part_arrays(dialect))
        .outerjoin(Determination, Determination.application_id == Application.id)
        .outerjoin(Feedback, Feedback.application_id == Application.id)
        .outerjoin(HouseholdCaseStatus, _household_case_of_application())
    )


@functools.cache
def _visible_status(dialect: str, kind: _ScopeKind) -> Select[Any]:
    """:meth:`Repository.visible_status`'s statement for a kind of caller, built once with parameters for the
    application, the caller and the day (:func:`_scope_parameters`). Building it and its cache key anew for each
    request cost a status GET a fifth of its CPU (py-spy, an idle platform)."""
    scope = _application_scope(
        kind, bindparam("caller_resident_id"), bindparam("caller_offices", expanding=True), bindparam("today")
    )
    return _with_status_parts(select(Application).where(Application.id == bindparam("application_id"), scope), dialect)


@functools.cache
def _status_parts_of(dialect: str) -> Select[Any]:
    """:meth:`Repository.status_parts`'s statement, built once."""
    return _with_status_parts(select(Application.id).where(Application.id == bindparam("application_id")), dialect)


@dataclass(frozen=True)
class StatusParts:
    """What an application's status view shows beside the application, as one statement read it."""

    determination: Determination | None
    cases: list[Case]
    notifications: list[Notification]
    timeline: list[TimelineEntry]
    feedback: Feedback | None
    referrals: list[Referral]
    household: HouseholdCaseStatus | None


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    # ------------------------------------------------------------------------------------------ residents

    async def resident(self, resident_id: uuid.UUID, *, for_update: bool = False) -> Resident | None:
        """Unscoped: for checks that reveal nothing to the caller (does this id exist?), and for a caller whose right
        to the record was established otherwise (a representative's scope)."""
        query = select(Resident).where(Resident.id == resident_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def resident_and_household_case(
        self, resident_id: uuid.UUID
    ) -> tuple[Resident | None, HouseholdCaseStatus | None]:
        """Unscoped, as :meth:`resident`: the resident and their household case (:meth:`household_case_of`), in one
        statement (filing an application shows the household case in its answer)."""
        row = (await self.session.execute(_resident_and_household_case(), {"resident_id": resident_id})).one_or_none()
        return (None, None) if row is None else (row[0], row[1])

    async def file(self, application: Application, *, representation_id: uuid.UUID | None, today: dt.date) -> bool:
        """Insert a new application, unless since it was checked its resident's data was erased or the representation
        it is filed under was revoked or ran out (False). The condition is part of the INSERT, so it holds where the
        write happens: on SQLite under the writer lock, which a request takes at its first write, after its checks
        (shared.db); on PostgreSQL with the resident's row locked (FOR KEY SHARE), which an erasure's FOR UPDATE waits
        for, and which waits for an erasure under way. Rows already added that refer to the application (its event,
        its timeline entry) are written after it: what is built for a filing is built before its first write."""
        values = {column.key: getattr(application, key) for key, column in _application_columns()}
        values |= {"representation_id": representation_id, "today": today} if representation_id is not None else {}
        statement = _filing(represented=representation_id is not None)
        with self.session.no_autoflush:  # rows added that refer to it (its event, its timeline) are written after it
            return (await self.session.execute(statement, values)).first() is not None

    async def write_timeline(self, entry: TimelineEntry) -> None:
        """Write a new timeline entry at once, with a core INSERT of its values (:func:`status.timeline_values`): for a
        request that builds what it writes before its first write, where the ORM's unit of work would cost more than
        the statement. The entry's ``id`` stays unset: nothing shown of an entry is its id."""
        values = {column.key: getattr(entry, key) for key, column in _timeline_columns()}
        await self.session.execute(_writing_timeline(), values)

    async def add_timeline(self, values: dict[str, Any]) -> None:
        """A consumer's event's timeline entry (:func:`status.timeline_values`), kept aside and written with the others
        its transaction adds in one core INSERT (:meth:`write_new_timeline`, the status view's ``finish``): a batch
        adds an entry per event, which through the ORM's unit of work cost an object each, its bookkeeping and a
        flush that reads every new id back, while nothing reads an entry before the transaction ends. Within a
        savepoint, whose rollback must take it back, an ORM row at once: a consumer runs a transaction's events in
        savepoints all or none (``Consumer._apply_apart``), so none is kept aside across one."""
        if self.session.in_nested_transaction():
            self.session.add(TimelineEntry(**values))
            return
        kept: list[dict[str, Any]] = self.session.info.setdefault(_NEW_TIMELINE, [])
        kept.append(values)
        if len(kept) >= WRITE_EVERY:  # as the consumer writes its ORM rows: not all at once at the end of a long batch
            await self.write_new_timeline()

    async def write_new_timeline(self) -> None:
        """Write the timeline entries :meth:`add_timeline` kept aside, in the order they were added."""
        kept: list[dict[str, Any]] | None = self.session.info.pop(_NEW_TIMELINE, None)
        if kept:
            await execute_rows(self.session, _writing_timeline(), kept)

    async def write_new_rows(self) -> None:
        """Write what the transaction's events kept aside (the status view consumer's ``finish``): the timeline
        entries, the new notifications and offices, a core INSERT per table."""
        await self.write_new_timeline()
        kept: dict[type[Any], dict[Any, dict[str, Any]]] = self.session.info.pop(_NEW_ROWS, {})
        for model, rows in kept.items():
            if rows:
                await execute_rows(self.session, insert(model.__table__), list(rows.values()))

    async def registry_household_id(self, registry_key: str, now: dt.datetime) -> uuid.UUID:
        """The pseudonymous id of a registered household, made on first use (two registrations at once agree)."""
        await self.session.execute(
            dialect_insert(self.session)(RegistryHousehold)
            .values(registry_key=registry_key, id=uuid.uuid4(), created_at=now)
            .on_conflict_do_nothing(index_elements=["registry_key"])
        )
        query = select(RegistryHousehold.id).where(RegistryHousehold.registry_key == registry_key)
        return (await self.session.execute(query)).scalar_one()

    async def visible_resident(
        self, principal: Principal, resident_id: uuid.UUID, *, today: dt.date, for_update: bool = False
    ) -> Resident | None:
        query = select(Resident).where(Resident.id == resident_id, resident_scope(principal, today))
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def contactable_residents(self, principal: Principal, resident_ids: Sequence[uuid.UUID]) -> list[Resident]:
        """The residents named whose contact details the caller may read: for the notify service, those with
        details left (an erased resident's stay only until they were told the result, services/intake/erasure.py);
        for anyone else, none."""
        if principal.role is not Role.SERVICE or principal.service != "notify":
            return []
        query = select(Resident).where(Resident.id.in_(set(resident_ids))).order_by(Resident.id)
        return [r for r in (await self.session.scalars(query)).all() if r.preferred_channels is not None]

    async def has_case_in_offices(self, resident_id: uuid.UUID, offices: frozenset[str]) -> bool:
        query = select(
            exists().where(
                Application.resident_id == resident_id, _has_case_in_offices(Application.id, sorted(offices))
            )
        )
        return bool(await self.session.scalar(query))

    async def consents(self, resident_id: uuid.UUID, *, for_update: bool = False) -> list[Consent]:
        query = select(Consent).where(Consent.resident_id == resident_id).order_by(Consent.purpose)
        if for_update:
            query = query.with_for_update()
        return list((await self.session.scalars(query)).all())

    async def consent_history(self, resident_id: uuid.UUID) -> list[ConsentChange]:
        query = (
            select(ConsentChange)
            .where(ConsentChange.resident_id == resident_id)
            .order_by(ConsentChange.version, ConsentChange.purpose)
        )
        return list((await self.session.scalars(query)).all())

    # ------------------------------------------------------------------------------------------ acting for a resident

    async def representation(self, representation_id: uuid.UUID, *, for_update: bool = False) -> Representation | None:
        query = select(Representation).where(Representation.id == representation_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def representations_of(self, resident_id: uuid.UUID) -> list[Representation]:
        """Everyone the resident named, newest first (revoked and expired ones too)."""
        query = (
            select(Representation)
            .where(Representation.resident_id == resident_id)
            .order_by(Representation.created_at.desc(), Representation.id)
        )
        return list((await self.session.scalars(query)).all())

    async def representations_by(self, representative_id: uuid.UUID) -> list[Representation]:
        """Every resident who named this representative, newest first."""
        query = (
            select(Representation)
            .where(Representation.representative_id == representative_id)
            .order_by(Representation.created_at.desc(), Representation.id)
        )
        return list((await self.session.scalars(query)).all())

    async def current_representation(
        self, representative_id: uuid.UUID, resident_id: uuid.UUID, today: dt.date
    ) -> Representation | None:
        """The representation of the resident by this representative that holds today (at most one is ever open)."""
        query = select(Representation).where(
            Representation.representative_id == representative_id,
            Representation.resident_id == resident_id,
            Representation.revoked_at.is_(None),
            Representation.expires_on >= today,
        )
        return (await self.session.scalars(query.order_by(Representation.created_at.desc()))).first()

    async def counter_authority(self, authority_id: uuid.UUID, *, for_update: bool = False) -> CounterAuthority | None:
        query = select(CounterAuthority).where(CounterAuthority.id == authority_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def counter_authorities(self, resident_id: uuid.UUID) -> list[CounterAuthority]:
        query = (
            select(CounterAuthority)
            .where(CounterAuthority.resident_id == resident_id)
            .order_by(CounterAuthority.recorded_at.desc(), CounterAuthority.id)
        )
        return list((await self.session.scalars(query)).all())

    async def current_counter_authority(
        self, resident_id: uuid.UUID, offices: frozenset[str], today: dt.date
    ) -> CounterAuthority | None:
        """The newest authority the resident gave one of these offices' counters that holds today."""
        query = select(CounterAuthority).where(
            CounterAuthority.resident_id == resident_id,
            CounterAuthority.office_code.in_(sorted(offices)),
            CounterAuthority.revoked_at.is_(None),
            CounterAuthority.valid_until >= today,
        )
        return (await self.session.scalars(query.order_by(CounterAuthority.recorded_at.desc()))).first()

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID, *, for_update: bool = False) -> Application | None:
        """Unscoped: for event handlers, which act on behalf of no caller. Locked once, an application stays locked
        to the end of the transaction: the next event of a batch about it is given the row it holds, not the row read
        again with its answers. Not within a savepoint, whose rollback would release the lock (PostgreSQL)."""
        remember = for_update and not self.session.in_nested_transaction()
        locked: dict[uuid.UUID, Application] = self.session.info.setdefault(_LOCKED_APPLICATIONS, {})
        held = locked.get(application_id) if remember else None
        if held is not None and not inspect(held).expired_attributes and held in self.session:
            return held
        query = select(Application).where(Application.id == application_id)
        if for_update:
            # Nothing pending is written first: an event handler never adds an application, so the answer is the
            # same, and the batch's rows go out together at its end (not at each application's first event).
            with self.session.no_autoflush:
                application = (await self.session.execute(query.with_for_update())).scalar_one_or_none()
        else:
            application = (await self.session.execute(query)).scalar_one_or_none()
        if remember and application is not None:
            locked[application_id] = application
        return application

    async def load_for_events(
        self,
        application_ids: set[uuid.UUID],
        determined: set[uuid.UUID],
        case_ids: set[uuid.UUID],
        notification_ids: set[uuid.UUID],
        offices: set[tuple[uuid.UUID, str]],
    ) -> None:
        """Unscoped (the status view's consumer): what a transaction's events will look up, in a query per kind — the
        applications (locked, and held as :meth:`application` holds them), the determinations of those ``determined``
        (named by an eligibility or case event), the cases, notifications and offices they name — and what is not
        there noted as absent (shared.db.note_absent), so that each event's lookups ask the database nothing more. The
        rows loaded are held to the end of the transaction (shared.db.hold_loaded)."""
        hold_loaded(self.session)
        with self.session.no_autoflush:
            if application_ids and not self.session.in_nested_transaction():
                locked: dict[uuid.UUID, Application] = self.session.info.setdefault(_LOCKED_APPLICATIONS, {})
                applications = select(Application).where(Application.id.in_(application_ids)).order_by(Application.id)
                for application in await self.session.scalars(applications.with_for_update()):
                    locked[application.id] = application
            if determined:
                # Each case event names its program from the determination, and each status is derived from it.
                determinations = select(Determination).where(Determination.application_id.in_(determined))
                found_determinations = {d.application_id for d in await self.session.scalars(determinations)}
                note_absent(self.session, Determination, determined - found_determinations)
            if offices:
                known = select(ApplicationOffice).where(ApplicationOffice.application_id.in_({a for a, _ in offices}))
                found_offices = {(o.application_id, o.office_code) for o in await self.session.scalars(known)}
                note_absent(self.session, ApplicationOffice, offices - found_offices)
            if case_ids:
                found = {c.case_id for c in await self.session.scalars(select(Case).where(Case.case_id.in_(case_ids)))}
                note_absent(self.session, Case, case_ids - found)
            if notification_ids:
                named = select(Notification).where(Notification.notification_id.in_(notification_ids))
                found = {n.notification_id for n in await self.session.scalars(named)}
                note_absent(self.session, Notification, notification_ids - found)

    async def visible_application(
        self, principal: Principal, application_id: uuid.UUID, *, today: dt.date, for_update: bool = False
    ) -> Application | None:
        query = select(Application).where(Application.id == application_id, application_scope(principal, today))
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def visible_status(
        self, principal: Principal, application_id: uuid.UUID, *, today: dt.date
    ) -> tuple[Application, StatusParts] | None:
        """The application the caller may see and every part of its status, in one statement (one snapshot): its
        determination, cases, notifications, timeline, feedback, referrals and the resident's household case. The
        parts are for showing (not in the session), as :meth:`status_parts`."""
        kind = _scope_kind(principal)
        query = _visible_status(self.dialect, kind)
        parameters = {"application_id": application_id, **_scope_parameters(kind, principal, today)}
        row = (await self.session.execute(query, parameters)).one_or_none()
        return None if row is None else (row[0], self._status_parts(row))

    async def status_parts(self, application: Application) -> StatusParts:
        """Every part of the application's status view, in one statement (one snapshot). The parts are for showing:
        those of many rows (cases, notifications, timeline, referrals) are not in the session."""
        query = _status_parts_of(self.dialect)
        return self._status_parts((await self.session.execute(query, {"application_id": application.id})).one())

    @staticmethod
    def _status_parts(row: Any) -> StatusParts:
        _, determination, feedback, household, cases, notifications, timeline, referrals = row
        return StatusParts(
            determination=determination,
            cases=unnest(Case, cases),
            notifications=unnest(Notification, notifications),
            timeline=unnest(TimelineEntry, timeline),
            feedback=feedback,
            referrals=unnest(Referral, referrals),
            household=household,
        )

    async def list_applications(
        self,
        principal: Principal,
        *,
        today: dt.date,
        resident_id: uuid.UUID | None,
        status: str | None,
        after: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Application]:
        """Newest first; ``after`` is the (submitted_at, id) of the last item of the previous page."""
        query = select(Application).where(application_scope(principal, today))
        if resident_id is not None:
            query = query.where(Application.resident_id == resident_id)
        if status is not None:
            query = query.where(Application.status == status)
        if after is not None:
            at, last_id = after
            query = query.where(
                or_(Application.submitted_at < at, and_(Application.submitted_at == at, Application.id < last_id))
            )
        query = query.order_by(Application.submitted_at.desc(), Application.id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def determination(self, application_id: uuid.UUID) -> Determination | None:
        return await get_unflushed(self.session, Determination, application_id)

    async def cases_of(self, application_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Case]]:
        """The cases of several applications at once, as the transaction has them: those it added and has not written
        yet among them, without writing anything first (a consumer's batch writes once, at its end)."""
        wanted = set(application_ids)
        query = select(Case).where(Case.application_id.in_(wanted))
        with self.session.no_autoflush:
            stored = list(await self.session.scalars(query))
        found: dict[uuid.UUID, list[Case]] = {}
        for case in [*stored, *(c for c in pending_rows(self.session, Case) if c.application_id in wanted)]:
            found.setdefault(case.application_id, []).append(case)
        return found

    async def cases(self, application_id: uuid.UUID) -> list[Case]:
        query = select(Case).where(Case.application_id == application_id).order_by(Case.first_seen_at)
        return list((await self.session.scalars(query)).all())

    # The lookups of the status view's handlers: a consumer's batch writes what its events changed once, at its end
    # (shared.db.get_unflushed), not before each lookup.

    async def case(self, case_id: uuid.UUID) -> Case | None:
        return await get_unflushed(self.session, Case, case_id)

    async def referral(self, referral_id: uuid.UUID) -> Referral | None:
        return await get_unflushed(self.session, Referral, referral_id)

    async def household_case_status(
        self, household_case_id: uuid.UUID, resident_id: uuid.UUID
    ) -> HouseholdCaseStatus | None:
        return await self.session.get(HouseholdCaseStatus, (household_case_id, resident_id))

    async def household_case_of(self, resident_id: uuid.UUID) -> HouseholdCaseStatus | None:
        """The resident's household case: the running one, else the latest closed."""
        query = (
            select(HouseholdCaseStatus)
            .where(HouseholdCaseStatus.resident_id == resident_id)
            .order_by(*_shown_household_case_first(HouseholdCaseStatus))
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def referrals(self, application_id: uuid.UUID) -> list[Referral]:
        query = (
            select(Referral)
            .where(Referral.application_id == application_id)
            .order_by(Referral.referred_at, Referral.referral_id)
        )
        return list((await self.session.scalars(query)).all())

    async def add_office(self, application_id: uuid.UUID, office_code: str) -> None:
        """An office the application's case is or was in, kept aside as :meth:`add_timeline` keeps its entries when
        new (nothing changes an office row once written)."""
        key = (application_id, office_code)
        kept = self._kept(ApplicationOffice)
        if key in kept or await get_unflushed(self.session, ApplicationOffice, key) is not None:
            return
        values = {"application_id": application_id, "office_code": office_code}
        if self.session.in_nested_transaction():
            self.session.add(ApplicationOffice(**values))
        else:
            kept[key] = values

    async def notifications(self, application_id: uuid.UUID) -> list[Notification]:
        query = (
            select(Notification)
            .where(Notification.application_id == application_id)
            .order_by(Notification.status_at, Notification.notification_id)
        )
        return list((await self.session.scalars(query)).all())

    async def notification(self, notification_id: uuid.UUID) -> Notification | None:
        """As the transaction has it: one :meth:`add_notification` kept aside is made a pending ORM row for the caller
        to change (a later event about the same notification in the batch)."""
        values = self._kept(Notification).pop(notification_id, None)
        if values is not None:
            row = Notification(**values)
            self.session.add(row)
            return row
        return await get_unflushed(self.session, Notification, notification_id)

    def add_notification(self, values: dict[str, Any]) -> Notification | None:
        """A notification's first row (every column), kept aside as :meth:`add_timeline` keeps its entries and written
        with them; None then. Within a savepoint, whose rollback must take it back, the ORM row added at once."""
        if self.session.in_nested_transaction():
            row = Notification(**values)
            self.session.add(row)
            return row
        self._kept(Notification)[values["notification_id"]] = values
        return None

    def _kept(self, model: type[Any]) -> dict[Any, dict[str, Any]]:
        """The new rows of ``model`` kept aside in this transaction, by their primary key."""
        kept: dict[type[Any], dict[Any, dict[str, Any]]] = self.session.info.setdefault(_NEW_ROWS, {})
        return kept.setdefault(model, {})

    async def timeline(self, application_id: uuid.UUID) -> list[TimelineEntry]:
        query = (
            select(TimelineEntry)
            .where(TimelineEntry.application_id == application_id)
            .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        )
        return list((await self.session.scalars(query)).all())

    async def feedback(self, application_id: uuid.UUID) -> Feedback | None:
        return await self.session.get(Feedback, application_id)

    # ------------------------------------------------------------------------------------------ proactive offers
    # The resident's right to them was established by the caller (their own, a representative's scope, staff's
    # visibility of the resident); the handlers and the expiry timer act on behalf of no caller.

    async def opportunities_of(self, resident_id: uuid.UUID, status: str | None) -> list[Opportunity]:
        query = select(Opportunity).where(Opportunity.resident_id == resident_id)
        if status is not None:
            query = query.where(Opportunity.status == status)
        query = query.order_by(Opportunity.offered_at.desc(), Opportunity.id)
        return list((await self.session.scalars(query)).all())

    async def opportunity(
        self, resident_id: uuid.UUID, opportunity_id: uuid.UUID, *, for_update: bool = False
    ) -> Opportunity | None:
        query = select(Opportunity).where(Opportunity.id == opportunity_id, Opportunity.resident_id == resident_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def opportunity_for(self, resident_id: uuid.UUID, program_code: str) -> Opportunity | None:
        query = select(Opportunity).where(
            Opportunity.resident_id == resident_id, Opportunity.program_code == program_code
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def standing_offers(self, resident_id: uuid.UUID) -> list[Opportunity]:
        query = (
            select(Opportunity)
            .where(Opportunity.resident_id == resident_id, Opportunity.status == "offered")
            .with_for_update()
        )
        return list((await self.session.scalars(query)).all())

    async def lapsed_offers(self, today: dt.date, limit: int) -> list[Opportunity]:
        """Offers still standing whose last day is past, locked (another replica skips them: none is taken twice)."""
        query = (
            select(Opportunity)
            .where(Opportunity.status == "offered", Opportunity.expires_on < today)
            .order_by(Opportunity.expires_on, Opportunity.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.scalars(query)).all())

    async def questions_of(self, resident_id: uuid.UUID, status: str | None) -> list[ScreeningQuestion]:
        query = select(ScreeningQuestion).where(ScreeningQuestion.resident_id == resident_id)
        if status is not None:
            query = query.where(ScreeningQuestion.status == status)
        query = query.order_by(ScreeningQuestion.asked_at.desc(), ScreeningQuestion.id)
        return list((await self.session.scalars(query)).all())

    async def screening_question(
        self, question_id: uuid.UUID, *, resident_id: uuid.UUID | None = None, for_update: bool = False
    ) -> ScreeningQuestion | None:
        query = select(ScreeningQuestion).where(ScreeningQuestion.id == question_id)
        if resident_id is not None:
            query = query.where(ScreeningQuestion.resident_id == resident_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def open_questions(self, resident_id: uuid.UUID, fact: str | None = None) -> list[ScreeningQuestion]:
        query = select(ScreeningQuestion).where(
            ScreeningQuestion.resident_id == resident_id, ScreeningQuestion.status == "open"
        )
        if fact is not None:
            query = query.where(ScreeningQuestion.fact == fact)
        return list((await self.session.scalars(query.with_for_update())).all())

    async def answered_facts(self, resident_id: uuid.UUID) -> dict[str, Any]:
        """What the resident answered to screening questions, the latest answer per fact."""
        query = (
            select(ScreeningQuestion)
            .where(ScreeningQuestion.resident_id == resident_id, ScreeningQuestion.status == "answered")
            .order_by(ScreeningQuestion.answered_at)
        )
        return {q.fact: q.answer for q in (await self.session.scalars(query)).all()}

    # ------------------------------------------------------------------------------------------ rights over one's data

    async def applications_of(self, resident_id: uuid.UUID, *, for_update: bool = False) -> list[Application]:
        """Every application of the resident, oldest first (for their export and their erasure: the caller's right
        to all of them was established by the rights check)."""
        query = (
            select(Application)
            .where(Application.resident_id == resident_id)
            .order_by(Application.submitted_at, Application.id)
        )
        if for_update:
            query = query.with_for_update()
        return list((await self.session.scalars(query)).all())

    async def feedback_of(self, resident_id: uuid.UUID) -> list[Feedback]:
        query = select(Feedback).where(Feedback.resident_id == resident_id).order_by(Feedback.created_at)
        return list((await self.session.scalars(query)).all())

    async def data_export(self, export_id: uuid.UUID, *, for_update: bool = False) -> DataExport | None:
        query = select(DataExport).where(DataExport.id == export_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def data_exports_of(self, resident_id: uuid.UUID) -> list[DataExport]:
        query = select(DataExport).where(DataExport.resident_id == resident_id).order_by(DataExport.requested_at)
        return list((await self.session.scalars(query)).all())

    async def claim_due_exports(
        self, token: str, *, now: dt.datetime, lease: dt.timedelta, limit: int
    ) -> list[uuid.UUID]:
        """Claim pending exports that are due and held by no worker (or whose worker's lease ran out)."""
        due = (
            select(DataExport.id)
            .where(
                DataExport.status == "pending",
                DataExport.next_attempt_at <= now,
                or_(DataExport.claimed_until.is_(None), DataExport.claimed_until < now),
            )
            .order_by(DataExport.next_attempt_at)
            .limit(limit)
        )
        ids = list((await self.session.scalars(due)).all())
        claimed = []
        for export_id in ids:
            # Claimed only if no other worker claimed it meanwhile (the same condition, in the UPDATE).
            result = await self.session.execute(
                update(DataExport)
                .where(
                    DataExport.id == export_id,
                    DataExport.status == "pending",
                    or_(DataExport.claimed_until.is_(None), DataExport.claimed_until < now),
                )
                .values(claim_token=token, claimed_until=now + lease)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append(export_id)
        return claimed

    async def erasure_request(self, erasure_id: uuid.UUID, *, for_update: bool = False) -> ErasureRequest | None:
        query = select(ErasureRequest).where(ErasureRequest.id == erasure_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def erasure_request_of(self, resident_id: uuid.UUID) -> ErasureRequest | None:
        return (
            await self.session.execute(select(ErasureRequest).where(ErasureRequest.resident_id == resident_id))
        ).scalar_one_or_none()

    async def erasure_requests(self) -> list[ErasureRequest]:
        """Unscoped, for the housekeeping pass: every erasure whose kept records may come due."""
        return list((await self.session.scalars(select(ErasureRequest).order_by(ErasureRequest.requested_at))).all())

    async def erasure_confirmation(self, erasure_id: uuid.UUID, service: str) -> ErasureConfirmation | None:
        return await self.session.get(ErasureConfirmation, (erasure_id, service), with_for_update=True)


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]


@functools.cache
def _application_columns() -> tuple[tuple[str, NamedColumn[Any]], ...]:
    """An application's attributes and their columns. :meth:`Repository.file` gives every column its value from the
    object, so a column default (which the ORM would apply at a flush) never applies: the model has none."""
    return tuple((prop.key, prop.columns[0]) for prop in inspect(Application).column_attrs)


@functools.cache
def _timeline_columns() -> tuple[tuple[str, NamedColumn[Any]], ...]:
    """A timeline entry's attributes and their columns, but its id (the database numbers the entries)."""
    return tuple((prop.key, prop.columns[0]) for prop in inspect(TimelineEntry).column_attrs if prop.key != "id")


@functools.cache
def _writing_timeline() -> Insert:
    """The statement of :meth:`Repository.write_timeline`, made once (only its values change)."""
    table = cast(Table, TimelineEntry.__table__)
    return insert(table).values({column.name: bindparam(key, type_=column.type) for key, column in _timeline_columns()})


@functools.cache
def _filing(*, represented: bool) -> Insert:
    """The statement of :meth:`Repository.file`, made once (only its values change): ``INSERT INTO applications ...
    SELECT <the values> WHERE <the resident and the representation still stand>``."""
    conditions = [
        select(Resident.id)
        .where(Resident.id == bindparam("resident_id"), Resident.erased_at.is_(None))
        .with_for_update(read=True, key_share=True)
        .exists()
    ]
    if represented:
        conditions.append(
            select(Representation.id)
            .where(
                Representation.id == bindparam("representation_id"),
                Representation.revoked_at.is_(None),
                Representation.expires_on >= bindparam("today", type_=Date),
            )
            .exists()
        )
    columns = [column for _, column in _application_columns()]
    rows = select(*(bindparam(column.key, type_=column.type) for column in columns)).where(*conditions)
    table = cast(Table, Application.__table__)
    return insert(table).from_select([column.name for column in columns], rows).returning(table.c.id)
