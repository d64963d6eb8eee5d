"""Every query of the notify service. Reads made for a caller are scoped to that caller, so an object they may not
see is simply not found."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends
from sqlalchemy import ColumnElement, Table, case, delete, func, insert, inspect, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, lazyload

from services.notify.models import (
    RETRYABLE,
    AggregateCount,
    AggregatePeriod,
    ApplicationProgram,
    Delivery,
    DeliveryStatus,
    Letter,
    Notification,
    NotificationItem,
    NotificationStatus,
    Partner,
    PartnerConsent,
    PartnerGrant,
    Preference,
    Representation,
    ResidentChannel,
    ResidentErasure,
    ResidentState,
    Subscription,
    SubscriptionStatus,
    TrackedApplication,
    Transport,
    WebhookDelivery,
    platform,
    utcnow,
)
from shared.auth import Principal, Role
from shared.db import dialect_insert, execute_rows, get_unflushed, hold_loaded, note_absent, pending_rows
from shared.deps import SessionDep, WriteSessionDep
from shared.outbox import write_emitted

# The partner-facing tables a caller reads within a scope (their own rows; an administrator's: all).
Scoped = TypeVar("Scoped", Subscription, WebhookDelivery)
Key = TypeVar("Key", uuid.UUID, int)
# The resident-facing rows a worker holds under a claim.
Held = TypeVar("Held", Notification, Delivery)

# The applications and residents a transaction locked (see Repository.tracked_application, resident_state).
_LOCKED_APPLICATIONS = "notify_locked_applications"
_LOCKED_RESIDENTS = "notify_locked_residents"
# The bundles (notifications still collecting) a transaction found, by resident, application and kind (session.info).
_BUNDLES = "notify_open_bundles"
# The residents whose bundles a transaction loaded, and the items it loaded (event ids asked, pairs found).
_BUNDLES_LOADED = "notify_bundles_loaded"
_ITEMS = "notify_items_loaded"
# The programs a transaction added and has not written yet, by key (see Repository.add_program).
_NEW_PROGRAMS = "notify_new_programs"
# Made once: a statement used again keeps its cache key.
_INSERT_PROGRAMS = insert(cast(Table, ApplicationProgram.__table__))
# The items a transaction added and has not written yet (see Repository.add_item).
_NEW_ITEMS = "notify_new_items"
_INSERT_ITEMS = insert(cast(Table, NotificationItem.__table__))
# The notifications a transaction opened and has not written yet, by id (see Repository.add_notification).
_NEW_NOTIFICATIONS = "notify_new_notifications"
_INSERT_NOTIFICATIONS = insert(cast(Table, Notification.__table__))
# The residents a transaction found consenting to no partner (see Repository.consent_to_partners).
_CONSENTING_TO_NO_PARTNER = "notify_consenting_to_no_partner"


def _subscription_scope(principal: Principal) -> ColumnElement[bool] | None:
    """None: the caller sees no subscription at all."""
    live = Subscription.status != SubscriptionStatus.DELETED.value
    if principal.role is Role.ADMIN:
        return live
    if principal.role is Role.PARTNER and principal.partner_id:
        return live & (Subscription.partner_id == principal.partner_id)
    return None


def _delivery_scope(principal: Principal) -> ColumnElement[bool] | None:
    if principal.role is Role.ADMIN:
        return WebhookDelivery.seq.is_not(None)
    if principal.role is Role.PARTNER and principal.partner_id:
        return WebhookDelivery.partner_id == principal.partner_id
    return None


def new_claim_token() -> str:
    return secrets.token_hex(16)


def _unclaimed(model: Any, now: dt.datetime) -> ColumnElement[bool]:
    return or_(model.claimed_until.is_(None), model.claimed_until < now)


@dataclass(slots=True)
class NewNotification:
    """A notification a consumer's transaction opened and keeps aside until it writes it (see
    :meth:`Repository.add_notification`): the columns it sets, which it reads back while it bundles. Never claimed
    (no worker sees it before it is written)."""

    id: uuid.UUID
    resident_id: uuid.UUID
    application_id: uuid.UUID | None
    kind: str
    status: str
    language: str
    created_at: dt.datetime
    next_step_at: dt.datetime
    step_attempts: int = 0
    claim_token: None = None

    def values(self) -> dict[str, Any]:
        return {"id": self.id, "resident_id": self.resident_id, "application_id": self.application_id,
                "kind": self.kind, "status": self.status, "language": self.language, "created_at": self.created_at,
                "next_step_at": self.next_step_at, "step_attempts": self.step_attempts}  # fmt: skip


# A notification as the residents' consumer holds it: a row of the session, or one it opened and has not written.
Opened = Notification | NewNotification


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------------------------------ residents

    async def preference(self, resident_id: uuid.UUID) -> Preference | None:
        return await get_unflushed(self.session, Preference, resident_id)

    async def resident_state(self, resident_id: uuid.UUID) -> ResidentState:
        """The resident's row, locked, created on first sight (written with the rest of the transaction). Locked once,
        it stays locked to the end of the transaction, as :meth:`tracked_application` holds an application."""
        remember = not self.session.in_nested_transaction()
        locked: dict[uuid.UUID, ResidentState] = self.session.info.setdefault(_LOCKED_RESIDENTS, {})
        held = locked.get(resident_id) if remember else None
        if held is not None and not inspect(held).expired_attributes and held in self.session:
            return held
        state = await get_unflushed(self.session, ResidentState, resident_id, with_for_update=True)
        if state is None:
            state = ResidentState(resident_id=resident_id, consents={}, consent_version=0, profile_version=0,
                                  updated_at=utcnow())  # fmt: skip
            self.session.add(state)
        if remember:
            locked[resident_id] = state
        return state

    async def find_resident_state(self, resident_id: uuid.UUID) -> ResidentState | None:
        return await get_unflushed(self.session, ResidentState, resident_id)

    async def tracked_application(self, application_id: uuid.UUID, resident_id: uuid.UUID) -> TrackedApplication:
        """The application's row, locked, created on first sight (its events may come in any order). Locked once, it
        stays locked to the end of the transaction: the next event of a batch about it is given the row it holds.
        Not within a savepoint, whose rollback would release the lock (PostgreSQL)."""
        remember = not self.session.in_nested_transaction()
        locked: dict[uuid.UUID, TrackedApplication] = self.session.info.setdefault(_LOCKED_APPLICATIONS, {})
        held = locked.get(application_id) if remember else None
        if held is not None and not inspect(held).expired_attributes and held in self.session:
            return held
        application = await get_unflushed(self.session, TrackedApplication, application_id, with_for_update=True)
        if application is None:
            application = TrackedApplication(
                application_id=application_id, resident_id=resident_id, last_round=0, updated_at=utcnow()
            )
            self.session.add(application)
        if remember:
            locked[application_id] = application
        return application

    async def find_application(self, application_id: uuid.UUID | None) -> TrackedApplication | None:
        if application_id is None:
            return None
        return await self.session.get(TrackedApplication, application_id)

    async def application_program(self, application_id: uuid.UUID, program_code: str) -> ApplicationProgram | None:
        added = self._added_program(application_id, program_code)
        if added is not None:
            return added
        return await get_unflushed(self.session, ApplicationProgram, (application_id, program_code))

    def add_program(self, values: dict[str, Any]) -> None:
        """A program's first row (every column but the office, which a case event tells later), written with the
        others the transaction adds in one core INSERT at its end (:meth:`write_new_programs`): an eligibility result
        adds a row per program, through the ORM's unit of work an object each, which cost more than the statement.
        Looked up again by a later event of the transaction, it is made an ORM row then (:meth:`application_program`).
        Within a savepoint, whose rollback must take it back, an ORM row at once: a consumer runs a transaction's
        events in savepoints all or none (``Consumer._apply_apart``), so none is kept aside across one."""
        if self.session.in_nested_transaction():
            self.session.add(ApplicationProgram(**values))
            return
        added: dict[tuple[uuid.UUID, str], dict[str, Any]] = self.session.info.setdefault(_NEW_PROGRAMS, {})
        added[(values["application_id"], values["program_code"])] = values

    def _added_program(self, application_id: uuid.UUID, program_code: str) -> ApplicationProgram | None:
        """One :meth:`add_program` kept aside, made a pending ORM row for the caller to change."""
        added: dict[tuple[uuid.UUID, str], dict[str, Any]] | None = self.session.info.get(_NEW_PROGRAMS)
        values = added.pop((application_id, program_code), None) if added else None
        if values is None:
            return None
        row = ApplicationProgram(**values)
        self.session.add(row)
        return row

    async def write_new_programs(self) -> None:
        """Write the programs :meth:`add_program` kept aside: at the end of the transaction (the residents' consumer's
        ``finish``), and before a statement that must find them (an erasure deleting the resident's programs)."""
        added: dict[tuple[uuid.UUID, str], dict[str, Any]] | None = self.session.info.pop(_NEW_PROGRAMS, None)
        if added:
            await execute_rows(self.session, _INSERT_PROGRAMS, list(added.values()))

    def add_notification(self, notification: NewNotification) -> Opened:
        """A notification the consumer opens, written with the others the transaction opens in one core INSERT
        (:meth:`write_new_notifications`, before their items): an ORM object each, with its instance state, cascades
        and the unit of work's bookkeeping, cost more than the statement, and nothing in the consumer changes one
        once opened. Within a savepoint, whose rollback must take it back, an ORM row at once (as :meth:`add_item`)."""
        if self.session.in_nested_transaction():
            row = Notification(**notification.values())
            self.session.add(row)
            return row
        self.session.info.setdefault(_NEW_NOTIFICATIONS, {})[notification.id] = notification
        return notification

    async def write_new_notifications(self) -> None:
        """Write the notifications :meth:`add_notification` kept aside: before their items, and before a statement
        that must find them (an application's withdrawal suppressing its messages, an erasure deleting them). A later
        event of the transaction bundling with one of them then finds it in the database, as a row of the session
        that the statements since have changed as they did (:meth:`open_bundle`)."""
        added: dict[uuid.UUID, NewNotification] | None = self.session.info.pop(_NEW_NOTIFICATIONS, None)
        if not added:
            return
        await execute_rows(self.session, _INSERT_NOTIFICATIONS, [n.values() for n in added.values()])
        bundles: dict[tuple[Any, ...], Opened] = self.session.info.get(_BUNDLES, {})
        for key in [k for k, n in bundles.items() if isinstance(n, NewNotification)]:
            del bundles[key]
        self.session.info.get(_BUNDLES_LOADED, set()).difference_update(n.resident_id for n in added.values())

    def add_item(self, values: dict[str, Any]) -> None:
        """A notification's item, written with the others the transaction adds in one core INSERT at its end
        (:meth:`write_new_items`): nothing in the consumer reads an item back as an object, and an object each, with
        its cascades and the unit of work's bookkeeping, cost more than the statement. Within a savepoint, whose
        rollback must take it back, an ORM row at once (as :meth:`add_program`)."""
        if self.session.in_nested_transaction():
            self.session.add(NotificationItem(**values))
            return
        self.session.info.setdefault(_NEW_ITEMS, []).append(values)

    async def write_new_items(self) -> None:
        """Write the items :meth:`add_item` kept aside, after their notifications: at the end of the transaction
        (the residents' consumer's ``finish``), and before a statement that must find them (an erasure deleting the
        resident's messages)."""
        added: list[dict[str, Any]] | None = self.session.info.pop(_NEW_ITEMS, None)
        if added:
            await self.session.flush()  # the notifications they belong to: those of the session's rows
        await self.write_new_notifications()  # and those kept aside
        if added:
            await execute_rows(self.session, _INSERT_ITEMS, added)

    async def application_programs(
        self, application_id: uuid.UUID, codes: Sequence[str]
    ) -> dict[str, ApplicationProgram]:
        """Those of the application's programs named that are stored or that this transaction added (without writing
        what is pending first); loaded with the transaction's events (:meth:`load_for_events`), without a query."""
        found: dict[str, ApplicationProgram] = {}
        for code in dict.fromkeys(codes):
            row = await self.application_program(application_id, code)
            if row is not None:
                found[code] = row
        return found

    async def load_for_events(
        self, application_ids: set[uuid.UUID], programs: set[tuple[uuid.UUID, str]], event_ids: set[str],
        resident_ids: set[uuid.UUID],
    ) -> None:  # fmt: skip
        """Unscoped (the residents' consumer): what a transaction's events will look up, in a query per kind — the
        applications (locked, held as :meth:`tracked_application` holds them), the programs named, the items already
        told of these events, the residents' bundles still collecting (locked) — and what is not there noted as
        absent, so that each event asks the database nothing more. Not within a savepoint."""
        if self.session.in_nested_transaction():
            return
        hold_loaded(self.session)
        with self.session.no_autoflush:
            if resident_ids:
                await self._load_residents(resident_ids)
            if application_ids:
                locked: dict[uuid.UUID, TrackedApplication] = self.session.info.setdefault(_LOCKED_APPLICATIONS, {})
                tracked = select(TrackedApplication).where(TrackedApplication.application_id.in_(application_ids))
                for application in await self.session.scalars(tracked.order_by(TrackedApplication.application_id)
                                                              .with_for_update()):  # fmt: skip
                    locked[application.application_id] = application
                note_absent(self.session, TrackedApplication, application_ids - set(locked))
            if programs:
                named = select(ApplicationProgram).where(
                    ApplicationProgram.application_id.in_({a for a, _ in programs})
                )
                found = {(p.application_id, p.program_code) for p in await self.session.scalars(named)}
                note_absent(self.session, ApplicationProgram, programs - found)
            if event_ids:
                told = select(NotificationItem.source_event_id, NotificationItem.resident_id).where(
                    NotificationItem.source_event_id.in_(event_ids)
                )
                pairs = {(event_id, resident_id) for event_id, resident_id in (await self.session.execute(told)).all()}
                self.session.info[_ITEMS] = (set(event_ids), pairs)
            if resident_ids:
                collecting = (
                    select(Notification)
                    .where(
                        Notification.resident_id.in_(resident_ids),
                        Notification.status == NotificationStatus.COLLECTING.value,
                        Notification.claim_token.is_(None),
                    )
                    .order_by(Notification.created_at)
                    .with_for_update()
                    .options(lazyload(Notification.items))  # added to, never read, by the consumer
                )
                bundles: dict[tuple[Any, ...], Opened] = self.session.info.setdefault(_BUNDLES, {})
                for n in await self.session.scalars(collecting):
                    bundles[(n.resident_id, n.application_id, n.kind)] = n  # the newest last
                self.session.info.setdefault(_BUNDLES_LOADED, set()).update(resident_ids)

    async def _load_residents(self, resident_ids: set[uuid.UUID]) -> None:
        """The residents' rows (locked, held as :meth:`resident_state` holds them) and preferences, and whether they
        asked for erasure: a query each for the whole transaction."""
        locked: dict[uuid.UUID, ResidentState] = self.session.info.setdefault(_LOCKED_RESIDENTS, {})
        states = select(ResidentState).where(ResidentState.resident_id.in_(resident_ids))
        for state in await self.session.scalars(states.order_by(ResidentState.resident_id).with_for_update()):
            locked[state.resident_id] = state
        note_absent(self.session, ResidentState, resident_ids - set(locked))
        preferences = select(Preference).where(Preference.resident_id.in_(resident_ids))
        found = {p.resident_id for p in await self.session.scalars(preferences)}
        note_absent(self.session, Preference, resident_ids - found)
        await self.load_erasures(resident_ids)

    async def load_erasures(self, resident_ids: set[uuid.UUID]) -> None:
        """Which of these residents asked for erasure, for :func:`services.notify.resident_data.erased` to answer
        from for the rest of the transaction (an erasure it handles itself is added to the session). Not within a
        savepoint."""
        if self.session.in_nested_transaction() or not resident_ids:
            return
        hold_loaded(self.session)
        with self.session.no_autoflush:
            found = select(ResidentErasure).where(ResidentErasure.resident_id.in_(resident_ids))
            erased = {row.resident_id for row in await self.session.scalars(found)}
        note_absent(self.session, ResidentErasure, resident_ids - erased)

    def told(self, notification: Opened, source_event_id: str, resident_id: uuid.UUID) -> None:
        """This transaction added ``notification`` (or added to it) for the event: what :meth:`open_bundle` and
        :meth:`item_exists` answer from, for the rest of it."""
        if notification.status == NotificationStatus.COLLECTING.value and not self.session.in_nested_transaction():
            key = (notification.resident_id, notification.application_id, notification.kind)
            self.session.info.setdefault(_BUNDLES, {})[key] = notification
        loaded = self.session.info.get(_ITEMS)
        if loaded is not None:
            loaded[1].add((source_event_id, resident_id))

    async def item_exists(self, source_event_id: str, resident_id: uuid.UUID) -> bool:
        """Among the items stored and those this transaction added (without writing them first)."""
        loaded: tuple[set[str], set[tuple[str, uuid.UUID]]] | None = self.session.info.get(_ITEMS)
        if loaded is not None and source_event_id in loaded[0]:
            # Loaded with the transaction's events, and each item added since is told (:meth:`told`): the session's
            # new rows need no search.
            return (source_event_id, resident_id) in loaded[1]
        if any(
            i.source_event_id == source_event_id and i.resident_id == resident_id
            for i in pending_rows(self.session, NotificationItem)
        ) or any(
            i["source_event_id"] == source_event_id and i["resident_id"] == resident_id
            for i in self.session.info.get(_NEW_ITEMS, ())
        ):
            return True
        with self.session.no_autoflush:
            found = await self.session.scalar(
                select(NotificationItem.id).where(
                    NotificationItem.source_event_id == source_event_id, NotificationItem.resident_id == resident_id
                )
            )
        return found is not None

    async def open_bundle(
        self, resident_id: uuid.UUID, application_id: uuid.UUID | None, kind: str, now: dt.datetime
    ) -> Opened | None:
        """A notification of the same kind still collecting (not claimed by a worker), locked so that a worker cannot
        release it while we add to it. One this transaction opened or found before is taken without asking the
        database again (and without writing what is pending first: a consumer's batch writes once, at its end)."""

        def collecting(n: Opened) -> bool:
            return (
                n.resident_id == resident_id and n.application_id == application_id and n.kind == kind
                and n.status == NotificationStatus.COLLECTING.value and n.claim_token is None and n.next_step_at > now
            )  # fmt: skip

        kept: dict[uuid.UUID, NewNotification] = self.session.info.get(_NEW_NOTIFICATIONS, {})
        opened: list[Opened] = [n for n in pending_rows(self.session, Notification) if collecting(n)]
        opened += [n for n in kept.values() if collecting(n)]
        if opened:
            return max(opened, key=lambda n: n.created_at)
        found: dict[tuple[Any, ...], Opened] = self.session.info.setdefault(_BUNDLES, {})
        key = (resident_id, application_id, kind)
        held = found.get(key) if not self.session.in_nested_transaction() else None
        if held is not None and self._current(held, kept) and collecting(held):
            return held
        if not self.session.in_nested_transaction() and resident_id in self.session.info.get(_BUNDLES_LOADED, ()):
            return None  # the resident's bundles were loaded with the transaction's events (load_for_events)
        same_application = (
            Notification.application_id.is_(None)
            if application_id is None
            else Notification.application_id == application_id
        )
        with self.session.no_autoflush:
            bundle = await self.session.scalar(
                select(Notification)
                .where(
                    Notification.resident_id == resident_id,
                    same_application,
                    Notification.kind == kind,
                    Notification.status == NotificationStatus.COLLECTING.value,
                    Notification.claim_token.is_(None),
                    Notification.next_step_at > now,
                )
                .order_by(Notification.created_at.desc())
                .limit(1)
                .with_for_update()
                .options(lazyload(Notification.items))  # added to, never read, by the consumer
            )
        if bundle is not None and not self.session.in_nested_transaction():
            found[key] = bundle  # locked to the end of the transaction (a savepoint's rollback would release it)
        return bundle

    def _current(self, notification: Opened, kept: dict[uuid.UUID, NewNotification]) -> bool:
        """Whether a notification the transaction holds is as it is now: still kept aside, or a row of the session
        not expired."""
        if isinstance(notification, NewNotification):
            return notification.id in kept
        return notification in self.session and not inspect(notification).expired_attributes

    async def suppress_for_application(self, application_id: uuid.UUID, keep_kind: str) -> None:
        """Nothing more goes out for a withdrawn application: unreleased messages and unsent deliveries are stopped.
        Deliveries a worker holds right now are re-checked by that worker before it sends."""
        await self.write_new_notifications()  # those of the same batch: suppressed too
        now = utcnow()
        await self.session.execute(
            update(Notification)
            .where(
                Notification.application_id == application_id,
                Notification.kind != keep_kind,
                Notification.status == NotificationStatus.COLLECTING.value,
                Notification.claim_token.is_(None),
            )
            .values(status=NotificationStatus.SUPPRESSED.value, last_error="application withdrawn")
        )
        ids = select(Notification.id).where(
            Notification.application_id == application_id, Notification.kind != keep_kind
        )
        await self.session.execute(
            update(Delivery)
            .where(Delivery.notification_id.in_(ids), Delivery.status.in_(RETRYABLE), Delivery.claim_token.is_(None))
            .values(status=DeliveryStatus.SUPPRESSED.value, last_error="application withdrawn", updated_at=now)
        )

    async def representation(self, representation_id: uuid.UUID) -> Representation | None:
        return await self.session.get(Representation, representation_id)

    async def current_representations(
        self, representative_id: uuid.UUID, resident_id: uuid.UUID, today: dt.date
    ) -> Sequence[Representation]:
        """The representations of the resident by this representative that hold today (not revoked, not expired)."""
        query = select(Representation).where(
            Representation.representative_id == representative_id,
            Representation.resident_id == resident_id,
            Representation.revoked_at.is_(None),
            Representation.expires_on >= today,
        )
        return (await self.session.scalars(query.order_by(Representation.updated_at.desc()))).all()

    async def notification(self, notification_id: uuid.UUID) -> Notification | None:
        """Unscoped: for the delivery worker, which acts on behalf of no caller."""
        return await self.session.get(Notification, notification_id)

    async def inbox(
        self, resident_id: uuid.UUID, *, unread_only: bool, limit: int, before: dt.datetime | None
    ) -> Sequence[Notification]:
        query = (
            select(Notification)
            .where(Notification.resident_id == resident_id, Notification.released_at.is_not(None))
            .order_by(Notification.released_at.desc(), Notification.id.desc())
            .limit(limit)
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        if before is not None:
            query = query.where(Notification.released_at < before)
        return (await self.session.scalars(query)).all()

    async def unread_count(self, resident_id: uuid.UUID) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(
                Notification.resident_id == resident_id,
                Notification.released_at.is_not(None),
                Notification.read_at.is_(None),
            )
        )
        return int(count or 0)

    async def inbox_item(self, resident_id: uuid.UUID, notification_id: uuid.UUID) -> Notification | None:
        return await self.session.scalar(
            select(Notification).where(
                Notification.id == notification_id,
                Notification.resident_id == resident_id,
                Notification.released_at.is_not(None),
            )
        )

    async def letters(self, *, status: str | None, limit: int) -> Sequence[Letter]:
        """The post room's list, oldest first (the order to print them in)."""
        query = select(Letter).order_by(Letter.created_at, Letter.id).limit(limit)
        if status is not None:
            query = query.where(Letter.status == status)
        return (await self.session.scalars(query)).all()

    async def letter(self, letter_id: uuid.UUID, *, for_update: bool = False) -> Letter | None:
        query = select(Letter).where(Letter.id == letter_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def notification_deliveries(
        self,
        *,
        status: str | None,
        channel: str | None,
        resident_id: uuid.UUID | None,
        limit: int,
    ) -> Sequence[Delivery]:
        query = select(Delivery).order_by(Delivery.updated_at.desc(), Delivery.id).limit(limit)
        if status:
            query = query.where(Delivery.status == status)
        if channel:
            query = query.where(Delivery.channel == channel)
        if resident_id:
            query = query.where(Delivery.resident_id == resident_id)
        return (await self.session.scalars(query)).all()

    async def notification_delivery(self, delivery_id: uuid.UUID) -> Delivery | None:
        return await self.session.scalar(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update(of=Delivery)
        )

    # ------------------------------------------------------------------------------------------ partners

    async def partner(self, partner_id: str, *, for_update: bool = False) -> Partner | None:
        return await self.session.get(Partner, partner_id, with_for_update=for_update)

    async def visible_partner(self, principal: Principal, partner_id: str) -> Partner | None:
        if principal.role is Role.ADMIN or (principal.role is Role.PARTNER and principal.partner_id == partner_id):
            return await self.session.get(Partner, partner_id)
        return None

    async def partners(self) -> Sequence[Partner]:
        return (await self.session.scalars(select(Partner).order_by(Partner.id))).all()

    async def granted_types(self, partner_id: str) -> set[str]:
        rows = await self.session.scalars(select(PartnerGrant.event_type).where(PartnerGrant.partner_id == partner_id))
        return set(rows)

    async def grant_purpose(self, partner_id: str, event_type: str) -> str | None:
        """The purpose the partner is granted ``event_type`` for (None: not granted)."""
        return await self.session.scalar(
            select(PartnerGrant.purpose).where(
                PartnerGrant.partner_id == partner_id, PartnerGrant.event_type == event_type
            )
        )

    async def grant_purposes(self, event_type: str) -> dict[str, str]:
        """Partner id -> purpose, for every partner granted ``event_type``."""
        rows = await self.session.execute(
            select(PartnerGrant.partner_id, PartnerGrant.purpose).where(PartnerGrant.event_type == event_type)
        )
        return {partner_id: purpose for partner_id, purpose in rows}

    # ------------------------------------------------------------------------------------------ partner consents

    async def partner_consent(self, resident_id: uuid.UUID) -> PartnerConsent:
        """The resident's partner consents, locked, created (consenting to nothing) on first sight."""
        self.session.info.get(_CONSENTING_TO_NO_PARTNER, set()).discard(resident_id)  # it may change now
        consent = await self.session.get(PartnerConsent, resident_id, with_for_update=True)
        if consent is None:
            consent = PartnerConsent(resident_id=resident_id, purposes=[], version=0, updated_at=utcnow())
            self.session.add(consent)
            await self.session.flush()
        return consent

    async def find_partner_consent(self, resident_id: uuid.UUID) -> PartnerConsent | None:
        return await self.session.get(PartnerConsent, resident_id)

    async def consent_to_partners(self, resident_id: uuid.UUID) -> PartnerConsent | None:
        """The resident's partner consents if they name any partner, else None. The transaction remembers the
        residents consenting to none (most): the partners' consumer asks about them event after event."""
        none: set[uuid.UUID] = self.session.info.setdefault(_CONSENTING_TO_NO_PARTNER, set())
        if resident_id in none:
            return None
        consent = await get_unflushed(self.session, PartnerConsent, resident_id)
        if consent is None or not consent.purposes:
            none.add(resident_id)
            return None
        return consent

    async def load_partner_consents(self, resident_ids: set[uuid.UUID]) -> None:
        """Unscoped (the partners' consumer): these residents' consents to partners, in one query for a transaction's
        events; those consenting to none are remembered as such (:meth:`consent_to_partners`). Not within a
        savepoint."""
        if self.session.in_nested_transaction() or not resident_ids:
            return
        hold_loaded(self.session)
        with self.session.no_autoflush:
            found = await self.session.scalars(
                select(PartnerConsent).where(PartnerConsent.resident_id.in_(resident_ids))
            )
            consents = {c.resident_id: c for c in found}
        note_absent(self.session, PartnerConsent, resident_ids - set(consents))
        none: set[uuid.UUID] = self.session.info.setdefault(_CONSENTING_TO_NO_PARTNER, set())
        none.update(r for r in resident_ids if r not in consents or not consents[r].purposes)

    async def queued_deliveries_about(self, resident_id: uuid.UUID) -> Sequence[WebhookDelivery]:
        """Unscoped, for the partners' consumer: webhook deliveries about the resident not delivered yet."""
        rows = await self.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.resident_id == resident_id, WebhookDelivery.status.in_(RETRYABLE))
            .order_by(WebhookDelivery.seq)
            .with_for_update()
        )
        return rows.all()

    async def queued_partner_copies(self, prefix: str) -> list[tuple[int, str, str]]:
        """(outbox row id, subject, payload) of the partners' NATS copies the relay has not published yet, those this
        transaction emitted among them."""
        await write_emitted(self.session)
        outbox = platform.outbox
        rows = await self.session.execute(
            select(outbox.c.id, outbox.c.subject, outbox.c.payload)
            .where(outbox.c.published_at.is_(None), outbox.c.subject.startswith(f"{prefix}.partner.", autoescape=True))
            .order_by(outbox.c.id)
        )
        return [(row_id, subject, payload) for row_id, subject, payload in rows]

    async def drop_queued_outbox_rows(self, row_ids: Sequence[int]) -> list[int]:
        """Delete these outbox rows unless published meanwhile; the ids of those deleted."""
        outbox = platform.outbox
        deleted = await self.session.execute(
            delete(outbox).where(outbox.c.id.in_(list(row_ids)), outbox.c.published_at.is_(None)).returning(outbox.c.id)
        )
        return list(deleted.scalars())

    async def nats_subscription_of(self, partner_id: str, event_type: str) -> Subscription | None:
        """The partner's NATS subscription covering ``event_type`` (a live one before a deleted one), where a dropped
        copy is recorded."""
        rows = await self.session.scalars(
            select(Subscription)
            .where(Subscription.partner_id == partner_id, Subscription.transport == Transport.NATS.value)
            .order_by(
                case((Subscription.status == SubscriptionStatus.DELETED.value, 1), else_=0),
                Subscription.created_at,
                Subscription.id,
            )
        )
        return next((s for s in rows if event_type in s.event_types), None)

    # ------------------------------------------------------------------------------------------ aggregate feed

    async def open_aggregate_period(self, start: dt.datetime, length: dt.timedelta) -> AggregatePeriod:
        """The period starting at ``start``, locked; if it was published already, the first open one after it."""
        while True:
            await self.session.execute(
                dialect_insert(self.session)(AggregatePeriod)
                .values(period_start=start, period_end=start + length, published_at=None)
                .on_conflict_do_nothing(index_elements=["period_start"])
            )
            period = await self.session.scalar(
                select(AggregatePeriod)
                .where(AggregatePeriod.period_start == start)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            assert period is not None
            if period.published_at is None:
                return period
            start = period.period_end

    async def count_determinations(self, period_start: dt.datetime, counts: dict[tuple[str, str, str], int]) -> None:
        """Add ``counts`` ((district code, program code, outcome) -> how many) to the period's counts, in one
        statement."""
        if not counts:
            return
        insert = dialect_insert(self.session)(AggregateCount).values(
            [
                {"period_start": period_start, "district_code": district_code, "program_code": program_code,
                 "outcome": outcome, "count": n}
                for (district_code, program_code, outcome), n in sorted(counts.items())
            ]
        )  # fmt: skip
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=["period_start", "district_code", "program_code", "outcome"],
                set_={"count": AggregateCount.__table__.c.count + insert.excluded.count},
            )
        )

    async def claim_due_aggregate_periods(self, now: dt.datetime, limit: int) -> list[tuple[dt.datetime, dt.datetime]]:
        """(start, end) of ended periods not published yet, oldest first, marked published by this transaction. The
        UPDATE repeats the condition: a period another replica (or a count going in) holds is waited for, and one it
        published meanwhile is not taken again."""
        starts = list(
            await self.session.scalars(
                select(AggregatePeriod.period_start)
                .where(AggregatePeriod.published_at.is_(None), AggregatePeriod.period_end <= now)
                .order_by(AggregatePeriod.period_start)
                .limit(limit)
            )
        )
        claimed = []
        for start in starts:
            result = await self.session.execute(
                update(AggregatePeriod)
                .where(AggregatePeriod.period_start == start, AggregatePeriod.published_at.is_(None))
                .values(published_at=now)
                .returning(AggregatePeriod.period_start, AggregatePeriod.period_end)
            )
            row = result.first()
            if row is not None:
                claimed.append((row[0], row[1]))
        return claimed

    async def aggregate_counts(self, period_start: dt.datetime) -> Sequence[AggregateCount]:
        rows = await self.session.scalars(
            select(AggregateCount)
            .where(AggregateCount.period_start == period_start)
            .order_by(AggregateCount.district_code, AggregateCount.program_code, AggregateCount.outcome)
        )
        return rows.all()

    async def subscription(self, subscription_id: uuid.UUID, *, for_update: bool = False) -> Subscription | None:
        """Unscoped: for the webhook worker, and for a delivery the caller was already found to see.

        Locked FOR NO KEY UPDATE (PostgreSQL): it does not wait for the partners' consumer, whose transaction holds a
        key-share lock on the subscription for every delivery it queues (the foreign key) until its batch commits."""
        lock = {"key_share": True} if for_update else None
        return await self.session.get(Subscription, subscription_id, with_for_update=lock)

    async def visible_subscriptions(
        self, principal: Principal, *, partner_id: str | None, limit: int
    ) -> Sequence[Subscription]:
        scope = _subscription_scope(principal)
        if scope is None:
            return []
        query = select(Subscription).where(scope).order_by(Subscription.created_at, Subscription.id).limit(limit)
        if partner_id:
            query = query.where(Subscription.partner_id == partner_id)
        return (await self.session.scalars(query)).all()

    async def visible_subscription(
        self, principal: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
    ) -> Subscription | None:
        return await self._one_in_scope(Subscription, _subscription_scope(principal), subscription_id, for_update)

    async def subscriptions_for(self, event_type: str) -> list[Subscription]:
        """Live subscriptions (active or paused: a paused one keeps queueing) that cover ``event_type`` and whose
        partner is still granted it."""
        rows = await self.session.scalars(
            select(Subscription)
            .join(
                PartnerGrant,
                (PartnerGrant.partner_id == Subscription.partner_id) & (PartnerGrant.event_type == event_type),
            )
            .where(Subscription.status != SubscriptionStatus.DELETED.value)
            .order_by(Subscription.created_at, Subscription.id)
        )
        return [s for s in rows if event_type in s.event_types]

    async def webhook_delivery_exists(self, subscription_id: uuid.UUID, event_id: str) -> bool:
        found = await self.session.scalar(
            select(WebhookDelivery.seq).where(
                WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.event_id == event_id
            )
        )
        return found is not None

    async def visible_webhook_deliveries(
        self,
        principal: Principal,
        *,
        status: str | None,
        subscription_id: uuid.UUID | None,
        event_type: str | None,
        limit: int,
        before_seq: int | None,
    ) -> Sequence[WebhookDelivery]:
        scope = _delivery_scope(principal)
        if scope is None:
            return []
        query = select(WebhookDelivery).where(scope).order_by(WebhookDelivery.seq.desc()).limit(limit)
        if status:
            query = query.where(WebhookDelivery.status == status)
        if subscription_id:
            query = query.where(WebhookDelivery.subscription_id == subscription_id)
        if event_type:
            query = query.where(WebhookDelivery.event_type == event_type)
        if before_seq is not None:
            query = query.where(WebhookDelivery.seq < before_seq)
        return (await self.session.scalars(query)).all()

    async def visible_webhook_delivery(
        self, principal: Principal, delivery_id: uuid.UUID, *, for_update: bool = False
    ) -> WebhookDelivery | None:
        return await self._one_in_scope(WebhookDelivery, _delivery_scope(principal), delivery_id, for_update)

    async def _one_in_scope(
        self, model: type[Scoped], scope: ColumnElement[bool] | None, row_id: uuid.UUID, for_update: bool
    ) -> Scoped | None:
        """The row with this id if it lies in the caller's scope (None: the caller sees no such rows at all)."""
        if scope is None:
            return None
        query = select(model).where(scope, model.id == row_id)
        if for_update:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def cancel_queued_webhooks(self, subscription_id: uuid.UUID, reason: str) -> None:
        await self.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.status.in_(RETRYABLE))
            .values(status=DeliveryStatus.CANCELLED.value, last_error=reason, updated_at=utcnow())
        )

    async def wake_queue_head(self, subscription_id: uuid.UUID) -> None:
        """Make the subscription's next delivery due now (after a resume)."""
        head = await self.session.scalar(
            select(func.min(WebhookDelivery.seq)).where(
                WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.status.in_(RETRYABLE)
            )
        )
        if head is not None:
            await self.session.execute(
                update(WebhookDelivery).where(WebhookDelivery.seq == head).values(next_attempt_at=utcnow())
            )

    # ------------------------------------------------------------------------------------------ claims

    # A worker claims rows before working on them: an UPDATE that only succeeds where no unexpired claim exists.
    # On PostgreSQL concurrent claimers re-check the condition after the row lock (READ COMMITTED), on SQLite
    # writers are serialised (BEGIN IMMEDIATE); either way exactly one worker holds a row until it finishes or its
    # lease runs out.

    async def held(self, model: type[Held], row_id: uuid.UUID, token: str) -> Held | None:
        """The row, locked, if the worker's claim on it (``token``) still stands."""
        return await self.session.scalar(
            select(model).where(model.id == row_id, model.claim_token == token).with_for_update(of=model)
        )

    async def claimed_residents(self, notification_ids: Sequence[uuid.UUID], token: str) -> dict[uuid.UUID, uuid.UUID]:
        """Notification id -> resident id, of those on which the worker's claim (``token``) still stands."""
        rows = await self.session.execute(
            select(Notification.id, Notification.resident_id).where(
                Notification.id.in_(notification_ids), Notification.claim_token == token
            )
        )
        return {notification_id: resident_id for notification_id, resident_id in rows}

    async def held_all(self, model: type[Held], row_ids: Sequence[uuid.UUID], token: str) -> dict[uuid.UUID, Held]:
        """Those of the rows, locked, on which the worker's claim (``token``) still stands, by id: one query for a
        worker's whole batch."""
        rows = await self.session.scalars(
            select(model).where(model.id.in_(row_ids), model.claim_token == token).with_for_update(of=model)
        )
        return {row.id: row for row in rows.unique()}

    async def record_sent(self, delivery_ids: Sequence[uuid.UUID], token: str, now: dt.datetime) -> set[uuid.UUID]:
        """Record these deliveries as sent, and released, in one statement on the rows on which the worker's claim
        (``token``) still stands; their ids. Nothing is read first: the worker knows what it sent."""
        recorded = await self.session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(delivery_ids), Delivery.claim_token == token)
            .values(
                status=DeliveryStatus.SENT.value,
                attempts=Delivery.attempts + 1,
                sent_at=now,
                updated_at=now,
                last_error=None,
                claim_token=None,
                claimed_until=None,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
        return set(recorded)

    async def applications_by_id(self, application_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, TrackedApplication]:
        """Unscoped: for the delivery worker's batch."""
        if not application_ids:
            return {}
        rows = await self.session.scalars(
            select(TrackedApplication).where(TrackedApplication.application_id.in_(set(application_ids)))
        )
        return {row.application_id: row for row in rows}

    async def preferences(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Preference]:
        """Unscoped: for the delivery worker's batch."""
        if not resident_ids:
            return {}
        rows = await self.session.scalars(select(Preference).where(Preference.resident_id.in_(set(resident_ids))))
        return {row.resident_id: row for row in rows}

    async def held_webhook_delivery(self, seq: int, token: str) -> WebhookDelivery | None:
        """The webhook delivery, locked, if the worker's claim on it (``token``) still stands."""
        return await self.session.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.seq == seq, WebhookDelivery.claim_token == token)
            .with_for_update()
        )

    async def claim_notifications(
        self, token: str, *, now: dt.datetime, lease: dt.timedelta, limit: int
    ) -> list[uuid.UUID]:
        due = (
            Notification.status.in_([NotificationStatus.COLLECTING.value, NotificationStatus.READY.value]),
            Notification.next_step_at <= now,
            _unclaimed(Notification, now),
        )
        return await self._claim(Notification.id, due, Notification.next_step_at, token, now + lease, limit)

    async def claim_deliveries(
        self, token: str, *, now: dt.datetime, lease: dt.timedelta, limit: int
    ) -> list[uuid.UUID]:
        due = (Delivery.status.in_(RETRYABLE), Delivery.next_attempt_at <= now, _unclaimed(Delivery, now))
        return await self._claim(Delivery.id, due, Delivery.next_attempt_at, token, now + lease, limit)

    async def claim_webhook_heads(self, token: str, *, now: dt.datetime, lease: dt.timedelta, limit: int) -> list[int]:
        """The first unfinished delivery of each active subscription, if it is due and nobody holds it. Later deliveries
        of a subscription wait for that one: order is kept per subscription."""
        heads = (
            select(func.min(WebhookDelivery.seq).label("seq"))
            .join(Subscription, Subscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.status.in_(RETRYABLE), Subscription.status == SubscriptionStatus.ACTIVE.value)
            .group_by(WebhookDelivery.subscription_id)
            .subquery()
        )
        due = (
            WebhookDelivery.status.in_(RETRYABLE),
            WebhookDelivery.next_attempt_at <= now,
            _unclaimed(WebhookDelivery, now),
        )
        among_heads = WebhookDelivery.seq.in_(select(heads.c.seq))
        return await self._claim(
            WebhookDelivery.seq, due, WebhookDelivery.next_attempt_at, token, now + lease, limit, among=among_heads
        )

    async def _claim(
        self,
        key: InstrumentedAttribute[Key],
        due: tuple[ColumnElement[bool], ...],
        soonest: InstrumentedAttribute[dt.datetime],
        token: str,
        until: dt.datetime,
        limit: int,
        *,
        among: ColumnElement[bool] | None = None,
    ) -> list[Key]:
        """Claim up to ``limit`` due rows (``among`` narrows which may be picked), soonest first; the keys of those this
        worker got, as the UPDATE returns them. The UPDATE repeats ``due``, so a row another worker claimed in between
        is not taken."""
        table = key.class_
        picked = select(key).where(*due).order_by(soonest).limit(limit)
        if among is not None:
            picked = picked.where(among)
        keys = list(await self.session.scalars(picked))
        if not keys:
            return []
        claimed = (
            update(table)
            .where(key.in_(keys), *due)
            .values(claim_token=token, claimed_until=until)
            .returning(key)
            .execution_options(synchronize_session=False)
        )
        return list(await self.session.scalars(claimed))

    async def recheck_waiting_sms(self, resident_id: uuid.UUID) -> None:
        """Text messages never tried because of quiet hours become due now; the worker applies the current hours."""
        await self.session.execute(
            update(Delivery)
            .where(
                Delivery.resident_id == resident_id,
                Delivery.channel == ResidentChannel.SMS.value,
                Delivery.status == DeliveryStatus.PENDING.value,
                Delivery.next_attempt_at > utcnow(),
                Delivery.claim_token.is_(None),
            )
            .values(next_attempt_at=utcnow())
        )


async def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_write_repository(session: WriteSessionDep) -> Repository:
    return Repository(session)


# For a GET that must write what it shows (a resident's data export, which lists its own read).
WriteRepositoryDep = Annotated[Repository, Depends(get_write_repository)]
