"""Residents and their consents: registration (by the resident or assisted by staff), changes, and the purpose-
specific consents. Registry facts eligibility needs go out as ``resident.updated`` (no name, no contact details);
every consent change is kept and goes out as ``consent.changed``. Nothing here commits."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from services.intake import opportunities
from services.intake.access import (
    PURPOSE_ASSISTED_REGISTRATION,
    PURPOSE_NOTIFICATION,
    Act,
    acting_for,
    by_representative,
    purpose_of,
    record_access,
    representation_for,
    resident_read_purpose,
)
from services.intake.models import Consent, ConsentChange, Resident
from services.intake.repository import Repository
from services.intake.schemas import (
    ConsentChangeView,
    ConsentsUpdate,
    ConsentsView,
    ContactList,
    ContactView,
    HouseholdMemberIn,
    HouseholdMemberView,
    PostalAddress,
    RepresentativeScope,
    ResidentCreate,
    ResidentUpdate,
    ResidentView,
)
from shared.auth import Principal, Role
from shared.events import ConsentChanged, HouseholdMember, Language, ResidentUpdated, Vulnerability
from shared.outbox import Outbox
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent

T = TypeVar("T")

# Fields that eligibility needs (and resident.updated carries); a change to any other field emits nothing.
REGISTRY_FIELDS = frozenset({"birth_date", "district_code", "household", "vulnerability", "preferred_language"})
NOT_NULL_FIELDS = frozenset(
    {"name", "birth_date", "district_code", "address", "household", "preferred_language", "preferred_channels"}
    | {"vulnerability"}
)


class ResidentAlreadyRegistered(Conflict):
    slug = "resident-already-registered"


def _unique(values: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(values))


def _invalid(errors: Sequence[dict[str, str]]) -> UnprocessableContent:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return UnprocessableContent(f"Invalid input: {fields}", errors=list(errors))


def _date_errors(
    birth_date: dt.date | None, household: Sequence[HouseholdMemberIn] | None, today: dt.date
) -> list[dict[str, str]]:
    errors = []
    if birth_date is not None and birth_date > today:
        errors.append({"field": "birth_date", "message": "must not be in the future", "type": "future_date"})
    for n, member in enumerate(household or ()):
        if member.birth_date > today:
            errors.append(
                {"field": f"household[{n}].birth_date", "message": "must not be in the future", "type": "future_date"}
            )
    return errors


def _contact_errors(channels: Sequence[str], email: str | None, phone: str | None) -> list[dict[str, str]]:
    errors = []
    if "email" in channels and not email:
        errors.append({"field": "email", "message": "is needed for the email channel", "type": "missing"})
    if "sms" in channels and not phone:
        errors.append({"field": "phone", "message": "is needed for the sms channel", "type": "missing"})
    return errors


def _household(members: Sequence[HouseholdMemberIn]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in members]


def _may_set_registry_household(principal: Principal, given: bool) -> None:
    """Who lives together is the registry's word, copied by staff: a resident naming a household could join a
    stranger's household case (and be told of it)."""
    if given and not principal.is_staff:
        raise Forbidden("The registered household (registry_household) is set by staff from the resident registry.")


async def _set_registry_household(repo: Repository, resident: Resident, key: str | None, now: dt.datetime) -> None:
    resident.registry_household = key
    resident.household_id = None if key is None else await repo.registry_household_id(key, now)


def registry_event(resident: Resident) -> ResidentUpdated:
    return ResidentUpdated(
        resident_id=resident.id,
        version=resident.version,
        birth_date=resident.birth_date,
        district_code=resident.district_code,
        household=[HouseholdMember.model_validate(m) for m in resident.household],
        vulnerability=[Vulnerability(v) for v in resident.vulnerability],
        preferred_language=Language(resident.preferred_language),
        updated_at=resident.updated_at,
    )


# ---------------------------------------------------------------------------------------------- registration


