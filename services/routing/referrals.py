"""Referrals: a caseworker refers a resident to a partner's offering with room, with the resident's consent; the
partner accepts or declines, and reports the outcome of what it accepted.

- Only staff of the case's office refer (a case elsewhere is not found), and only while the case is not closed.
- The offering must serve the case's district in the resident's language (422 naming ``offering_id`` otherwise).
- The resident must have consented to the partner (``partner:<partner id>``, as intake's ``consent.changed`` told
  routing): without it nothing is written and nothing reaches the partner (409 ``consent-required``).
- A referral holds one place of the offering from the moment it is made (one conditional UPDATE, so two referrals
  racing for the last place cannot both get it: 409 ``offering-full``) until the partner declines it or reports its
  outcome. One case holds at most one place of an offering at a time.
- A partner sees and answers only referrals to itself; what it learns of the resident is the pseudonymous id.
- Each step adds an entry to the case's history and emits its ``referral.*`` event in the same transaction; notify
  hands the event's partner view to that partner only, and intake shows the referral in the resident's status.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TypedDict, cast

from sqlalchemy.orm.exc import StaleDataError

from services.routing import casework
from services.routing.consents import consented_to_partner, partner_purpose
from services.routing.context import RoutingContext
from services.routing.models import OUTREACH, CaseStatus, Offering, Referral, ReferralStatus, audit_log
from services.routing.offerings import serves
from services.routing.repository import Repository
from services.routing.schemas import CompleteIn, DeclineIn, ReferralIn, ReferralOut, ReferralStatusName
from shared.auth import Principal
from shared.events import (
    DeclineReason,
    Language,
    Localized,
    ReferralAccepted,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclined,
    ReferralOutcome,
    ServiceType,
)
from shared.problems import Conflict, NotFound, UnprocessableContent


class ReferralNotFound(NotFound):
    def __init__(self, referral_id: uuid.UUID) -> None:
        super().__init__(f"No referral {referral_id} for you.")


class ConsentRequired(Conflict):
    slug = "consent-required"

    def __init__(self, partner_id: str) -> None:
        super().__init__(
            f"The resident has not consented to partner {partner_id} ({partner_purpose(partner_id)}); nothing about "
            "them may reach it. The resident can give that consent in their consents.",
            purpose=partner_purpose(partner_id),
        )


class OfferingFull(Conflict):
    slug = "offering-full"

    def __init__(self, offering: Offering) -> None:
        super().__init__(f"Offering {offering.code} of {offering.partner_id} has no free place.", available=0)


class AlreadyReferred(Conflict):
    slug = "already-referred"

    def __init__(self, referral: Referral) -> None:
        super().__init__(
            "The case is already referred to this offering.",
            referral_id=str(referral.id),
            referral_status=referral.status,
        )


class CaseClosed(Conflict):
    slug = "case-state"

    def __init__(self) -> None:
        super().__init__("The case is closed; a closed case is referred nowhere.", case_status=CaseStatus.CLOSED)


class OutreachCaseNotReferred(Conflict):
    slug = "outreach-case"

    def __init__(self) -> None:
        super().__init__(
            "An outreach case has no application, and a referral follows an application: record the visit's outcome "
            "(referred_to_other_support), and refer from the case of the application the resident makes.",
            case_kind=OUTREACH,
        )


class ReferralStateConflict(Conflict):
    slug = "referral-state"

    def __init__(self, detail: str, referral: Referral) -> None:
        super().__init__(detail, referral_status=referral.status)


class ReferralChanged(Conflict):
    slug = "referral-changed"

    def __init__(self) -> None:
        super().__init__("The referral was answered at the same time by another request; reload it.")


async def save(repo: Repository) -> None:
    """Write now, so that a concurrent answer (the version check) is a 409, not a failed commit."""
    try:
        await repo.session.flush()
    except StaleDataError:
        raise ReferralChanged() from None


# ---------------------------------------------------------------------------------------------- views


def view(referral: Referral, principal: Principal) -> ReferralOut:
    """A referral as the caller may see it: staff see its case too; a partner only its own offering and the
    pseudonymous resident id."""
    staff = principal.is_staff
    return ReferralOut(
        id=referral.id,
        partner_id=referral.partner_id,
        offering_id=referral.offering_id,
        offering_code=referral.offering_code,
        service_type=ServiceType(referral.service_type),
        resident_id=referral.resident_id,
        status=ReferralStatusName(referral.status),
        created_at=referral.created_at,
        responded_at=referral.responded_at,
        decline_reason=cast(DeclineReason | None, referral.decline_reason),
        outcome=cast(ReferralOutcome | None, referral.outcome),
        completed_at=referral.completed_at,
        case_id=referral.case_id if staff else None,
        program_code=referral.program_code if staff else None,
        office_code=referral.office_code if staff else None,
        referred_by=referral.referred_by if staff else None,
    )


async def read(repo: Repository, principal: Principal, referral_id: uuid.UUID) -> ReferralOut:
    return view(await _load(repo, principal, referral_id), principal)


async def of_case(repo: Repository, principal: Principal, case_id: uuid.UUID, purpose: str) -> list[ReferralOut]:
    """A case's referrals, for staff of its office; the read is in the audit log, with its purpose."""
    case = await casework.load(repo, principal, case_id)
    await audit_log.record(
        repo.session, principal, action="case.referrals", record_type="case", record_id=case.id, purpose=purpose,
        resident_id=case.resident_id,
    )  # fmt: skip
    return [view(r, principal) for r in await repo.referrals_of_case(case.id)]


