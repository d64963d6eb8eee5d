"""A resident's request to erase their data (개인정보 보호법 제36조, 법률 제19234호, 2023-03-14 개정), and the
destruction of what is kept once its period ends (제21조).

The request (the resident, a representative in the ``data_rights`` scope, or counter staff under the resident's
authority) is refused while an application is still being handled: erasing it would end a benefit the resident
may be owed; they withdraw it or wait for its decision. Otherwise, in one transaction:

- intake erases its part at once, record type by record type as ``retention.yaml`` says: the resident's record
  becomes a stub (its id; the contact details until the resident was told the result), consents, applications that
  ended without a decision, referrals, notifications, feedback, proactive offers and screening questions, exports and
  stored answers go (no offer or question is put before the resident again); the decision files
  (applications a department decided), the representations and counter authorities the access log points at (revoked
  now), the access log itself and this request are kept, pseudonymous, until their periods end;
- ``resident.erasure_requested`` goes out to every service with the decision files, each service erases what it may
  and answers ``resident.erased`` (what it erased, what it keeps and until when);
- once every service answered, the request is completed and ``resident.erasure_completed`` goes out: notify tells
  the resident (through the contact details intake kept for it).

The housekeeping pass destroys what is kept when its period ends (:func:`purge`). Nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.access import PURPOSE_DATA_RIGHTS, exercising_rights, purpose_of, record_access
from services.intake.context import IntakeContext
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
    audit_log,
    platform,
)
from services.intake.repository import Repository
from services.intake.resident_data import SCHEDULE, SERVICE
from services.intake.schemas import ApplicationStatus, ErasureCreate, ErasureStatus, ErasureView, ServiceErasureView
from services.intake.settings import IntakeSettings
from shared.auth import Principal
from shared.clock import Clock
from shared.db import Database
from shared.events import (
    CloudEvent,
    DecisionFile,
    KeptRecords,
    ResidentErased,
    ResidentErasureCompleted,
    ResidentErasureRequested,
    ServiceKeptRecords,
)
from shared.outbox import Outbox
from shared.problems import Conflict, NotFound

log = logging.getLogger(__name__)

OPEN_STATUSES = frozenset(
    {ApplicationStatus.RECEIVED, ApplicationStatus.IN_PROGRESS, ApplicationStatus.ACTION_REQUIRED}
)
ERASED_BY = "erasure"


class ErasureAlreadyRequested(Conflict):
    slug = "erasure-already-requested"


class ApplicationsOpen(Conflict):
    slug = "applications-open"


# ---------------------------------------------------------------------------------------------- views


def _service_view(confirmation: ErasureConfirmation) -> ServiceErasureView:
    return ServiceErasureView(
        service=confirmation.service,
        status="erased" if confirmation.status == "erased" else "pending",
        erased_at=confirmation.erased_at,
        erased=dict(confirmation.erased),
        kept=[KeptRecords.model_validate(k) for k in confirmation.kept],
    )


def view(erasure: ErasureRequest) -> ErasureView:
    return ErasureView(
        id=erasure.id,
        resident_id=erasure.resident_id,
        status=ErasureStatus(erasure.status),
        requested_at=erasure.requested_at,
        completed_at=erasure.completed_at,
        decision_files=[DecisionFile.model_validate(f) for f in erasure.decision_files],
        services=[_service_view(c) for c in erasure.confirmations],
    )


# ---------------------------------------------------------------------------------------------- the request


async def _decision_files(repo: Repository, applications: Iterable[Application], clock: Clock) -> list[DecisionFile]:
    """The applications on which a department decided (a case approved or denied), with the day of the last
    decision."""
    files = []
    for application in applications:
        decided = [c.decided_at for c in await repo.cases(application.id) if c.state == "decided" and c.decided_at]
        if decided:
            files.append(DecisionFile(application_id=application.id, decided_on=clock.date_of(max(decided))))
    return files


async def request(
    repo: Repository, ctx: IntakeContext, principal: Principal, resident_id: uuid.UUID, body: ErasureCreate
) -> ErasureView:
    today = ctx.clock.today()
    resident, authority = await exercising_rights(repo, principal, resident_id, today, action="ask for their erasure")
    existing = await repo.erasure_request_of(resident.id)
    if existing is not None or resident.erased_at is not None:
        raise ErasureAlreadyRequested(
            "The resident's data was erased already (or is being erased).",
            erasure_id=str(existing.id) if existing else None,
        )
    resident = await repo.resident(resident.id, for_update=True) or resident
    applications = await repo.applications_of(resident.id, for_update=True)
    open_ = [a for a in applications if a.status in OPEN_STATUSES]
    if open_:
        raise ApplicationsOpen(
            "Applications are still being handled: withdraw them, or wait for their decision, then ask again. "
            "Erasing them now could end a benefit you are owed.",
            applications=[str(a.id) for a in open_],
        )
    now = dt.datetime.now(dt.UTC)
    files = await _decision_files(repo, applications, ctx.clock)
    erasure = ErasureRequest(
        id=uuid.uuid4(),
        resident_id=resident.id,
        status=ErasureStatus.IN_PROGRESS.value,
        reason=body.reason,
        requested_at=now,
        requested_on=today,
        requested_by=principal.subject[:255],
        requested_by_role=principal.role.value,
        authority_kind=authority.kind if authority else None,
        authority_id=str(authority.id) if authority else None,
        decision_files=[f.model_dump(mode="json") for f in files],
        contact_kept_until=now + dt.timedelta(days=ctx.settings.erasure_contact_max_days),
    )
    repo.session.add(erasure)
    await repo.session.flush()
    await record_access(
        repo,
        principal,
        resident.id,
        action="request erasure",
        record_type="erasure_request",
        record_id=erasure.id,
        purpose=purpose_of(authority) if authority else PURPOSE_DATA_RIGHTS,
        authority=authority,
        even_by_the_resident=True,
    )
    erased = await erase_own(repo, resident, applications, {f.application_id for f in files}, now)
    repo.session.add(
        ErasureConfirmation(
            erasure_id=erasure.id,
            service=SERVICE,
            status="erased",
            erased=erased,
            kept=[k.model_dump(mode="json") for k in await kept_by_intake(repo, erasure, files, today)],
            erased_at=now,
        )
    )
    for service in ctx.settings.resident_data_services:
        repo.session.add(ErasureConfirmation(erasure_id=erasure.id, service=service, status="pending"))
    await repo.session.flush()
    await ctx.outbox.emit(
        repo.session,
        ResidentErasureRequested(
            erasure_id=erasure.id, resident_id=resident.id, decision_files=files, requested_at=now
        ),
        subject=str(resident.id),
    )
    await repo.session.refresh(erasure, ["confirmations"])
    await complete_if_answered(repo, ctx.outbox, ctx.settings, erasure, now, today)
    return view(erasure)


async def read(
    repo: Repository, ctx: IntakeContext, principal: Principal, resident_id: uuid.UUID, erasure_id: uuid.UUID
) -> ErasureView:
    resident, _ = await exercising_rights(
        repo, principal, resident_id, ctx.clock.today(), action="see their erasure request"
    )
    erasure = await repo.erasure_request(erasure_id)
    if erasure is None or erasure.resident_id != resident.id:
        raise NotFound(f"No erasure request {erasure_id}.")
    return view(erasure)


# ---------------------------------------------------------------------------------------------- intake's own part


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _delete(session: AsyncSession, model: Any, *where: Any) -> int:
    result = await session.execute(delete(model).where(*where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def destroy_application(session: AsyncSession, application_id: uuid.UUID) -> None:
    """An application and everything intake's status view holds of it."""
    for model in (Referral, Notification, Feedback, TimelineEntry, ApplicationOffice, Case, Determination):
        await _delete(session, model, model.application_id == application_id)
    await _delete(session, Application, Application.id == application_id)


