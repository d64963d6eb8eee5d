"""Cases as the API shows them, and the queue's opaque cursor."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from services.routing.models import Case, CaseEntry, CaseStatus
from services.routing.reasons import REASON_CODES
from services.routing.repository import QUEUE_ORDERS, QueueKey, QueuePosition
from services.routing.schemas import (
    CaseOut,
    CaseStatusName,
    CaseSummary,
    DecisionOut,
    HistoryEntry,
    MissingOut,
    QueueSort,
    ResidentOut,
    RoutingOut,
    SlaOut,
)
from services.routing.sla import WorkingCalendar
from shared.events import Decision, Department, Localized
from shared.problems import UnprocessableContent


def summary(case: Case) -> CaseSummary:
    return CaseSummary(
        id=case.id,
        kind=case.kind,
        application_id=case.application_id,
        opportunity_id=case.opportunity_id,
        program_code=case.program_code,
        program_name=Localized(ko=case.program_name_ko, en=case.program_name_en),
        department=Department(case.department),
        office_code=case.office_code,
        status=CaseStatusName(case.status),
        priority=case.priority,
        due_date=case.due_date,
        assignee=case.assignee,
        escalated=case.escalated,
        breached=case.breached_on is not None,
        interpreter_needed=case.interpreter_needed,
        automatic=case.automatic,
        created_at=case.created_at,
    )


def detail(case: Case, history: Sequence[CaseEntry], calendar: WorkingCalendar, today: dt.date) -> CaseOut:
    running = case.status in (CaseStatus.OPEN, CaseStatus.ASSIGNED)
    left: int | None = None
    if running:
        left = calendar.working_days_between(today, case.due_date)
        if case.due_date < today:
            left = -calendar.working_days_between(case.due_date, today)
    decision = None
    if case.decision is not None and case.reason_code is not None and case.decided_at is not None:
        reason = REASON_CODES.get(case.reason_code)
        decision = DecisionOut(
            decision=Decision(case.decision),
            reason_code=case.reason_code,
            reason=reason.label if reason else None,
            note=case.decision_note,
            amount=case.amount,
            automatic=case.decided_by == "system:eligibility",
            decided_by=case.decided_by or "",
            decided_at=case.decided_at,
        )
    return CaseOut(
        **summary(case).model_dump(),
        resident=ResidentOut(
            resident_id=case.resident_id,
            district_code=case.district_code,
            preferred_language=case.preferred_language,
            vulnerability=case.vulnerability,
        ),
        round=case.round,
        outcome=case.outcome,
        missing=[MissingOut.model_validate(m) for m in case.missing],
        amount=case.amount,
        amount_period=case.amount_period,
        case_weight=case.case_weight,
        sla=SlaOut(
            sla_days=case.sla_days,
            application_date=case.application_date,
            due_date=case.due_date,
            paused_since=case.paused_since,
            paused_working_days=case.paused_working_days,
            working_days_left=left,
            breached_on=case.breached_on,
        ),
        decision=decision,
        closed_reason=case.closed_reason,
        closed_at=case.closed_at,
        routing=RoutingOut.model_validate(case.routing),
        history=[history_entry(e) for e in history],
        version=case.version,
        updated_at=case.updated_at,
    )


def history_entry(entry: CaseEntry) -> HistoryEntry:
    return HistoryEntry(at=entry.at, actor=entry.actor, action=entry.action, details=entry.details)


# ---------------------------------------------------------------------------------------------- cursor


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _moment(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a moment without its zone")
    return moment


def _written(key: QueueKey) -> int | str:
    """A key as the cursor carries it: a number, or the ISO text of a date, moment or id."""
    if isinstance(key, int):
        return key
    return key.isoformat() if isinstance(key, dt.date) else str(key)


# How each key of a queue order is read back from a cursor.
_KEYS: dict[str, Callable[[Any], QueueKey]] = {
    "priority": _integer,
    "due_date": dt.date.fromisoformat,
    "created_at": _moment,
    "id": uuid.UUID,
}


def encode_cursor(case: Case, sort: QueueSort) -> str:
    """The cursor after ``case``: the order it pages and the case's values of that order's keys."""
    position = QueuePosition.of(case, sort)
    raw = orjson.dumps([position.sort.value, *map(_written, position.keys)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: QueueSort) -> QueuePosition:
    """Where the previous page ended; a cursor made for another order is refused (it marks no place in this one)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, *values = orjson.loads(raw)
        made = QueueSort(made_for)
        names = [name for name, _ in QUEUE_ORDERS[made]]
        keys = tuple(_KEYS[name](value) for name, value in zip(names, values, strict=True))
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
        raise UnprocessableContent.for_field("query.cursor", "not a cursor this queue returned") from None
    if made is not sort:
        raise UnprocessableContent.for_field(
            "query.cursor", f"this cursor pages the queue sorted by {made.value}, not by {sort.value}"
        )
    return QueuePosition(made, keys)