async def listed(
    repo: Repository, principal: Principal, status: ReferralStatusName | None, limit: int
) -> list[ReferralOut]:
    return [view(r, principal) for r in await repo.referrals(principal, status.value if status else None, limit)]


async def _load(repo: Repository, principal: Principal, referral_id: uuid.UUID) -> Referral:
    referral = await repo.visible_referral(principal, referral_id)
    if referral is None:
        raise ReferralNotFound(referral_id)
    return referral


# ---------------------------------------------------------------------------------------------- the events


class ReferralRef(TypedDict):
    """The fields every referral event starts with."""

    referral_id: uuid.UUID
    partner_id: str
    offering_id: uuid.UUID
    offering_code: str
    offering_name: Localized
    service_type: ServiceType
    case_id: uuid.UUID
    application_id: uuid.UUID
    resident_id: uuid.UUID
    program_code: str
    office_code: str


def event_base(referral: Referral, offering: Offering) -> ReferralRef:
    return ReferralRef(
        referral_id=referral.id,
        partner_id=referral.partner_id,
        offering_id=referral.offering_id,
        offering_code=referral.offering_code,
        offering_name=Localized(ko=offering.name_ko, en=offering.name_en),
        service_type=ServiceType(referral.service_type),
        case_id=referral.case_id,
        application_id=referral.application_id,
        resident_id=referral.resident_id,
        program_code=referral.program_code,
        office_code=referral.office_code,
    )


async def _offering_of(repo: Repository, referral: Referral) -> Offering:
    offering = await repo.offering(referral.offering_id)
    assert offering is not None, "a referral's offering is never deleted"
    return offering


# ---------------------------------------------------------------------------------------------- referring


async def refer(
    repo: Repository, ctx: RoutingContext, principal: Principal, case_id: uuid.UUID, body: ReferralIn
) -> ReferralOut:
    case = await casework.load(repo, principal, case_id)
    offering = await repo.offering(body.offering_id)
    if offering is None:
        raise UnprocessableContent.for_field("offering_id", "no such offering")
    if not serves(offering, case.district_code, case.preferred_language):
        raise UnprocessableContent.for_field(
            "offering_id",
            f"{offering.code} does not serve district {case.district_code} in '{case.preferred_language}'",
        )
    if case.status == CaseStatus.CLOSED:
        raise CaseClosed()
    if case.kind == OUTREACH or case.application_id is None:
        raise OutreachCaseNotReferred()
    holding = await repo.holding_referral(case.id, offering.id)
    if holding is not None:
        raise AlreadyReferred(holding)
    if not await consented_to_partner(repo, case.resident_id, offering.partner_id):
        raise ConsentRequired(offering.partner_id)
    now, today = ctx.clock.now(), ctx.clock.today()
    if not await repo.take_place(offering.id, now):
        raise OfferingFull(offering)
    referral = Referral(
        id=uuid.uuid4(),
        offering_id=offering.id,
        partner_id=offering.partner_id,
        offering_code=offering.code,
        service_type=offering.service_type,
        case_id=case.id,
        application_id=case.application_id,
        resident_id=case.resident_id,
        program_code=case.program_code,
        office_code=case.office_code,
        district_code=case.district_code,
        language=case.preferred_language,
        status=ReferralStatus.REFERRED,
        referred_by=principal.subject,
        referred_on=today,
        created_at=now,
        updated_at=now,
    )
    repo.session.add(referral)
    repo.add_entry(
        case, principal.subject, "referred", now, referral_id=str(referral.id), partner_id=offering.partner_id,
        offering_code=offering.code, service_type=offering.service_type,
    )  # fmt: skip
    # Telling a partner about a resident is a disclosure of their data: it is in the audit log, with the consent.
    await audit_log.record(
        repo.session,
        principal,
        action="referral.created",
        record_type="referral",
        record_id=referral.id,
        purpose=f"referral to partner {offering.partner_id} with the resident's consent",
        resident_id=case.resident_id,
    )
    await repo.session.flush()
    await ctx.outbox.emit(
        repo.session,
        ReferralCreated(
            **event_base(referral, offering),
            district_code=case.district_code,
            language=Language(case.preferred_language),
            referred_by=principal.subject,
            created_at=now,
        ),
    )
    return view(referral, principal)


