"""Counter service: staff at an office's counter record how a resident agreed that they act for them — a form the
resident signed, or their ID checked — and may then, in that office and through the authority's last day, answer
requests for information, withdraw, rate the service, set consents and name representatives for the resident
(``access.acting_for``). A resident registered at a counter can so finish without a login of their own. Recording,
and every act under it, is in the resident's access log. Nothing here commits."""

from __future__ import annotations

import datetime as dt
import uuid

from services.intake.access import (
    PURPOSE_ASSISTED_REGISTRATION,
    PURPOSE_COUNTER_SERVICE,
    counter_authority,
    is_self,
    read_purpose,
    record_access,
)
from services.intake.models import CounterAuthority
from services.intake.repository import OFFICE_ROLES, Repository
from services.intake.residents import visible
from services.intake.schemas import CounterAuthorityCreate, CounterAuthorityKind, CounterAuthorityView, Standing
from shared.auth import Principal
from shared.problems import Forbidden, NotFound, UnprocessableContent

# An authority given at a counter lasts the visit by default, and at most this many days (a signed delegation for
# the weeks an application takes).
MAX_DAYS = 90


def standing(authority: CounterAuthority, today: dt.date) -> Standing:
    if authority.revoked_at is not None:
        return Standing.REVOKED
    return Standing.ACTIVE if authority.valid_until >= today else Standing.EXPIRED


def view(authority: CounterAuthority, today: dt.date) -> CounterAuthorityView:
    return CounterAuthorityView(
        id=authority.id,
        resident_id=authority.resident_id,
        kind=CounterAuthorityKind(authority.kind),
        reference=authority.reference,
        office_code=authority.office_code,
        valid_until=authority.valid_until,
        standing=standing(authority, today),
        recorded_at=authority.recorded_at,
        recorded_by=authority.recorded_by,
        recorded_by_name=authority.recorded_by_name,
        revoked_at=authority.revoked_at,
    )


def _office(principal: Principal, body: CounterAuthorityCreate) -> tuple[str | None, list[dict[str, str]]]:
    if body.office_code is not None:
        if body.office_code not in principal.offices:
            return None, [{"field": "office_code", "message": "must be one of your offices", "type": "not_yours"}]
        return body.office_code, []
    if len(principal.offices) == 1:
        return next(iter(principal.offices)), []
    return None, [
        {"field": "office_code", "message": "name the counter's office (you work in several)", "type": "missing"}
    ]


async def record(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, body: CounterAuthorityCreate, today: dt.date
) -> CounterAuthorityView:
    """Staff of an office who may see the resident record how the resident agreed, at their counter."""
    resident = await visible(repo, principal, resident_id, today)
    if principal.role not in OFFICE_ROLES:
        raise Forbidden("Only staff at an office's counter record how a resident agreed that they act for them.")
    office, errors = _office(principal, body)
    valid_until = body.valid_until or today
    if valid_until < today:
        errors.append({"field": "valid_until", "message": "must not be in the past", "type": "past_date"})
    elif valid_until > today + dt.timedelta(days=MAX_DAYS):
        errors.append({"field": "valid_until", "message": f"must be at most {MAX_DAYS} days ahead", "type": "too_far"})
    if errors or office is None:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise UnprocessableContent(f"Invalid input: {fields}", errors=errors)
    authority = CounterAuthority(
        id=uuid.uuid4(),
        resident_id=resident.id,
        kind=body.kind.value,
        reference=body.reference,
        office_code=office,
        valid_until=valid_until,
        recorded_at=dt.datetime.now(dt.UTC),
        recorded_by=principal.subject[:255],
        recorded_by_name=principal.name[:200] if principal.name else None,
    )
    repo.session.add(authority)
    await repo.session.flush()
    await record_access(
        repo,
        principal,
        resident.id,
        action="record authority",
        record_type="counter_authority",
        record_id=authority.id,
        purpose=PURPOSE_COUNTER_SERVICE,
        authority=counter_authority(authority),
    )
    return view(authority, today)


async def of_resident(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date
) -> list[CounterAuthorityView]:
    """The authorities the resident gave at counters, newest first: for the resident and staff who see the record."""
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
            record_type="counter_authorities",
            record_id=resident.id,
            purpose=purpose,
            authority=authority,
        )
    return [view(a, today) for a in await repo.counter_authorities(resident.id)]


async def revoke(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, authority_id: uuid.UUID, today: dt.date
) -> CounterAuthorityView:
    """The resident withdraws an authority (or staff of its office end it): nothing more is done under it."""
    resident = await visible(repo, principal, resident_id, today)
    authority = await repo.counter_authority(authority_id, for_update=True)
    if authority is None or authority.resident_id != resident.id:
        raise NotFound(f"No counter authority {authority_id}.")
    if not is_self(principal, resident.id) and not (
        principal.role in OFFICE_ROLES and authority.office_code in principal.offices
    ):
        raise Forbidden("Only the resident, or staff of the office it was given to, may revoke a counter authority.")
    if authority.revoked_at is None:
        authority.revoked_at = dt.datetime.now(dt.UTC)
        authority.revoked_by = principal.subject[:255]
        await repo.session.flush()
        await record_access(
            repo,
            principal,
            resident.id,
            action="revoke authority",
            record_type="counter_authority",
            record_id=authority.id,
            purpose=PURPOSE_COUNTER_SERVICE,
            authority=counter_authority(authority),
        )
    return view(authority, today)