async def register(
    repo: Repository, outbox: Outbox, principal: Principal, body: ResidentCreate, today: dt.date
) -> ResidentView:
    """A resident registers themselves (their token's resident id becomes the record's id), or staff register them
    at a counter (a new random id, returned to them)."""
    errors = _date_errors(body.birth_date, body.household, today)
    errors += _contact_errors(body.preferred_channels, body.email, body.phone)
    if errors:
        raise _invalid(errors)
    _may_set_registry_household(principal, body.registry_household is not None)
    if principal.role is Role.RESIDENT:
        assert principal.resident_id is not None  # guaranteed by token verification
        resident_id = principal.resident_id
        if await repo.resident(resident_id) is not None:
            raise ResidentAlreadyRegistered("You are already registered; change your record with PATCH instead.")
    elif principal.is_staff:
        resident_id = uuid.uuid4()
    else:
        raise Forbidden("Only a resident or staff may register a resident.")
    now = dt.datetime.now(dt.UTC)
    resident = Resident(
        id=resident_id,
        name=body.name,
        birth_date=body.birth_date,
        district_code=body.district_code,
        address=body.address,
        household=_household(body.household),
        email=body.email,
        phone=body.phone,
        preferred_language=body.preferred_language.value,
        preferred_channels=_unique(body.preferred_channels),
        vulnerability=[v.value for v in _unique(body.vulnerability)],
        version=1,
        consent_version=0,
        registered_by=principal.subject,
        assisted=principal.role is not Role.RESIDENT,
        created_at=now,
        updated_at=now,
    )
    await _set_registry_household(repo, resident, body.registry_household, now)
    repo.session.add(resident)
    try:
        await repo.session.flush()
    except IntegrityError:
        # The same resident registering twice at the same moment: the other request won.
        raise ResidentAlreadyRegistered("You are already registered; change your record with PATCH instead.") from None
    if resident.assisted:
        await record_access(
            repo,
            principal,
            resident.id,
            action="register",
            record_type="resident",
            record_id=resident.id,
            purpose=PURPOSE_ASSISTED_REGISTRATION,
        )
    await outbox.emit(repo.session, registry_event(resident), subject=str(resident.id))
    return view(resident, [])


async def visible(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date, *, for_update: bool = False
) -> Resident:
    resident = await repo.visible_resident(principal, resident_id, today=today, for_update=for_update)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    return resident


async def read(repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date) -> ResidentView:
    """A resident's record, for the resident or staff who may see it (the read is in the access log)."""
    resident = await visible(repo, principal, resident_id, today)
    purpose, authority = await resident_read_purpose(repo, principal, resident, today)
    await record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="resident",
        record_id=resident.id,
        purpose=purpose,
        authority=authority,
    )
    return view(resident, await repo.consents(resident.id))


async def update(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    resident_id: uuid.UUID,
    body: ResidentUpdate,
    today: dt.date,
) -> ResidentView:
    """Change the fields given; a change the registry keeps is announced (``resident.updated``)."""
    resident = await visible(repo, principal, resident_id, today, for_update=True)
    purpose, authority = await resident_read_purpose(repo, principal, resident, today)
    _may_set_registry_household(principal, "registry_household" in body.model_fields_set)
    await _apply_update(repo, outbox, resident, body, today)
    await record_access(
        repo,
        principal,
        resident.id,
        action="update",
        record_type="resident",
        record_id=resident.id,
        purpose=purpose,
        authority=authority,
    )
    return view(resident, await repo.consents(resident.id))