# ---------------------------------------------------------------------------------------------- the partner's answers


async def _history(
    repo: Repository, referral: Referral, actor: str, action: str, now: dt.datetime, **details: str
) -> None:
    """The partner's answer in the case's history, where the caseworker sees it (the partner never sees the case)."""
    case = await repo.case_of_referral(referral)
    repo.add_entry(case, actor, action, now, referral_id=str(referral.id), **details)


async def accept(repo: Repository, ctx: RoutingContext, principal: Principal, referral_id: uuid.UUID) -> ReferralOut:
    referral = await _load(repo, principal, referral_id)
    if referral.status == ReferralStatus.ACCEPTED:
        return view(referral, principal)  # accepting again changes nothing
    if referral.status != ReferralStatus.REFERRED:
        raise ReferralStateConflict(f"The referral is {referral.status}; only a new one can be accepted.", referral)
    now = ctx.clock.now()
    referral.status = ReferralStatus.ACCEPTED
    referral.responded_at = now
    referral.updated_at = now
    await _history(repo, referral, principal.subject, "referral_accepted", now)
    await save(repo)
    offering = await _offering_of(repo, referral)
    await ctx.outbox.emit(
        repo.session,
        ReferralAccepted(**event_base(referral, offering), accepted_at=now),
    )
    return view(referral, principal)


async def decline(
    repo: Repository, ctx: RoutingContext, principal: Principal, referral_id: uuid.UUID, body: DeclineIn
) -> ReferralOut:
    referral = await _load(repo, principal, referral_id)
    if referral.status != ReferralStatus.REFERRED:
        raise ReferralStateConflict(
            f"The referral is {referral.status}; only a new one can be declined (report the outcome of an accepted "
            "one instead).",
            referral,
        )
    now = ctx.clock.now()
    referral.status = ReferralStatus.DECLINED
    referral.decline_reason = body.reason
    referral.responded_at = now
    referral.updated_at = now
    await _history(repo, referral, principal.subject, "referral_declined", now, reason=body.reason)
    await save(repo)
    await repo.give_back_place(referral.offering_id, now)
    offering = await _offering_of(repo, referral)
    await ctx.outbox.emit(
        repo.session,
        ReferralDeclined(**event_base(referral, offering), reason=body.reason, declined_at=now),
    )
    return view(referral, principal)


async def complete(
    repo: Repository, ctx: RoutingContext, principal: Principal, referral_id: uuid.UUID, body: CompleteIn
) -> ReferralOut:
    referral = await _load(repo, principal, referral_id)
    if referral.status != ReferralStatus.ACCEPTED:
        raise ReferralStateConflict(
            f"The referral is {referral.status}; the outcome is reported for an accepted one.", referral
        )
    now = ctx.clock.now()
    referral.status = ReferralStatus.COMPLETED
    referral.outcome = body.outcome
    referral.completed_at = now
    referral.updated_at = now
    await _history(repo, referral, principal.subject, "referral_completed", now, outcome=body.outcome)
    await save(repo)
    await repo.give_back_place(referral.offering_id, now)
    offering = await _offering_of(repo, referral)
    await ctx.outbox.emit(
        repo.session,
        ReferralCompleted(**event_base(referral, offering), outcome=body.outcome, completed_at=now),
    )
    return view(referral, principal)
