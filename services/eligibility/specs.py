"""The shape of a program and its rule versions: one set of models for the YAML catalogue and for ``PUT``."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Department

CODE_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"
ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
EXPRESSION_MAX = 2000


class LifeEvent(StrEnum):
    BIRTH = "birth"
    MOVING_IN = "moving_in"
    JOB_LOSS = "job_loss"
    DEATH_IN_FAMILY = "death_in_family"
    TURNING_65 = "turning_65"
    STARTING_BUSINESS = "starting_business"


AmountPeriod = Literal["once", "monthly", "yearly", "total"]
# Where a rule version stands on a day (see catalogue.version_status).
VersionStatus = Literal["in_force", "scheduled", "replaced", "ended", "superseded"]


class Text(BaseModel):
    """A text in Korean and English."""

    model_config = ConfigDict(extra="forbid")

    ko: str = Field(min_length=1, max_length=300)
    en: str = Field(min_length=1, max_length=300)


class CriterionSpec(BaseModel):
    """A node of a rule: a leaf (one CEL expression, or another program's eligibility) or a group of nodes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    label: Text | None = None
    legal_reference: str | None = Field(default=None, max_length=500)
    expr: str | None = Field(default=None, min_length=1, max_length=EXPRESSION_MAX, description="One CEL expression")
    program: str | None = Field(
        default=None, pattern=CODE_PATTERN, description="Passed when that program's outcome is eligible"
    )
    all_: list[CriterionSpec] | None = Field(default=None, alias="all", min_length=1, max_length=50)
    any_: list[CriterionSpec] | None = Field(default=None, alias="any", min_length=1, max_length=50)
    not_: CriterionSpec | None = Field(default=None, alias="not")


class AmountSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expr: str = Field(min_length=1, max_length=EXPRESSION_MAX, description="CEL giving a whole number of KRW")
    period: AmountPeriod
    legal_reference: str | None = Field(default=None, max_length=500)


class VersionSpec(BaseModel):
    """One version of a program's rule, in force from ``effective_from`` (until ``effective_to`` or the next)."""

    model_config = ConfigDict(extra="forbid")

    effective_from: dt.date
    effective_to: dt.date | None = None
    source: str = Field(min_length=1, max_length=1000, description="The legal source of this version")
    definitions: dict[str, str] = Field(
        default_factory=dict,
        max_length=30,
        description="Named CEL values the criteria may read (shown in the explanation)",
    )
    relevant_when: str | None = Field(
        default=None,
        max_length=EXPRESSION_MAX,
        description="CEL: also evaluate this program for applications of other life events when true",
    )
    rule: CriterionSpec
    amount: AmountSpec | None = None


class ProgramAttributes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    department: Department
    life_events: list[LifeEvent] = Field(default_factory=list, max_length=6)
    automatic: bool = Field(description="Granted without a caseworker when eligible")
    sla_days: int = Field(ge=1, le=365, description="Working days to decide")
    overflow_allowed: bool = False
    case_weight: float = Field(default=1.0, gt=0, le=100, description="How heavy a review is, for routing's load")
    proactive: bool = Field(default=True, description="Proactive screening may suggest it")
    description: str | None = Field(default=None, max_length=2000)


class ProgramVersionPut(ProgramAttributes):
    """``PUT /v1/programs/{code}``: the program's attributes and one new rule version."""

    version: VersionSpec


class ProgramEntry(ProgramAttributes):
    """A program in the YAML catalogue, with its whole version history (oldest first)."""

    code: str = Field(pattern=CODE_PATTERN)
    versions: list[VersionSpec] = Field(min_length=1)


def version_document(spec: VersionSpec) -> dict[str, Any]:
    """The canonical JSON of a version (what is stored and hashed)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
