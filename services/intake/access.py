"""Who may do what beyond reading, who acts for whom, and the access log: every read or change of a resident's data
by someone other than the resident is recorded (who, when, which record, why — and, for someone acting for the
resident, on whose behalf and under which authority), and the resident can see it.

Acting for a resident: a representative the resident named (``representatives.py``) within their scopes and before
their expiry; counter staff of an office where the resident gave an authority (``counter.py``: a signed form, their
ID checked) that still holds."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from services.intake.models import CounterAuthority, Representation, Resident, audit_log
from services.intake.repository import OFFICE_ROLES, Repository
from services.intake.schemas import AccessLogEntryView, AccessLogPage, AuthorityView, RepresentativeRelation
from shared.audit import Authority
from shared.auth import Principal, Role
from shared.problems import Forbidden, NotFound

PURPOSE_CASE_REVIEW = "case review"
PURPOSE_ASSISTED_REGISTRATION = "assisted registration"
PURPOSE_ASSISTED_APPLICATION = "assisted application"
PURPOSE_ADMINISTRATION = "administration"
PURPOSE_NOTIFICATION = "notification delivery"
PURPOSE_REPRESENTATION = "representation"
PURPOSE_COUNTER_SERVICE = "counter service"
PURPOSE_DATA_RIGHTS = "the resident's rights over their data"

# Who may create residents and file applications: the resident for themselves, staff at a counter for anyone.
FILING_ROLES = (Role.RESIDENT, Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN)

REPRESENTATIVE = "representative"


class Act(StrEnum):
    """What someone may do for a resident. A representative's scope names the first four and the last; counter staff
    under an authority do all but apply (staff file for anyone already)."""

    APPLY = "apply"
    ANSWER = "answer"
    WITHDRAW = "withdraw"
    CONSENT = "consent"
    FEEDBACK = "feedback"
    REPRESENTATIVES = "representatives"  # name or revoke a representative
    DATA_RIGHTS = "data_rights"  # ask for a copy of all the resident's data, or its erasure


REPRESENTATIVE_ACTS = frozenset({Act.APPLY, Act.ANSWER, Act.WITHDRAW, Act.CONSENT, Act.DATA_RIGHTS})
COUNTER_ACTS = frozenset({Act.ANSWER, Act.WITHDRAW, Act.CONSENT, Act.FEEDBACK, Act.REPRESENTATIVES, Act.DATA_RIGHTS})


def is_self(principal: Principal, resident_id: uuid.UUID) -> bool:
    return principal.role is Role.RESIDENT and principal.resident_id == resident_id


def representative_authority(representation: Representation) -> Authority:
    return Authority(REPRESENTATIVE, representation.id)


def counter_authority(authority: CounterAuthority) -> Authority:
    return Authority(authority.kind, authority.id)


def by_representative(authority: Authority | None) -> bool:
    return authority is not None and authority.kind == REPRESENTATIVE


def purpose_of(authority: Authority) -> str:
    return PURPOSE_REPRESENTATION if by_representative(authority) else PURPOSE_COUNTER_SERVICE


async def representation_for(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date
) -> Representation | None:
    """The caller's representation of the resident that holds today, if the caller is a resident representing them."""
    if principal.role is not Role.RESIDENT or principal.resident_id is None or principal.resident_id == resident_id:
        return None
    return await repo.current_representation(principal.resident_id, resident_id, today)


async def acting_for(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, act: Act, today: dt.date, *, action: str
) -> Authority | None:
    """May the caller do ``act`` for the resident today? ``None``: they are the resident. An :class:`Authority`: they
    act on the resident's behalf under it (a representation in that scope, or a counter authority of one of their
    offices). Anyone else is refused (403: the caller has already been shown the record)."""
    if is_self(principal, resident_id):
        return None
    representation = await representation_for(repo, principal, resident_id, today)
    if representation is not None and act in REPRESENTATIVE_ACTS and act.value in representation.scopes:
        return representative_authority(representation)
    if principal.role in OFFICE_ROLES and act in COUNTER_ACTS:
        authority = await repo.current_counter_authority(resident_id, principal.offices, today)
        if authority is not None:
            return counter_authority(authority)
    raise Forbidden(
        f"Only the resident, a representative they named for it, or counter staff they authorised may {action}."
    )


async def read_purpose(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date, *, otherwise: str
) -> tuple[str, Authority | None]:
    """Why the caller reads the resident's data (they may: the query that found it was scoped to them), and under
    which authority when they read it for the resident. ``otherwise``: office staff's purpose when neither a case in
    their offices nor a counter authority is why (a resident they registered at their counter)."""
    if principal.role is Role.ADMIN:
        return PURPOSE_ADMINISTRATION, None
    if principal.role is Role.SERVICE:
        return PURPOSE_NOTIFICATION, None
    if principal.role is Role.RESIDENT:
        representation = await representation_for(repo, principal, resident_id, today)
        return PURPOSE_REPRESENTATION, representative_authority(representation) if representation else None
    if principal.role in OFFICE_ROLES and not await repo.has_case_in_offices(resident_id, principal.offices):
        authority = await repo.current_counter_authority(resident_id, principal.offices, today)
        if authority is not None:
            return PURPOSE_COUNTER_SERVICE, counter_authority(authority)
        return otherwise, None
    return PURPOSE_CASE_REVIEW, None


