"""What routing holds about a resident — their part of the resident's export — and their erasure here.

The part (``GET /v1/residents/{id}/data``, for the resident or intake gathering their export): the applications
routing heard of, their cases with each case's history (caseworkers' notes on a case still being decided are
withheld, and the part says so and why) — outreach cases and their visits among them —, SLA breaches, referrals to
partners, the offers put before them, the copy of their consents, their ratings, and who among staff read their
cases. After an erasure, only what is kept, with why and until when
(retention.yaml).

The erasure (``resident.erasure_requested``, in order with the case events): decided cases are kept, pseudonymous;
cases closed without a decision, outreach cases (open or closed: no one is visited any more), the offers (no outreach
is opened from them, and take-up no longer counts them), referrals (a place still held is given back), the consents
copy go; ratings lose
their link to the application; ``resident.erased`` answers. Later events about the resident are not stored. The
housekeeping pass destroys kept cases when their period ends (:func:`purge`). Nothing here commits but the purge."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.routing.models import (
    OUTREACH,
    ApplicationRecord,
    Case,
    CaseEntry,
    CaseStatus,
    HouseholdCase,
    HouseholdConference,
    HouseholdEntry,
    HouseholdFollowUp,
    HouseholdMember,
    Offer,
    Referral,
    ResidentConsents,
    ResidentErasure,
    ResidentFeedback,
    ResidentHousehold,
    SlaBreach,
    audit_log,
    platform,
)
from services.routing.repository import Repository
from shared.auth import Principal
from shared.clock import Clock
from shared.db import Database, get_unflushed
from shared.events import KeptRecords, Localized, ResidentErased, ResidentErasureRequested
from shared.outbox import Outbox
from shared.personal_data import (
    PURPOSE_EXPORT,
    ErasureState,
    ResidentDataPart,
    RetentionSchedule,
    Withheld,
    may_read_part,
    row_data,
    rows_data,
)
from shared.problems import NotFound

SERVICE = "routing"
SCHEDULE = RetentionSchedule.load(Path(__file__).resolve().parent / "retention.yaml")
NOTE = "note"
NOTES_WITHHELD = Localized(
    ko="결정 중인 사례에 대한 담당자의 메모는 결정이 끝난 뒤 열람할 수 있습니다.",
    en="Caseworkers' notes on a case still being decided can be seen once it is decided.",
)
NOTES_BASIS = (
    "개인정보 보호법 제35조 제4항 제3호 (법률 제19234호, 2023-03-14 개정): 보상금·급부금 산정 등에 대하여 진행 중인 "
    "평가 또는 판단에 관한 업무 — 확인 필요 (the sub-item)"
)


async def _all(session: AsyncSession, model: Any, *where: Any) -> list[Any]:
    return list((await session.scalars(select(model).where(*where))).all())


async def _delete(session: AsyncSession, model: Any, *where: Any) -> int:
    result = await session.execute(delete(model).where(*where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# ---------------------------------------------------------------------------------------------- the part


async def part(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, export_id: uuid.UUID | None
) -> ResidentDataPart:
    if not may_read_part(principal, resident_id):
        raise NotFound(f"No resident {resident_id}.")
    session = repo.session
    await audit_log.record(
        session,
        principal,
        action="export",
        record_type="resident_data",
        record_id=export_id or resident_id,
        purpose=PURPOSE_EXPORT,
        resident_id=resident_id,
    )
    cases = sorted(await _all(session, Case, Case.resident_id == resident_id), key=lambda c: (c.created_at, c.id))
    withheld_notes = 0
    case_records = []
    for case in cases:
        entries = sorted(await _all(session, CaseEntry, CaseEntry.case_id == case.id), key=lambda e: (e.at, e.id))
        shown = [e for e in entries if case.status in CaseStatus.FINAL or e.action != NOTE]
        withheld_notes += len(entries) - len(shown)
        case_records.append({**row_data(case), "history": rows_data(shown)})
    case_ids = [c.id for c in cases]
    applications = await _all(session, ApplicationRecord, ApplicationRecord.resident_id == resident_id)
    application_ids = [a.application_id for a in applications]
    table = audit_log.table
    log_entries = (
        (await session.execute(select(table).where(table.c.resident_id == resident_id).order_by(table.c.id)))
        .mappings()
        .all()
    )
    feedback = (
        await _all(session, ResidentFeedback, ResidentFeedback.application_id.in_(application_ids))
        if application_ids
        else []
    )
    records: dict[str, list[dict[str, Any]]] = {
        "applications": rows_data(applications),
        "cases": case_records,
        "sla_breaches": rows_data(await _all(session, SlaBreach, SlaBreach.case_id.in_(case_ids))) if case_ids else [],
        "referrals": rows_data(await _all(session, Referral, Referral.resident_id == resident_id)),
        "offers": rows_data(await _all(session, Offer, Offer.resident_id == resident_id)),
        "consents": rows_data([c] if (c := await repo.resident_consents(resident_id)) else []),
        "feedback": rows_data(feedback),
        "access_log": [dict(e) for e in log_entries],
        # The household the registry lists them in (its pseudonymous id) and the household cases they are a member of.
        "registered_household": rows_data([h] if (h := await session.get(ResidentHousehold, resident_id)) else []),
        "household_memberships": rows_data(
            await _all(session, HouseholdMember, HouseholdMember.resident_id == resident_id)
        ),
    }
    withheld = (
        [Withheld(record_type="case_notes", count=withheld_notes, reason=NOTES_WITHHELD, legal_basis=NOTES_BASIS)]
        if withheld_notes
        else []
    )
    erasure = await session.get(ResidentErasure, resident_id)
    return ResidentDataPart(
        service=SERVICE,
        resident_id=resident_id,
        generated_at=dt.datetime.now(dt.UTC),
        records=records,
        withheld=withheld,
        erasure=ErasureState(
            erasure_id=erasure.erasure_id,
            requested_at=erasure.requested_at,
            erased_at=erasure.erased_at,
            erased=dict(erasure.erased),
            kept=[KeptRecords.model_validate(k) for k in erasure.kept],
        )
        if erasure
        else None,
        retention=SCHEDULE.rules,
    )


# ---------------------------------------------------------------------------------------------- the erasure


# The residents a transaction found not erased (session.info): a consumer's batch asks about them event after event.
_NOT_ERASED = "routing_not_erased"


async def erased(repo: Repository, resident_id: uuid.UUID) -> bool:
    """Whether the resident's data was erased here. One found not erased is remembered for the rest of the transaction
    (until an erasure of theirs is written in it: :func:`on_erasure_requested`)."""
    known: set[uuid.UUID] = repo.session.info.setdefault(_NOT_ERASED, set())
    if resident_id in known:
        return False
    if await get_unflushed(repo.session, ResidentErasure, resident_id) is not None:
        return True
    known.add(resident_id)
    return False


async def _destroy_case(session: AsyncSession, case_id: uuid.UUID) -> None:
    for model in (CaseEntry, SlaBreach, Referral):
        await _delete(session, model, model.case_id == case_id)
    await _delete(session, Case, Case.id == case_id)


async def on_erasure_requested(repo: Repository, outbox: Outbox, clock: Clock, data: ResidentErasureRequested) -> None:
    session = repo.session
    rid = data.resident_id
    if await erased(repo, rid):
        return  # answered already
    await repo.write_entries()  # the history kept aside goes with the cases it is of
    now = clock.now()
    counts = {"referrals": 0, "cases_without_decision": 0, "outreach_cases": 0, "feedback": 0}
    # Referrals first: a place still held is given back to the partner's offering.
    for referral in await _all(session, Referral, Referral.resident_id == rid):
        if referral.holds_place:
            await repo.give_back_place(referral.offering_id, now)
        counts["referrals"] += 1
    await _delete(session, Referral, Referral.resident_id == rid)
    kept_cases: list[Case] = []
    for case in await _all(session, Case, Case.resident_id == rid):
        if case.status == CaseStatus.DECIDED and case.decided_on is not None:
            case.vulnerability = []
            kept_cases.append(case)
        else:
            await _destroy_case(session, case.id)
            counts["outreach_cases" if case.kind == OUTREACH else "cases_without_decision"] += 1
    counts["offers"] = await _delete(session, Offer, Offer.resident_id == rid)
    counts["household_cases"] = await _erase_household_membership(session, rid)
    kept_applications = {c.application_id for c in kept_cases}
    for application in await _all(session, ApplicationRecord, ApplicationRecord.resident_id == rid):
        # A rating keeps counting in the statistics, but no longer says whose (a random key for the application).
        rekeyed = await session.execute(
            update(ResidentFeedback)
            .where(ResidentFeedback.application_id == application.application_id)
            .values(application_id=uuid.uuid4())
        )
        counts["feedback"] += int(rekeyed.rowcount or 0)  # type: ignore[attr-defined]
        if application.application_id not in kept_applications:
            await session.delete(application)
    counts["consents"] = await _delete(session, ResidentConsents, ResidentConsents.resident_id == rid)
    dead = platform.dead_letters
    counts["stored_answers"] = int(
        (await session.execute(delete(dead).where(dead.c.payload.contains(str(rid))))).rowcount or 0  # type: ignore[attr-defined]
    )
    today = clock.today()
    kept = _kept(kept_cases, await _count(session, audit_log.table, audit_log.table.c.resident_id == rid), today)
    session.info.get(_NOT_ERASED, set()).discard(rid)  # erased from here on in this transaction
    repo.forget_loaded_cases()
    session.add(
        ResidentErasure(
            resident_id=rid,
            erasure_id=data.erasure_id,
            requested_at=data.requested_at,
            erased_at=now,
            erased=counts,
            kept=[k.model_dump(mode="json") for k in kept],
        )
    )
    await session.flush()
    await outbox.emit(
        session,
        ResidentErased(
            erasure_id=data.erasure_id, resident_id=rid, service=SERVICE, erased=counts, kept=kept, erased_at=now
        ),
        subject=str(rid),
    )


async def _erase_household_membership(session: AsyncSession, rid: uuid.UUID) -> int:
    """The resident leaves every household case (one left without members goes whole) and the household they are
    registered in is forgotten."""
    await _delete(session, ResidentHousehold, ResidentHousehold.resident_id == rid)
    memberships = await _all(session, HouseholdMember, HouseholdMember.resident_id == rid)
    await _delete(session, HouseholdMember, HouseholdMember.resident_id == rid)
    for membership in memberships:
        hid = membership.household_case_id
        if await _count(session, HouseholdMember, HouseholdMember.household_case_id == hid):
            continue
        for model in (HouseholdEntry, HouseholdFollowUp, HouseholdConference):
            await _delete(session, model, model.household_case_id == hid)
        await _delete(session, HouseholdCase, HouseholdCase.id == hid)
    return len(memberships)


def _kept(cases: list[Case], access_entries: int, today: dt.date) -> list[KeptRecords]:
    # Only decided cases are kept: each has its day.
    kept = SCHEDULE.rule("decided_cases").kept_each(c.decided_on for c in cases if c.decided_on is not None)
    if access_entries:
        kept.append(SCHEDULE.rule("access_log").kept(access_entries, today))
    kept.append(SCHEDULE.rule("erasure_record").kept(1, today))
    return kept


# ---------------------------------------------------------------------------------------------- destruction


async def purge(db: Database, clock: Clock, now: dt.datetime) -> dict[str, int]:
    """The housekeeping pass: destroy kept records whose period ended (제21조)."""
    today = clock.date_of(now)
    counts = {"decided_cases": 0, "access_log": 0, "erasure_records": 0}
    cases_rule, log_rule, record_rule = (
        SCHEDULE.rule("decided_cases"),
        SCHEDULE.rule("access_log"),
        SCHEDULE.rule("erasure_record"),
    )
    async with db.session() as session:
        for row in (await session.scalars(select(ResidentErasure))).all():
            rid = row.resident_id
            for case in await _all(session, Case, Case.resident_id == rid):
                if case.decided_on is not None and cases_rule.destroy_on(case.decided_on) <= today:
                    await _destroy_case(session, case.id)
                    counts["decided_cases"] += 1
            left = {c.application_id for c in await _all(session, Case, Case.resident_id == rid)}
            await _delete(
                session,
                ApplicationRecord,
                ApplicationRecord.resident_id == rid,
                ApplicationRecord.application_id.not_in(left) if left else ApplicationRecord.resident_id == rid,
            )
            counts["access_log"] += await audit_log.purge_of_residents(
                session, [rid], before=_years_before(now, log_rule.years)
            )
            if record_rule.destroy_on(clock.date_of(row.erased_at)) <= today and not left:
                await session.delete(row)
                counts["erasure_records"] += 1
    return counts


def _years_before(now: dt.datetime, years: int) -> dt.datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)
