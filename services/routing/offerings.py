"""Partners as providers: the offerings partners (NGOs, private providers) publish, and which of them have room for a
case's resident.

An offering is a service type in some districts and languages, with room for ``capacity`` residents at a time and
the conditions the partner states. A partner sees and changes only its own offerings (another partner's answer 404,
whatever exists); an administrator may act for any partner. Changing an offering never touches the referrals it
holds: a lower capacity only stops new referrals until places come free.
"""

from __future__ import annotations

import datetime as dt
import uuid

from services.routing import casework
from services.routing.consents import partner_purpose
from services.routing.models import Offering, audit_log
from services.routing.repository import Repository
from services.routing.schemas import OfferingForCase, OfferingIn, OfferingOut
from shared.auth import Principal, Role
from shared.events import Localized, ServiceType
from shared.problems import NotFound


class OfferingNotFound(NotFound):
    def __init__(self, partner_id: str, code: str) -> None:
        super().__init__(f"No offering {code} of partner {partner_id}.")


class PartnerNotFound(NotFound):
    def __init__(self, partner_id: str) -> None:
        super().__init__(f"No partner {partner_id} for you.")


def acts_for(principal: Principal, partner_id: str) -> None:
    """A partner acts for itself only, an administrator for any; another partner's offerings are not found."""
    if principal.role is Role.ADMIN or (principal.role is Role.PARTNER and principal.partner_id == partner_id):
        return
    raise PartnerNotFound(partner_id)


def view(offering: Offering) -> OfferingOut:
    return OfferingOut(
        id=offering.id,
        partner_id=offering.partner_id,
        code=offering.code,
        name=Localized(ko=offering.name_ko, en=offering.name_en),
        service_type=ServiceType(offering.service_type),
        districts=list(offering.districts),
        languages=list(offering.languages),
        conditions=Localized(ko=offering.conditions_ko, en=offering.conditions_en),
        capacity=offering.capacity,
        places_taken=offering.places_taken,
        available=offering.available,
        updated_at=offering.updated_at,
    )


def _apply(offering: Offering, body: OfferingIn) -> None:
    offering.name_ko = body.name.ko
    offering.name_en = body.name.en
    offering.service_type = body.service_type.value
    offering.districts = list(body.districts)
    offering.languages = list(body.languages)
    offering.conditions_ko = body.conditions.ko
    offering.conditions_en = body.conditions.en
    offering.capacity = body.capacity


async def put_offering(
    repo: Repository, principal: Principal, partner_id: str, code: str, body: OfferingIn, now: dt.datetime
) -> tuple[OfferingOut, bool]:
    """Create or replace one of the partner's offerings; returns it and whether it was created. The places its
    referrals hold stay held."""
    acts_for(principal, partner_id)
    offering = await repo.partner_offering(partner_id, code, for_update=True)
    created = offering is None
    if offering is None:
        offering = Offering(id=uuid.uuid4(), partner_id=partner_id, code=code, places_taken=0, created_at=now)
        repo.session.add(offering)
    _apply(offering, body)
    offering.updated_at = now
    offering.updated_by = principal.subject
    await repo.session.flush()
    return view(offering), created


async def partner_offerings(repo: Repository, principal: Principal, partner_id: str) -> list[OfferingOut]:
    acts_for(principal, partner_id)
    return [view(o) for o in await repo.partner_offerings(partner_id)]


async def partner_offering(repo: Repository, principal: Principal, partner_id: str, code: str) -> OfferingOut:
    acts_for(principal, partner_id)
    offering = await repo.partner_offering(partner_id, code)
    if offering is None:
        raise OfferingNotFound(partner_id, code)
    return view(offering)


def serves(offering: Offering, district_code: str, language: str) -> bool:
    return district_code in offering.districts and language in offering.languages


async def with_room_for_case(
    repo: Repository, principal: Principal, case_id: uuid.UUID, service_type: ServiceType | None, purpose: str
) -> list[OfferingForCase]:
    """The offerings with a free place that serve the case's district in the resident's language, each saying
    whether the resident consented to its partner (a referral needs it). Reading the resident's consents is in the
    audit log, with its purpose."""
    case = await casework.load(repo, principal, case_id)
    await audit_log.record(
        repo.session, principal, action="case.offerings", record_type="case", record_id=case.id, purpose=purpose,
        resident_id=case.resident_id,
    )  # fmt: skip
    consents = await repo.resident_consents(case.resident_id)
    found = await repo.offerings_with_room(service_type.value if service_type else None)
    return [
        OfferingForCase(
            **view(o).model_dump(),
            resident_consented=consents is not None and consents.consented(partner_purpose(o.partner_id)),
        )
        for o in found
        if serves(o, case.district_code, case.preferred_language)
    ]
