"""What eligibility holds about a resident — their part of the resident's export — and their erasure here.

The part (``GET /v1/residents/{id}/data``, for the resident or intake gathering their export): the copy of their
registry facts and consents, the facts departments reported with their source, their applications as eligibility knows
them with every evaluation round and determination (the rule version, each criterion with the values it read), where
their cases are, the support proactive screening found for them, the near-miss questions it asked them and their
answers, when they are next screened, and who among staff read their determinations. After an erasure, only what is
kept, with why and until when (retention.yaml).

The erasure (``resident.erasure_requested``): the decision files intake names are kept, pseudonymous; everything else
goes — with the registry copy the resident leaves every screening's population, and their questions, answers, review
date and pending re-screening go too; ``resident.erased`` answers with what was erased and what is kept. Later events
and department reports about the resident are not stored (``Repository.erased``), and no screening finds or asks them
anything again. The housekeeping pass destroys kept records when their period ends (:func:`purge`). Nothing here
commits but the purge, a unit of work of its own."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility.models import (
    ApplicationRow,
    CaseOfficeRow,
    DepartmentFactRow,
    DeterminationRow,
    EvaluationRoundRow,
    OpportunityRow,
    ResidentAnswerRow,
    ResidentErasureRow,
    ResidentRow,
    ScreeningQuestionRow,
    ScreeningQueueRow,
    ScreeningReviewRow,
    audit_log,
    platform,
)
from services.eligibility.repository import Repository
from shared.auth import Principal
from shared.clock import Clock
from shared.db import Database
from shared.events import DecisionFile, KeptRecords, ResidentErased, ResidentErasureRequested
from shared.outbox import Outbox
from shared.personal_data import (
    PURPOSE_EXPORT,
    ErasureState,
    ResidentDataPart,
    RetentionSchedule,
    may_read_part,
    rows_data,
)
from shared.problems import NotFound

SERVICE = "eligibility"
SCHEDULE = RetentionSchedule.load(Path(__file__).resolve().parent / "retention.yaml")


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
    applications = list(
        (
            await session.scalars(
                select(ApplicationRow)
                .where(ApplicationRow.resident_id == resident_id)
                .order_by(ApplicationRow.submitted_at, ApplicationRow.application_id)
            )
        ).all()
    )
    ids = [a.application_id for a in applications]
    table = audit_log.table
    entries = (
        (await session.execute(select(table).where(table.c.resident_id == resident_id).order_by(table.c.id)))
        .mappings()
        .all()
    )
    erasure = await session.get(ResidentErasureRow, resident_id)
    records: dict[str, list[dict[str, Any]]] = {
        "registry": rows_data([r] if (r := await repo.resident(resident_id)) else []),
        "department_facts": rows_data(await repo.department_facts(resident_id)),
        "applications": rows_data(applications),
        "evaluation_rounds": rows_data(await _all(session, EvaluationRoundRow, EvaluationRoundRow.application_id, ids)),
        "determinations": rows_data(await _all(session, DeterminationRow, DeterminationRow.application_id, ids)),
        "case_offices": rows_data(await _all(session, CaseOfficeRow, CaseOfficeRow.application_id, ids)),
        "opportunities": rows_data(await _of(session, OpportunityRow, resident_id)),
        "screening_questions": rows_data(await _of(session, ScreeningQuestionRow, resident_id)),
        "screening_answers": rows_data(await _of(session, ResidentAnswerRow, resident_id)),
        "screening_reviews": rows_data(await _of(session, ScreeningReviewRow, resident_id)),
        "screening_queue": rows_data(await _of(session, ScreeningQueueRow, resident_id)),
        "access_log": [dict(e) for e in entries],
    }
    return ResidentDataPart(
        service=SERVICE,
        resident_id=resident_id,
        generated_at=dt.datetime.now(dt.UTC),
        records=records,
        erasure=_state(erasure),
        retention=SCHEDULE.rules,
    )


async def _of(session: AsyncSession, model: Any, resident_id: uuid.UUID) -> list[Any]:
    return list((await session.scalars(select(model).where(model.resident_id == resident_id))).all())


async def _all(session: AsyncSession, model: Any, column: Any, ids: list[uuid.UUID]) -> list[Any]:
    if not ids:
        return []
    return list((await session.scalars(select(model).where(column.in_(ids)))).all())


def _state(row: ResidentErasureRow | None) -> ErasureState | None:
    if row is None:
        return None
    return ErasureState(
        erasure_id=row.erasure_id,
        requested_at=row.requested_at,
        erased_at=row.erased_at,
        erased=dict(row.erased),
        kept=[KeptRecords.model_validate(k) for k in row.kept],
    )


# ---------------------------------------------------------------------------------------------- the erasure


async def _delete(session: AsyncSession, model: Any, *where: Any) -> int:
    result = await session.execute(delete(model).where(*where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def destroy_application(session: AsyncSession, application_id: uuid.UUID) -> None:
    for model in (DeterminationRow, EvaluationRoundRow, CaseOfficeRow):
        await _delete(session, model, model.application_id == application_id)
    await _delete(session, ApplicationRow, ApplicationRow.application_id == application_id)


async def on_erasure_requested(
    repo: Repository, outbox: Outbox, data: ResidentErasureRequested, today: dt.date
) -> None:
    session = repo.session
    rid = data.resident_id
    if await repo.erased(rid):
        return  # answered already
    now = dt.datetime.now(dt.UTC)
    files = {f.application_id: f for f in data.decision_files}
    erased_counts = {
        "registry": await _delete(session, ResidentRow, ResidentRow.resident_id == rid),
        "department_facts": await _delete(session, DepartmentFactRow, DepartmentFactRow.resident_id == rid),
        "applications_without_decision": 0,
        **await _erase_screening(session, rid),
    }
    kept_files: list[DecisionFile] = []
    for app in (await session.scalars(select(ApplicationRow).where(ApplicationRow.resident_id == rid))).all():
        if app.application_id in files:
            app.resident_context = None
            kept_files.append(files[app.application_id])
        else:
            await destroy_application(session, app.application_id)
            erased_counts["applications_without_decision"] += 1
    dead = platform.dead_letters
    erased_counts["stored_answers"] = int(
        (await session.execute(delete(dead).where(dead.c.payload.contains(str(rid))))).rowcount or 0  # type: ignore[attr-defined]
    )
    kept = _kept(kept_files, await _count(session, audit_log.table, audit_log.table.c.resident_id == rid), today)
    repo.erasing(rid)
    session.add(
        ResidentErasureRow(
            resident_id=rid,
            erasure_id=data.erasure_id,
            requested_at=data.requested_at,
            erased_at=now,
            decision_files=[f.model_dump(mode="json") for f in data.decision_files],
            erased=erased_counts,
            kept=[k.model_dump(mode="json") for k in kept],
        )
    )
    await session.flush()
    await outbox.emit(
        session,
        ResidentErased(
            erasure_id=data.erasure_id, resident_id=rid, service=SERVICE, erased=erased_counts, kept=kept, erased_at=now
        ),
        subject=str(rid),
    )


async def _erase_screening(session: AsyncSession, rid: uuid.UUID) -> dict[str, int]:
    """What proactive screening holds of the resident: what it found, what it asked and was told, when it would
    screen them next. Without their registry copy no run screens them again."""
    return {
        "opportunities": await _delete(session, OpportunityRow, OpportunityRow.resident_id == rid),
        "screening_questions": await _delete(session, ScreeningQuestionRow, ScreeningQuestionRow.resident_id == rid),
        "screening_answers": await _delete(session, ResidentAnswerRow, ResidentAnswerRow.resident_id == rid),
        "screening_schedule": await _delete(session, ScreeningReviewRow, ScreeningReviewRow.resident_id == rid)
        + await _delete(session, ScreeningQueueRow, ScreeningQueueRow.resident_id == rid),
    }


def _kept(files: list[DecisionFile], access_entries: int, today: dt.date) -> list[KeptRecords]:
    kept = SCHEDULE.rule("decision_files").kept_each(f.decided_on for f in files)
    if access_entries:
        kept.append(SCHEDULE.rule("access_log").kept(access_entries, today))
    kept.append(SCHEDULE.rule("erasure_record").kept(1, today))
    return kept


# ---------------------------------------------------------------------------------------------- destruction


async def purge(db: Database, clock: Clock, now: dt.datetime) -> dict[str, int]:
    """The housekeeping pass: destroy kept records whose period ended (제21조)."""
    today = clock.date_of(now)
    counts = {"decision_files": 0, "access_log": 0, "erasure_records": 0, "screening_leftovers": 0}
    files_rule, log_rule, record_rule = (
        SCHEDULE.rule("decision_files"),
        SCHEDULE.rule("access_log"),
        SCHEDULE.rule("erasure_record"),
    )
    async with db.session() as session:
        rows = (await session.scalars(select(ResidentErasureRow))).all()
        for row in rows:
            # A screening page that read the resident just before their erasure may have written after it.
            counts["screening_leftovers"] += sum((await _erase_screening(session, row.resident_id)).values())
            for raw in row.decision_files:
                f = DecisionFile.model_validate(raw)
                due = files_rule.destroy_on(f.decided_on) <= today
                if due and await session.get(ApplicationRow, f.application_id) is not None:
                    await destroy_application(session, f.application_id)
                    counts["decision_files"] += 1
            counts["access_log"] += await audit_log.purge_of_residents(
                session, [row.resident_id], before=_years_before(now, log_rule.years)
            )
            left = await _count(session, ApplicationRow, ApplicationRow.resident_id == row.resident_id)
            if record_rule.destroy_on(clock.date_of(row.erased_at)) <= today and not left:
                await session.delete(row)
                counts["erasure_records"] += 1
    return counts


def _years_before(now: dt.datetime, years: int) -> dt.datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)