async def erase_own(
    repo: Repository,
    resident: Resident,
    applications: list[Application],
    kept_applications: set[uuid.UUID],
    now: dt.datetime,
) -> dict[str, int]:
    """Erase what intake may of the resident's data now; what it keeps is left pseudonymous. Returns how many
    records of each type were erased."""
    session = repo.session
    rid = resident.id
    erased: dict[str, int] = {}
    erased["consents"] = await _delete(session, Consent, Consent.resident_id == rid) + await _delete(
        session, ConsentChange, ConsentChange.resident_id == rid
    )
    for representation in await repo.representations_of(rid):
        representation.representative_name = ""
        if representation.revoked_at is None:
            representation.revoked_at = now
            representation.revoked_by = ERASED_BY
    for authority in await repo.counter_authorities(rid):
        if authority.revoked_at is None:
            authority.revoked_at = now
            authority.revoked_by = ERASED_BY
    erased["feedback"] = await _delete(session, Feedback, Feedback.resident_id == rid)
    # Before the applications: an accepted offer points at the application it filed.
    erased["offers"] = await _delete(session, Opportunity, Opportunity.resident_id == rid)
    erased["screening_questions"] = await _delete(session, ScreeningQuestion, ScreeningQuestion.resident_id == rid)
    erased["referrals"] = erased["notifications"] = erased["applications_without_decision"] = 0
    for application in applications:
        erased["referrals"] += await _count(session, Referral, Referral.application_id == application.id)
        erased["notifications"] += await _count(session, Notification, Notification.application_id == application.id)
        if application.id in kept_applications:
            application.withdrawal_reason = None
            for model in (Referral, Notification):
                await _delete(session, model, model.application_id == application.id)
        else:
            await destroy_application(session, application.id)
            erased["applications_without_decision"] += 1
    erased["household_cases"] = await _delete(session, HouseholdCaseStatus, HouseholdCaseStatus.resident_id == rid)
    erased["data_exports"] = await _delete(session, DataExport, DataExport.resident_id == rid)
    keys, dead = platform.idempotency_keys, platform.dead_letters
    erased["stored_answers"] = int(
        (await session.execute(delete(keys).where(keys.c.principal == f"resident:{rid}"))).rowcount or 0  # type: ignore[attr-defined]
    ) + int(
        (await session.execute(delete(dead).where(dead.c.payload.contains(str(rid))))).rowcount or 0  # type: ignore[attr-defined]
    )
    # The record becomes a stub; the contact details stay until the resident was told the result (purge).
    post = "post" in (resident.preferred_channels or [])
    household_id = resident.household_id
    for column in ("birth_date", "district_code", "household", "registry_household", "household_id", "vulnerability"):
        setattr(resident, column, None)
    await session.flush()
    # The registered household's key goes with the last of its residents intake holds.
    others = select(func.count()).where(Resident.household_id == household_id, Resident.id != rid)
    if household_id is not None and not await session.scalar(others):
        await _delete(session, RegistryHousehold, RegistryHousehold.id == household_id)
    if not post:
        setattr(resident, "name", None)  # noqa: B010 (typed for a live record: see models.Resident)
        setattr(resident, "address", None)  # noqa: B010
    resident.erased_at = now
    resident.updated_at = now
    resident.version += 1
    erased["resident"] = 1
    await session.flush()
    return erased