async def _apply_update(
    repo: Repository, outbox: Outbox, resident: Resident, body: ResidentUpdate, today: dt.date
) -> None:
    given = body.model_fields_set
    errors = [
        {"field": name, "message": "may not be null", "type": "null"}
        for name in sorted(given & NOT_NULL_FIELDS)
        if getattr(body, name) is None
    ]
    errors += _date_errors(body.birth_date, body.household, today)
    values: dict[str, Any] = {}
    for name in given:
        value = getattr(body, name)
        if value is None:
            values[name] = None
        elif name == "household":
            values[name] = _household(value)
        elif name == "preferred_language":
            values[name] = value.value
        elif name == "preferred_channels":
            values[name] = _unique(value)
        elif name == "vulnerability":
            values[name] = [v.value for v in _unique(value)]
        elif name == "registry_household":
            continue  # below: it has an id of its own
        else:
            values[name] = value
    channels = values.get("preferred_channels") or resident.preferred_channels
    email = values.get("email", resident.email)
    phone = values.get("phone", resident.phone)
    errors += _contact_errors(channels, email, phone)
    if errors:
        raise _invalid(errors)

    changed = {name for name, value in values.items() if getattr(resident, name) != value}
    now = dt.datetime.now(dt.UTC)
    if "registry_household" in given and body.registry_household != resident.registry_household:
        await _set_registry_household(repo, resident, body.registry_household, now)
        changed.add("registry_household")
    if not changed:
        return
    for name in changed - {"registry_household"}:
        setattr(resident, name, values[name])
    resident.version += 1
    resident.updated_at = now
    await repo.session.flush()
    if changed & REGISTRY_FIELDS:
        await outbox.emit(repo.session, registry_event(resident), subject=str(resident.id))


def view(resident: Resident, consents: Sequence[Consent]) -> ResidentView:
    return ResidentView(
        id=resident.id,
        name=resident.name,
        birth_date=resident.birth_date,
        district_code=resident.district_code,
        address=resident.address,
        household=[HouseholdMemberView.model_validate(m) for m in resident.household],
        registry_household=resident.registry_household,
        household_id=resident.household_id,
        email=resident.email,
        phone=resident.phone,
        preferred_language=Language(resident.preferred_language),
        preferred_channels=resident.preferred_channels,
        vulnerability=[Vulnerability(v) for v in resident.vulnerability],
        consents={c.purpose: c.granted for c in consents},
        version=resident.version,
        assisted=resident.assisted,
        created_at=resident.created_at,
        updated_at=resident.updated_at,
    )


# ---------------------------------------------------------------------------------------------- consents


async def _with_consents(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date, *, for_update: bool = False
) -> Resident:
    """The resident whose consents the caller may see: as for the record, and for a representative in the consent
    scope."""
    resident = await repo.visible_resident(principal, resident_id, today=today, for_update=for_update)
    if resident is None:
        representation = await representation_for(repo, principal, resident_id, today)
        if representation is not None and RepresentativeScope.CONSENT.value in representation.scopes:
            resident = await repo.resident(resident_id, for_update=for_update)
    if resident is None:
        raise NotFound(f"No resident {resident_id}.")
    return resident


async def read_consents(repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date) -> ConsentsView:
    resident = await _with_consents(repo, principal, resident_id, today)
    purpose, authority = await resident_read_purpose(repo, principal, resident, today)
    await record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="consents",
        record_id=resident.id,
        purpose=purpose,
        authority=authority,
    )
    return await consents_view(repo, resident)


