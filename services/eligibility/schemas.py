"""Request and response bodies of the eligibility API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from services.eligibility.specs import CODE_PATTERN, LifeEvent, VersionSpec, VersionStatus
from shared.events import Department, Localized, MissingFact, Outcome, ProgramDetermination, ReportedFact

ProgramCode = Field(pattern=CODE_PATTERN, max_length=64)


class ProgramRef(BaseModel):
    code: str
    name: Localized
    department: Department


class LifeEventOut(BaseModel):
    code: str
    name: Localized
    description: Localized | None = None
    programs: list[ProgramRef]


class FactTypeOut(BaseModel):
    name: str
    type: Literal["integer", "number", "boolean", "string", "date", "list"]
    question: Localized
    asked_of: Literal["resident", "staff"]
    enum: list[str] | None = None
    items: str | None = Field(default=None, description="The type of a list's items")
    pattern: str | None = None
    derived: bool = Field(description="Computed from other facts (``inputs``); never given directly")
    inputs: list[str] = []
    authorities: list[Department] = Field(description="Departments whose reports of this fact are authoritative")
    registry: bool = Field(description="Established by the resident registry")


class VersionOut(VersionSpec):
    version: int
    status: VersionStatus
    origin: Literal["seed", "api"]
    created_at: dt.datetime


class ProgramSummary(BaseModel):
    code: str
    name: Localized
    department: Department
    life_events: list[LifeEvent]
    automatic: bool
    sla_days: int
    overflow_allowed: bool
    case_weight: float
    proactive: bool
    current_version: int | None = Field(description="The version in force today, if any")
    in_force_since: dt.date | None = None


class ProgramDetail(ProgramSummary):
    description: str | None = None
    versions: list[VersionOut]


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facts: dict[str, Any] = Field(default_factory=dict, max_length=100, description="Fact name -> value")
    application_date: dt.date | None = Field(
        default=None, description="Judge by the rules in force then (default: today)"
    )
    life_event: LifeEvent | None = None
    programs: list[str] | None = Field(default=None, max_length=100, description="Only these programs")


class EvaluateResponse(BaseModel):
    application_date: dt.date
    life_event: LifeEvent | None
    programs: list[ProgramDetermination]
    missing: list[MissingFact] = Field(description="Every fact that could still change an outcome, once")


# The platform's JSON (orjson) carries 64-bit integers: a reported value holding a larger one could be neither
# fingerprinted for Idempotency-Key nor carried as ``facts.reported``, so it is refused with the request (422).
INT64 = range(-(2**63), 2**63)


def _carried_as_json(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value in INT64
    if isinstance(value, list):
        return all(_carried_as_json(v) for v in value)
    if isinstance(value, dict):
        return all(_carried_as_json(v) for v in value.values())
    return True


def _integers_within_64_bits(fact: ReportedFact) -> ReportedFact:
    if not _carried_as_json(fact.value):
        # Raised as a ValidationError so that the field named is the fact's value (facts[i].value).
        problem = PydanticCustomError("int64", "must not hold an integer beyond 64 bits")
        raise ValidationError.from_exception_data(
            "ReportedFact", [InitErrorDetails(type=problem, loc=("value",), input=fact.value)]
        )
    return fact


class FactReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resident_id: uuid.UUID
    department: Department | None = Field(
        default=None, description="Required for an administrator; a partner reports for its own department"
    )
    source: str | None = Field(default=None, min_length=1, max_length=100, description="The reporting system")
    report_id: uuid.UUID | None = None
    facts: list[Annotated[ReportedFact, AfterValidator(_integers_within_64_bits)]] = Field(min_length=1, max_length=100)


class FactReportOut(BaseModel):
    report_id: uuid.UUID
    resident_id: uuid.UUID
    department: Department
    source: str
    accepted: int
    reevaluated_applications: int
    new_rounds: int


class ScreeningIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: dt.date | None = Field(default=None, description="Judge by the rules in force then (default: today)")
    programs: list[str] | None = Field(
        default=None, max_length=100, description="Only these programs (default: every proactive program in force)"
    )
    background: bool = Field(
        default=False,
        description="Run it in the background, a page at a time (202; follow it at GET /v1/screenings/{id}), "
        "instead of answering when it is done",
    )


class ScreeningOut(BaseModel):
    screening_id: uuid.UUID
    status: str
    as_of: dt.date
    programs: list[str]
    residents_screened: int
    judgements: int = Field(description="Residents x programs judged")
    evaluations: int = Field(description="Rule evaluations actually run (the rest reused an earlier identical case)")
    eligible_found: int
    already_applied: int
    already_notified: int
    opportunities: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: float | None
    residents_per_second: float | None
    kind: Literal["manual", "requested", "full", "daily", "incremental"] = Field(
        default="manual",
        description="manual: an administrator's call; requested: the same in the background; full: the rules "
        "changed; daily: residents whose dates crossed a boundary; incremental: residents whose facts changed",
    )
    trigger: str | None = Field(default=None, description="What started it")
    residents_total: int | None = Field(default=None, description="Residents it set out to screen, when known")
    progress: float | None = Field(default=None, description="residents_screened / residents_total (0..1)")
    questions: int = Field(default=0, description="Near misses asked their one question")
    error: str | None = None


class ScreeningPage(BaseModel):
    items: list[ScreeningOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class RoundOut(BaseModel):
    round: int
    trigger: str
    evaluated_at: dt.datetime
    determination_id: uuid.UUID


class ApplicationDeterminations(BaseModel):
    application_id: uuid.UUID
    resident_id: uuid.UUID
    status: Literal["open", "withdrawn"]
    life_event: str | None
    application_date: dt.date | None
    round: int
    trigger: str | None
    evaluated_at: dt.datetime | None
    determination_id: uuid.UUID | None
    programs: list[ProgramDetermination]
    rounds: list[RoundOut]


__all__ = ["Outcome"]
