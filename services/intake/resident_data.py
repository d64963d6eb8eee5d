"""Intake's part of a resident's export: everything intake holds about them — their record and household, consents
and their history, the representatives they named (and whom they represent), the authorities they gave at counters,
their applications with the one status of each, the offers proactive screening put before them and the questions it
asked, their feedback, who looked at their data (the access log), the
exports they asked for and their erasure request — and, after an erasure, only what intake keeps, with why and until
when (retention.yaml). Nothing here commits."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from services.intake.models import ErasureRequest, Representation, audit_log
from services.intake.repository import Repository
from services.intake.status import build_view
from shared.events import KeptRecords
from shared.personal_data import ErasureState, ResidentDataPart, RetentionSchedule, row_data, rows_data

SERVICE = "intake"
SCHEDULE = RetentionSchedule.load(Path(__file__).resolve().parent / "retention.yaml")
ACCESS_LOG_PAGE = 500


def _representation(representation: Representation) -> dict[str, Any]:
    return {**row_data(representation), "scopes": representation.scopes}


def erasure_state(request: ErasureRequest | None) -> ErasureState | None:
    """The erasure as the resident's export tells it: intake's own answer (the others' are in their parts)."""
    if request is None:
        return None
    own = next((c for c in request.confirmations if c.service == SERVICE), None)
    return ErasureState(
        erasure_id=request.id,
        requested_at=request.requested_at,
        erased_at=own.erased_at if own else None,
        erased=dict(own.erased) if own else {},
        kept=[KeptRecords.model_validate(k) for k in own.kept] if own else [],
    )


async def _access_log(repo: Repository, resident_id: uuid.UUID) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page = await audit_log.of_resident(repo.session, resident_id, before_id=before, limit=ACCESS_LOG_PAGE)
        entries += [vars(e).copy() for e in page]
        if len(page) < ACCESS_LOG_PAGE:
            return entries
        before = page[-1].id


async def part(repo: Repository, resident_id: uuid.UUID) -> ResidentDataPart:
    """Everything intake holds about the resident (erased or not)."""
    resident = await repo.resident(resident_id)
    erasure = await repo.erasure_request_of(resident_id)
    applications = await repo.applications_of(resident_id)
    records: dict[str, list[dict[str, Any]]] = {
        "resident": rows_data([resident] if resident else []),
        "consents": rows_data(await repo.consents(resident_id)),
        "consent_history": rows_data(await repo.consent_history(resident_id)),
        "representations": [_representation(r) for r in await repo.representations_of(resident_id)],
        "representing": [_representation(r) for r in await repo.representations_by(resident_id)],
        "counter_authorities": rows_data(await repo.counter_authorities(resident_id)),
        "applications": [(await build_view(repo, a)).model_dump(mode="json") for a in applications],
        "offers": rows_data(await repo.opportunities_of(resident_id, None)),
        "screening_questions": rows_data(await repo.questions_of(resident_id, None)),
        "feedback": rows_data(await repo.feedback_of(resident_id)),
        "access_log": await _access_log(repo, resident_id),
        # The documents themselves are not repeated (an export inside an export); only that they were made.
        "data_exports": rows_data(
            await repo.data_exports_of(resident_id), exclude=("document", "claim_token", "claimed_until")
        ),
        "erasure_requests": [{**row_data(erasure), "confirmations": rows_data(erasure.confirmations)}]
        if erasure
        else [],
    }
    return ResidentDataPart(
        service=SERVICE,
        resident_id=resident_id,
        generated_at=dt.datetime.now(dt.UTC),
        records=records,
        erasure=erasure_state(erasure),
        retention=SCHEDULE.rules,
    )