async def set_consents(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    resident_id: uuid.UUID,
    body: ConsentsUpdate,
    today: dt.date,
) -> ConsentsView:
    """Replace the consent set: the resident, a representative in the consent scope, or counter staff under the
    resident's authority. A purpose not given counts as not granted; only real changes are recorded."""
    resident = await _with_consents(repo, principal, resident_id, today, for_update=True)
    authority = await acting_for(
        repo, principal, resident.id, Act.CONSENT, today, action="give or withdraw their consent"
    )
    current = {c.purpose: c for c in await repo.consents(resident.id, for_update=True)}
    wanted = dict(body.consents)
    for purpose in current:
        wanted.setdefault(purpose, False)
    changed = sorted(p for p, granted in wanted.items() if (current[p].granted if p in current else False) != granted)
    if changed:
        now = dt.datetime.now(dt.UTC)
        resident.consent_version += 1
        for purpose in changed:
            granted = wanted[purpose]
            if purpose in current:
                current[purpose].granted = granted
                current[purpose].changed_at = now
            else:
                current[purpose] = Consent(resident_id=resident.id, purpose=purpose, granted=granted, changed_at=now)
                repo.session.add(current[purpose])
            repo.session.add(
                ConsentChange(
                    resident_id=resident.id,
                    version=resident.consent_version,
                    purpose=purpose,
                    granted=granted,
                    changed_at=now,
                    changed_by=principal.subject[:255],
                    changed_by_role="representative" if by_representative(authority) else principal.role.value,
                )
            )
        await repo.session.flush()
        await outbox.emit(
            repo.session,
            ConsentChanged(
                resident_id=resident.id,
                version=resident.consent_version,
                consents={p: c.granted for p, c in sorted(current.items())},
                changed=changed,
                changed_at=now,
            ),
            subject=str(resident.id),
        )
        if "proactive_screening" in changed and not wanted["proactive_screening"]:
            await opportunities.consent_withdrawn(repo, outbox, resident.id, now)
    if authority is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="set consents",
            record_type="consents",
            record_id=resident.id,
            purpose=purpose_of(authority),
            authority=authority,
        )
    return await consents_view(repo, resident, changed=changed)


async def consents_view(repo: Repository, resident: Resident, *, changed: Sequence[str] = ()) -> ConsentsView:
    consents = await repo.consents(resident.id)
    history = await repo.consent_history(resident.id)
    return ConsentsView(
        resident_id=resident.id,
        version=resident.consent_version,
        consents={c.purpose: c.granted for c in consents},
        changed=list(changed),
        history=[
            ConsentChangeView(
                version=h.version,
                purpose=h.purpose,
                granted=h.granted,
                changed_at=h.changed_at,
                changed_by_role=h.changed_by_role,
            )
            for h in history
        ],
    )


# ---------------------------------------------------------------------------------------------- contact


async def contact(repo: Repository, principal: Principal, resident_id: uuid.UUID) -> ContactView:
    """Where to reach the resident: for the notify service only (anyone else is told there is no such resident). An
    erased resident is reached only to be told the result of their erasure, until those details go too."""
    if principal.role is not Role.SERVICE or principal.service != "notify":
        raise NotFound(f"No resident {resident_id}.")
    resident = await repo.resident(resident_id)
    # An erased resident's contact details stay only until they were told the result (services/intake/erasure.py).
    if resident is None or resident.preferred_channels is None:
        raise NotFound(f"No resident {resident_id}.")
    return await _read_contact(repo, principal, resident)


async def contacts(repo: Repository, principal: Principal, resident_ids: Sequence[uuid.UUID]) -> ContactList:
    """Where to reach several residents at once (notify, dispatching a batch of messages): for the notify service
    only (403 to anyone else); a resident it may not reach, or that does not exist, is left out. Each read is
    recorded as :func:`contact` records it."""
    if principal.role is not Role.SERVICE or principal.service != "notify":
        raise Forbidden("Only the notify service reads residents' contact details.")
    found = await repo.contactable_residents(principal, resident_ids)
    return ContactList(items=[await _read_contact(repo, principal, r) for r in found])


async def _read_contact(repo: Repository, principal: Principal, resident: Resident) -> ContactView:
    channels = resident.preferred_channels
    assert channels is not None  # the callers' check: an erased resident's details are gone
    await record_access(
        repo,
        principal,
        resident.id,
        action="read",
        record_type="contact",
        record_id=resident.id,
        purpose=PURPOSE_NOTIFICATION,
    )
    return ContactView(
        resident_id=resident.id,
        email=resident.email,
        phone=resident.phone,
        preferred_language=Language(resident.preferred_language),
        preferred_channels=channels,
        # A letter needs the name and address; a resident who did not choose post keeps them here.
        postal=PostalAddress(name=resident.name, address=resident.address) if "post" in channels else None,
    )