async def resident_read_purpose(
    repo: Repository, principal: Principal, resident: Resident, today: dt.date
) -> tuple[str, Authority | None]:
    return await read_purpose(repo, principal, resident.id, today, otherwise=PURPOSE_ASSISTED_REGISTRATION)


async def application_read_purpose(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date
) -> tuple[str, Authority | None]:
    return await read_purpose(repo, principal, resident_id, today, otherwise=PURPOSE_CASE_REVIEW)


async def record_access(
    repo: Repository,
    principal: Principal,
    resident_id: uuid.UUID,
    *,
    action: str,
    record_type: str,
    record_id: uuid.UUID | str | None,
    purpose: str,
    authority: Authority | None = None,
    even_by_the_resident: bool = False,
) -> None:
    """Write an audit-log entry, unless the resident is looking at their own data (or ``even_by_the_resident``).
    With an ``authority`` the caller acted on the resident's behalf under it."""
    await audit_log.record(
        repo.session,
        principal,
        action=action,
        record_type=record_type,
        record_id=record_id,
        purpose=purpose,
        resident_id=resident_id,
        authority=authority,
        even_by_the_resident=even_by_the_resident,
    )


# ---------------------------------------------------------------------------------------------- the access log


async def read_log(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, *, cursor: str | None, limit: int
) -> AccessLogPage:
    """Who looked at the resident's data or acted for them, newest first: for the resident only."""
    if not is_self(principal, resident_id) or await repo.resident(resident_id) is None:
        raise NotFound(f"No resident {resident_id}.")
    before = int(cursor) if cursor else None
    entries = await audit_log.of_resident(repo.session, resident_id, before_id=before, limit=limit + 1)
    page = entries[:limit]
    authorities: dict[tuple[str, str], AuthorityView | None] = {}
    for e in page:
        if e.authority_kind is not None and e.authority_id is not None:
            key = (e.authority_kind, e.authority_id)
            if key not in authorities:
                authorities[key] = await _authority_view(repo, resident_id, *key)
    return AccessLogPage(
        items=[
            AccessLogEntryView(
                at=e.at,
                actor=e.actor,
                actor_role=e.actor_role,
                actor_name=e.actor_name,
                offices=e.offices,
                action=e.action,
                record_type=e.record_type,
                record_id=e.record_id,
                purpose=e.purpose,
                on_behalf_of=e.on_behalf_of,
                authority=authorities.get((e.authority_kind, e.authority_id))
                if e.authority_kind is not None and e.authority_id is not None
                else None,
            )
            for e in page
        ],
        next_cursor=str(page[-1].id) if len(entries) > limit else None,
    )


async def _authority_view(repo: Repository, resident_id: uuid.UUID, kind: str, authority_id: str) -> AuthorityView:
    """An entry's authority, told with what the resident knows it by (whom they named; the form they signed)."""
    view = AuthorityView(kind=kind, id=authority_id)
    try:
        record_id = uuid.UUID(authority_id)
    except ValueError:
        return view
    if kind == REPRESENTATIVE:
        representation = await repo.representation(record_id)
        if representation is not None and representation.resident_id == resident_id:
            view.relation = RepresentativeRelation(representation.relation)
            view.representative_name = representation.representative_name
    else:
        authority = await repo.counter_authority(record_id)
        if authority is not None and authority.resident_id == resident_id:
            view.reference = authority.reference
            view.office_code = authority.office_code
    return view


# ---------------------------------------------------------------------------------------------- rights over one's data


async def exercising_rights(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date, *, action: str
) -> tuple[Resident, Authority | None]:
    """The resident whose rights over their data the caller exercises (a copy of everything, its erasure), and
    under which authority: the resident themselves (``None``; erased or not), a representative they named in the
    ``data_rights`` scope (개인정보 보호법 제38조 제1항: through a representative), or counter staff of an office
    the resident authorised. Staff who see the record otherwise are refused (403); anyone else finds no resident."""
    resident = await repo.resident(resident_id)
    if resident is not None:
        if is_self(principal, resident.id):
            return resident, None
        representation = await representation_for(repo, principal, resident.id, today)
        if representation is not None and Act.DATA_RIGHTS.value in representation.scopes:
            return resident, representative_authority(representation)
        if principal.role in OFFICE_ROLES:
            authority = await repo.current_counter_authority(resident.id, principal.offices, today)
            if authority is not None:
                return resident, counter_authority(authority)
        if await repo.visible_resident(principal, resident.id, today=today) is not None:
            raise Forbidden(
                f"Only the resident, a representative they named for it, or counter staff they authorised may {action}."
            )
    raise NotFound(f"No resident {resident_id}.")
