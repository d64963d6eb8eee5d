"""Every query of the intake service. Reads of residents and applications are scoped to the caller: what the caller
may not see is simply not found."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import Depends
from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.intake.models import (
    Application,
    ApplicationOffice,
    Case,
    Consent,
    ConsentChange,
    Determination,
    Feedback,
    Notification,
    Referral,
    Resident,
    TimelineEntry,
)
from shared.auth import Principal, Role
from shared.deps import SessionDep

OFFICE_ROLES = (Role.CASEWORKER, Role.SUPERVISOR)


def _has_case_in_offices(
    application_id: InstrumentedAttribute[uuid.UUID], offices: frozenset[str]
) -> ColumnElement[bool]:
    return exists().where(
        ApplicationOffice.application_id == application_id, ApplicationOffice.office_code.in_(sorted(offices))
    )


def application_scope(principal: Principal) -> ColumnElement[bool]:
    """The applications the caller may read: a resident their own, office staff those with a case (now or before)
    in one of their offices, an admin all."""
    if principal.role is Role.RESIDENT and principal.resident_id is not None:
        return Application.resident_id == principal.resident_id
    if principal.role is Role.ADMIN:
        return true()
    if principal.role in OFFICE_ROLES and principal.offices:
        return _has_case_in_offices(Application.id, principal.offices)
    return false()


def resident_scope(principal: Principal) -> ColumnElement[bool]:
    """The resident records the caller may read: their own; for office staff, residents they registered at a counter
    or with an application that has a case in their offices; an admin all."""
    if principal.role is Role.RESIDENT and principal.resident_id is not None:
        return Resident.id == principal.resident_id
    if principal.role is Role.ADMIN:
        return true()
    if principal.role in OFFICE_ROLES and principal.offices:
        return or_(
            Resident.registered_by == principal.subject,
            exists().where(
                Application.resident_id == Resident.id, _has_case_in_offices(Application.id, principal.offices)
            ),
        )
    return false()


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------------------------------------ residents

    async def resident(self, resident_id: uuid.UUID) -> Resident | None:
        """Unscoped: for checks that reveal nothing to the caller (does this id exist?)."""
        return await self.session.get(Resident, resident_id)

    async def visible_resident(
        self, principal: Principal, resident_id: uuid.UUID, *, for_update: bool = False
    ) -> Resident | None:
        query = select(Resident).where(Resident.id == resident_id, resident_scope(principal))
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def has_case_in_offices(self, resident_id: uuid.UUID, offices: frozenset[str]) -> bool:
        query = select(
            exists().where(Application.resident_id == resident_id, _has_case_in_offices(Application.id, offices))
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

    # ------------------------------------------------------------------------------------------ applications

    async def application(self, application_id: uuid.UUID, *, for_update: bool = False) -> Application | None:
        """Unscoped: for event handlers, which act on behalf of no caller."""
        query = select(Application).where(Application.id == application_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def visible_application(
        self, principal: Principal, application_id: uuid.UUID, *, for_update: bool = False
    ) -> Application | None:
        query = select(Application).where(Application.id == application_id, application_scope(principal))
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_applications(
        self,
        principal: Principal,
        *,
        resident_id: uuid.UUID | None,
        status: str | None,
        after: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Application]:
        """Newest first; ``after`` is the (submitted_at, id) of the last item of the previous page."""
        query = select(Application).where(application_scope(principal))
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
        return await self.session.get(Determination, application_id)

    async def cases(self, application_id: uuid.UUID) -> list[Case]:
        query = select(Case).where(Case.application_id == application_id).order_by(Case.first_seen_at)
        return list((await self.session.scalars(query)).all())

    async def case(self, case_id: uuid.UUID) -> Case | None:
        return await self.session.get(Case, case_id)

    async def referral(self, referral_id: uuid.UUID) -> Referral | None:
        return await self.session.get(Referral, referral_id)

    async def referrals(self, application_id: uuid.UUID) -> list[Referral]:
        query = (
            select(Referral)
            .where(Referral.application_id == application_id)
            .order_by(Referral.referred_at, Referral.referral_id)
        )
        return list((await self.session.scalars(query)).all())

    async def add_office(self, application_id: uuid.UUID, office_code: str) -> None:
        if await self.session.get(ApplicationOffice, (application_id, office_code)) is None:
            self.session.add(ApplicationOffice(application_id=application_id, office_code=office_code))

    async def notifications(self, application_id: uuid.UUID) -> list[Notification]:
        query = (
            select(Notification)
            .where(Notification.application_id == application_id)
            .order_by(Notification.status_at, Notification.notification_id)
        )
        return list((await self.session.scalars(query)).all())

    async def notification(self, notification_id: uuid.UUID) -> Notification | None:
        return await self.session.get(Notification, notification_id)

    async def timeline(self, application_id: uuid.UUID) -> list[TimelineEntry]:
        query = (
            select(TimelineEntry)
            .where(TimelineEntry.application_id == application_id)
            .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        )
        return list((await self.session.scalars(query)).all())

    async def feedback(self, application_id: uuid.UUID) -> Feedback | None:
        return await self.session.get(Feedback, application_id)


def get_repository(session: SessionDep) -> Repository:
    return Repository(session)


RepositoryDep = Annotated[Repository, Depends(get_repository)]
