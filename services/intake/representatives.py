"""Representatives: a resident names someone (a family member, a legal guardian, a care worker) who may act for them
in some things (apply, answer requests for information, withdraw, consent, read their messages) through a day the
resident chooses, and may revoke it at any time. The representative signs in as themselves. Counter staff may record
it for a resident under the authority the resident gave them. Each change goes out as ``representation.changed`` (so
that notify lets the representative read the resident's messages). Nothing here commits."""

from __future__ import annotations

import datetime as dt
import uuid

from services.intake.access import (
    PURPOSE_ASSISTED_REGISTRATION,
    Act,
    acting_for,
    is_self,
    purpose_of,
    read_purpose,
    record_access,
)
from services.intake.models import Representation, RepresentationScope, Resident
from services.intake.repository import Repository
from services.intake.residents import visible
from services.intake.schemas import (
    RepresentationCreate,
    RepresentationView,
    RepresentativeRelation,
    RepresentativeScope,
    Standing,
)
from shared.audit import Authority
from shared.auth import Principal
from shared.events import RepresentationChanged
from shared.outbox import Outbox
from shared.problems import Conflict, NotFound, UnprocessableContent

# A representation lasts at most this long; a longer one is named again (a guardianship is renewed).
MAX_YEARS = 5


class RepresentativeAlreadyNamed(Conflict):
    slug = "representative-already-named"


def standing(representation: Representation, today: dt.date) -> Standing:
    if representation.revoked_at is not None:
        return Standing.REVOKED
    return Standing.ACTIVE if representation.expires_on >= today else Standing.EXPIRED


def view(representation: Representation, today: dt.date) -> RepresentationView:
    return RepresentationView(
        id=representation.id,
        resident_id=representation.resident_id,
        representative_id=representation.representative_id,
        representative_name=representation.representative_name,
        relation=RepresentativeRelation(representation.relation),
        scopes=[RepresentativeScope(s) for s in representation.scopes],
        expires_on=representation.expires_on,
        standing=standing(representation, today),
        created_at=representation.created_at,
        revoked_at=representation.revoked_at,
    )


def changed_event(representation: Representation) -> RepresentationChanged:
    return RepresentationChanged(
        representation_id=representation.id,
        resident_id=representation.resident_id,
        representative_id=representation.representative_id,
        scopes=list(representation.scopes),
        expires_on=representation.expires_on,
        revoked_at=representation.revoked_at,
        version=representation.version,
        changed_at=representation.revoked_at or representation.created_at,
    )


def _latest_day(today: dt.date) -> dt.date:
    try:
        return today.replace(year=today.year + MAX_YEARS)
    except ValueError:  # 29 February
        return today.replace(year=today.year + MAX_YEARS, day=28)


def _errors(resident: Resident, body: RepresentationCreate, today: dt.date) -> list[dict[str, str]]:
    errors = []
    if body.representative_id == resident.id:
        errors.append({"field": "representative_id", "message": "must be someone else", "type": "self"})
    if body.expires_on < today:
        errors.append({"field": "expires_on", "message": "must not be in the past", "type": "past_date"})
    elif body.expires_on > _latest_day(today):
        errors.append({"field": "expires_on", "message": f"must be at most {MAX_YEARS} years ahead", "type": "too_far"})
    return errors


async def _record(
    repo: Repository,
    principal: Principal,
    representation: Representation,
    authority: Authority | None,
    action: str,
) -> None:
    if authority is not None:
        await record_access(
            repo,
            principal,
            representation.resident_id,
            action=action,
            record_type="representation",
            record_id=representation.id,
            purpose=purpose_of(authority),
            authority=authority,
        )


async def name(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    resident_id: uuid.UUID,
    body: RepresentationCreate,
    today: dt.date,
) -> RepresentationView:
    """The resident (or counter staff under their authority) names a representative. One open representation per
    representative: to change one, revoke it and name them again."""
    resident = await visible(repo, principal, resident_id, today, for_update=True)
    authority = await acting_for(
        repo, principal, resident.id, Act.REPRESENTATIVES, today, action="name a representative"
    )
    errors = _errors(resident, body, today)
    if errors:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise UnprocessableContent(f"Invalid input: {fields}", errors=errors)
    if await repo.current_representation(body.representative_id, resident.id, today) is not None:
        raise RepresentativeAlreadyNamed("This representative is named already; revoke it first to change it.")
    now = dt.datetime.now(dt.UTC)
    representation = Representation(
        id=uuid.uuid4(),
        resident_id=resident.id,
        representative_id=body.representative_id,
        representative_name=body.representative_name,
        relation=body.relation.value,
        expires_on=body.expires_on,
        version=1,
        created_at=now,
        created_by=principal.subject[:255],
        scope_rows=[RepresentationScope(scope=s.value) for s in sorted(set(body.scopes))],
    )
    repo.session.add(representation)
    await repo.session.flush()
    await outbox.emit(repo.session, changed_event(representation), subject=str(resident.id))
    await _record(repo, principal, representation, authority, "name representative")
    return view(representation, today)


async def revoke(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    resident_id: uuid.UUID,
    representation_id: uuid.UUID,
    today: dt.date,
) -> RepresentationView:
    """Revoked at once (the representative's next request is refused); revoking again changes nothing."""
    resident = await visible(repo, principal, resident_id, today, for_update=True)
    representation = await repo.representation(representation_id, for_update=True)
    if representation is None or representation.resident_id != resident.id:
        raise NotFound(f"No representation {representation_id}.")
    authority = await acting_for(
        repo, principal, resident.id, Act.REPRESENTATIVES, today, action="revoke a representative"
    )
    if representation.revoked_at is None:
        representation.revoked_at = dt.datetime.now(dt.UTC)
        representation.revoked_by = principal.subject[:255]
        representation.version += 1
        await repo.session.flush()
        await outbox.emit(repo.session, changed_event(representation), subject=str(resident.id))
        await _record(repo, principal, representation, authority, "revoke representative")
    return view(representation, today)


async def of_resident(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date
) -> list[RepresentationView]:
    """Everyone the resident named (revoked and expired ones too): for the resident and staff who see the record."""
    resident = await visible(repo, principal, resident_id, today)
    if not is_self(principal, resident.id):
        purpose, authority = await read_purpose(
            repo, principal, resident.id, today, otherwise=PURPOSE_ASSISTED_REGISTRATION
        )
        await record_access(
            repo,
            principal,
            resident.id,
            action="read",
            record_type="representations",
            record_id=resident.id,
            purpose=purpose,
            authority=authority,
        )
    return [view(r, today) for r in await repo.representations_of(resident.id)]


async def of_representative(repo: Repository, principal: Principal, today: dt.date) -> list[RepresentationView]:
    """Whom the calling resident represents (or did): the resident ids to act for."""
    assert principal.resident_id is not None  # a resident token always names the resident (shared.auth)
    return [view(r, today) for r in await repo.representations_by(principal.resident_id)]