async def kept_by_intake(
    repo: Repository, erasure: ErasureRequest, files: list[DecisionFile], today: dt.date
) -> list[KeptRecords]:
    """What intake keeps of the resident, why, and until when (retention.yaml)."""
    rid = erasure.resident_id
    session = repo.session
    kept: list[KeptRecords] = []
    # Until the notice is sent: a few days after completion, at most erasure_contact_max_days after the request.
    notice = SCHEDULE.rule("contact_for_notice")
    kept.append(notice.kept(1, erasure.contact_kept_until.date() - dt.timedelta(days=notice.days)))
    representations = await _count(session, Representation, Representation.resident_id == rid)
    if representations:
        kept.append(SCHEDULE.rule("representations").kept(representations, erasure.requested_on))
    authorities = await _count(session, CounterAuthority, CounterAuthority.resident_id == rid)
    if authorities:
        kept.append(SCHEDULE.rule("counter_authorities").kept(authorities, erasure.requested_on))
    kept += SCHEDULE.rule("decision_files").kept_each(f.decided_on for f in files)
    log_rule = SCHEDULE.rule("access_log")
    table = audit_log.table
    entries = await _count(session, table, table.c.resident_id == rid)
    if entries:
        # Each entry two years after it was written; the last one written is this request's.
        kept.append(log_rule.kept(entries, today))
    completed = erasure.completed_at.date() if erasure.completed_at else today
    kept.append(SCHEDULE.rule("erasure_requests").kept(1, completed))
    return kept


# ---------------------------------------------------------------------------------------------- the answers


async def complete_if_answered(
    repo: Repository,
    outbox: Outbox,
    settings: IntakeSettings,
    erasure: ErasureRequest,
    now: dt.datetime,
    today: dt.date,
) -> None:
    """Once every service answered: completed, the contact details kept a few days more for the notice, and
    ``resident.erasure_completed`` out (notify tells the resident)."""
    if erasure.status == ErasureStatus.COMPLETED.value:
        return
    if any(c.status != "erased" for c in erasure.confirmations):
        return
    erasure.status = ErasureStatus.COMPLETED.value
    erasure.completed_at = now
    erasure.contact_kept_until = min(erasure.contact_kept_until, now + dt.timedelta(days=settings.erasure_notice_days))
    files = [DecisionFile.model_validate(f) for f in erasure.decision_files]
    own = next(c for c in erasure.confirmations if c.service == SERVICE)
    own.kept = [k.model_dump(mode="json") for k in await kept_by_intake(repo, erasure, files, today)]
    await repo.session.flush()
    await outbox.emit(
        repo.session,
        ResidentErasureCompleted(
            erasure_id=erasure.id,
            resident_id=erasure.resident_id,
            kept=[
                ServiceKeptRecords(service=c.service, **KeptRecords.model_validate(k).model_dump())
                for c in erasure.confirmations
                for k in c.kept
            ],
            completed_at=now,
        ),
        subject=str(erasure.resident_id),
    )


