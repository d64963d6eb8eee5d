"""Who may do what beyond reading, and the access log: every read of a resident's data by someone other than the
resident is recorded (who, when, which record, why), and the resident can see it."""

from __future__ import annotations

import uuid

from services.intake.models import Resident, audit_log
from services.intake.repository import OFFICE_ROLES, Repository
from services.intake.schemas import AccessLogEntryView, AccessLogPage
from shared.auth import Principal, Role
from shared.problems import Forbidden, NotFound

PURPOSE_CASE_REVIEW = "case review"
PURPOSE_ASSISTED_REGISTRATION = "assisted registration"
PURPOSE_ASSISTED_APPLICATION = "assisted application"
PURPOSE_ADMINISTRATION = "administration"
PURPOSE_NOTIFICATION = "notification delivery"

# Who may create residents and file applications: the resident for themselves, staff at a counter for anyone.
FILING_ROLES = (Role.RESIDENT, Role.CASEWORKER, Role.SUPERVISOR, Role.ADMIN)


def is_self(principal: Principal, resident_id: uuid.UUID) -> bool:
    return principal.role is Role.RESIDENT and principal.resident_id == resident_id


def require_self(principal: Principal, resident_id: uuid.UUID, action: str) -> None:
    """For what only the resident may do (consent, withdraw, answer, rate): staff who can see the record get 403."""
    if not is_self(principal, resident_id):
        raise Forbidden(f"Only the resident may {action}.")


async def resident_read_purpose(repo: Repository, principal: Principal, resident: Resident) -> str:
    if principal.role is Role.ADMIN:
        return PURPOSE_ADMINISTRATION
    if principal.role is Role.SERVICE:
        return PURPOSE_NOTIFICATION
    if principal.role in OFFICE_ROLES and await repo.has_case_in_offices(resident.id, principal.offices):
        return PURPOSE_CASE_REVIEW
    return PURPOSE_ASSISTED_REGISTRATION


def application_read_purpose(principal: Principal) -> str:
    return PURPOSE_ADMINISTRATION if principal.role is Role.ADMIN else PURPOSE_CASE_REVIEW


async def record_access(
    repo: Repository,
    principal: Principal,
    resident_id: uuid.UUID,
    *,
    action: str,
    record_type: str,
    record_id: uuid.UUID | str | None,
    purpose: str,
) -> None:
    """Write an audit-log entry, unless the resident is looking at their own data."""
    await audit_log.record(
        repo.session,
        principal,
        action=action,
        record_type=record_type,
        record_id=record_id,
        purpose=purpose,
        resident_id=resident_id,
    )


async def read_log(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, *, cursor: str | None, limit: int
) -> AccessLogPage:
    """Who looked at the resident's data, newest first: for the resident only."""
    if not is_self(principal, resident_id) or await repo.resident(resident_id) is None:
        raise NotFound(f"No resident {resident_id}.")
    before = int(cursor) if cursor else None
    entries = await audit_log.of_resident(repo.session, resident_id, before_id=before, limit=limit + 1)
    page = entries[:limit]
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
            )
            for e in page
        ],
        next_cursor=str(page[-1].id) if len(entries) > limit else None,
    )