async def on_erased(repo: Repository, ctx: IntakeContext, event: CloudEvent, data: ResidentErased) -> None:
    """A service's answer: recorded once (a redelivery or a second answer changes nothing)."""
    erasure = await repo.erasure_request(data.erasure_id, for_update=True)
    if erasure is None or erasure.resident_id != data.resident_id:
        log.warning("an answer to an unknown erasure request", extra={"erasure_id": str(data.erasure_id)})
        return
    confirmation = await repo.erasure_confirmation(erasure.id, data.service)
    if confirmation is None:
        confirmation = ErasureConfirmation(erasure_id=erasure.id, service=data.service, status="pending")
        repo.session.add(confirmation)
    if confirmation.status == "erased":
        return
    confirmation.status = "erased"
    confirmation.erased = dict(data.erased)
    confirmation.kept = [k.model_dump(mode="json") for k in data.kept]
    confirmation.erased_at = data.erased_at
    await repo.session.flush()
    await repo.session.refresh(erasure, ["confirmations"])
    await complete_if_answered(repo, ctx.outbox, ctx.settings, erasure, dt.datetime.now(dt.UTC), ctx.clock.today())


# ---------------------------------------------------------------------------------------------- destruction


async def purge(db: Database, settings: IntakeSettings, clock: Clock, now: dt.datetime) -> dict[str, int]:
    """The housekeeping pass: destroy what was kept once its period ended (제21조), and expired exports."""
    today = clock.date_of(now)
    counts = {"contacts": 0, "decision_files": 0, "representations": 0, "counter_authorities": 0, "access_log": 0,
              "erasure_requests": 0, "residents": 0, "data_exports": 0}  # fmt: skip
    async with db.session() as session:
        repo = Repository(session)
        counts["data_exports"] = await _delete(
            session, DataExport, DataExport.expires_at.is_not(None), DataExport.expires_at < now
        )
        failed_before = now - dt.timedelta(days=settings.export_retention_days)
        counts["data_exports"] += await _delete(
            session, DataExport, DataExport.status == "failed", DataExport.completed_at < failed_before
        )
        for erasure in await repo.erasure_requests():
            for what, n in (await _purge_erasure(repo, erasure, now, today)).items():
                counts[what] += n
    return counts


async def _purge_erasure(repo: Repository, erasure: ErasureRequest, now: dt.datetime, today: dt.date) -> dict[str, int]:
    session = repo.session
    rid = erasure.resident_id
    counts: dict[str, int] = {}
    resident = await repo.resident(rid, for_update=True)
    if erasure.contact_erased_at is None and now >= erasure.contact_kept_until:
        if resident is not None:
            for column in ("name", "address", "email", "phone", "preferred_language", "preferred_channels"):
                setattr(resident, column, None)
            resident.updated_at = now
        erasure.contact_erased_at = now
        counts["contacts"] = 1
    files_rule = SCHEDULE.rule("decision_files")
    for raw in erasure.decision_files:
        f = DecisionFile.model_validate(raw)
        if files_rule.destroy_on(f.decided_on) <= today and await repo.application(f.application_id) is not None:
            await destroy_application(session, f.application_id)
            counts["decision_files"] = counts.get("decision_files", 0) + 1
    if SCHEDULE.rule("representations").destroy_on(erasure.requested_on) <= today:
        ids = select(Representation.id).where(Representation.resident_id == rid)
        await _delete(session, RepresentationScope, RepresentationScope.representation_id.in_(ids))
        counts["representations"] = await _delete(session, Representation, Representation.resident_id == rid)
    if SCHEDULE.rule("counter_authorities").destroy_on(erasure.requested_on) <= today:
        counts["counter_authorities"] = await _delete(session, CounterAuthority, CounterAuthority.resident_id == rid)
    counts["access_log"] = await audit_log.purge_of_residents(
        session, [rid], before=_before(now, SCHEDULE.rule("access_log").years)
    )
    # The request's own record stays its period, and as long as anything kept under it remains (it is what tells
    # this pass what to destroy); then the resident's stub goes with it.
    completed = erasure.completed_at
    if (
        completed is not None
        and SCHEDULE.rule("erasure_requests").destroy_on(completed.date()) <= today
        and not await _still_referenced(session, rid)
    ):
        await session.delete(erasure)
        counts["erasure_requests"] = 1
        if resident is not None:
            await session.delete(resident)
            counts["residents"] = 1
    await session.flush()
    return counts


def _before(now: dt.datetime, years: int) -> dt.datetime:
    """``years`` before ``now`` (28 February for a 29th)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


async def _still_referenced(session: AsyncSession, resident_id: uuid.UUID) -> bool:
    for model in (Application, Representation, CounterAuthority, ConsentChange, Consent, Feedback):
        if await _count(session, model, model.resident_id == resident_id):
            return True
    return bool(await _count(session, audit_log.table, audit_log.table.c.resident_id == resident_id))
