"""A resident's rights over their data, the parts every service shares (no service's own rules are here):

- the *retention schedule* format: each service declares, in its own ``retention.yaml``, every record type it holds
  about a resident — erased at once on an erasure request, or kept, pseudonymous, for a stated period from a stated
  day, under a stated law (with the act's amendment date; "확인 필요" where the source is not settled);
- the *part of an export* each service serves intake (``GET /v1/residents/{id}/data``): its records about the
  resident, what it withheld and why, what it keeps after an erasure and until when, and its schedule;
- turning a row into plain data for that part.

The rights themselves (개인정보 보호법, 법률 제19234호, 2023-03-14 개정, 2023-09-15 시행 — 제35조의2 from
2025-03-13, 확인 필요): 제35조 열람 (see everything held, within 10 days: 시행령 제41조), 제35조의2 전송요구 (in
a machine-readable form: the export is one JSON document), 제36조 정정·삭제 (erase, unless another law names the
data as to be kept — then it is kept and the resident told why), 제21조 파기 (destroy once the period ends; what is
kept is kept apart from the rest, 제21조 제3항).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import inspect as sa_inspect

from shared.auth import Principal, Role
from shared.events import KeptRecords, Localized
from shared.yamlfile import load_yaml

UNSETTLED = "확인 필요"


class Disposition(StrEnum):
    ERASE = "erase"  # destroyed at once on an erasure request
    KEEP = "keep"  # kept, pseudonymous (the resident id only), until the period ends, then destroyed
    ANONYMISE = "anonymise"  # the link to the resident is cut (ids replaced); what is left is no personal data


class CountedFrom(StrEnum):
    """The day a kept record's period starts."""

    DECISION = "decision"  # the application's last decision (a decision file)
    RECORD = "record"  # the record's own date (an access-log entry)
    ERASURE = "erasure"  # the day of the erasure request
    COMPLETION = "completion"  # the day every service answered the erasure request


class RetentionRule(BaseModel):
    """One record type a service holds about a resident, and what becomes of it when the resident asks for erasure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record_type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    tables: list[str] = Field(min_length=1, description="The service's tables that hold it")
    disposition: Disposition
    description: Localized
    # How long a kept record stays, from which day; ``from_next_year``: from 1 January of the following year, as
    # public records count their periods (공공기록물 관리에 관한 법률 시행령 제26조 제2항 — 확인 필요).
    years: int = Field(default=0, ge=0, le=100)
    days: int = Field(default=0, ge=0, le=36500)
    counted_from: CountedFrom | None = None
    from_next_year: bool = False
    reason: Localized | None = None
    legal_basis: str = Field(min_length=1, description="The statute or notice, its article, and the date relied on")

    @model_validator(mode="after")
    def _kept_says_how_long_and_why(self) -> RetentionRule:
        incomplete = not (self.years or self.days) or self.counted_from is None or self.reason is None
        if self.disposition is Disposition.KEEP and incomplete:
            raise ValueError(f"{self.record_type}: a kept record type needs a period, its start and a reason")
        return self

    @property
    def unsettled(self) -> bool:
        return UNSETTLED in self.legal_basis

    def destroy_on(self, start: dt.date) -> dt.date:
        """The day a record of this type whose period starts on ``start`` is destroyed."""
        if self.from_next_year:
            start = dt.date(start.year + 1, 1, 1)
        return _add_years(start, self.years) + dt.timedelta(days=self.days)

    def kept(self, count: int, start: dt.date) -> KeptRecords:
        """``count`` records of this type whose period starts on ``start``: kept, why, and until when."""
        return self._kept(count, self.destroy_on(start))

    def kept_each(self, starts: Iterable[dt.date]) -> list[KeptRecords]:
        """Records of this type whose periods start on these days: one line per day they are destroyed."""
        by_day: dict[dt.date, int] = {}
        for start in starts:
            day = self.destroy_on(start)
            by_day[day] = by_day.get(day, 0) + 1
        return [self._kept(count, day) for day, count in sorted(by_day.items())]

    def _kept(self, count: int, destroy_on: dt.date) -> KeptRecords:
        assert self.reason is not None  # a kept type has one (checked on load)
        return KeptRecords(
            record_type=self.record_type,
            count=count,
            reason=self.reason,
            legal_basis=self.legal_basis,
            destroy_on=destroy_on,
        )


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


class RetentionSchedule(BaseModel):
    """A service's retention table (``services/<service>/retention.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    rules: list[RetentionRule]

    @model_validator(mode="after")
    def _one_rule_per_type(self) -> RetentionSchedule:
        names = [r.record_type for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.service}: a record type is listed twice")
        return self

    @classmethod
    def load(cls, path: Path) -> RetentionSchedule:
        return cls.model_validate(load_yaml(path))

    def rule(self, record_type: str) -> RetentionRule:
        for rule in self.rules:
            if rule.record_type == record_type:
                return rule
        raise KeyError(f"{self.service} lists no record type {record_type!r}")

    @property
    def tables(self) -> set[str]:
        return {t for r in self.rules for t in r.tables}


# ---------------------------------------------------------------------------------------------- a service's part


class Withheld(BaseModel):
    """Records the service holds but does not show, and why (개인정보 보호법 제35조 제4항)."""

    record_type: str
    count: int = Field(ge=0)
    reason: Localized
    legal_basis: str


class ErasureState(BaseModel):
    """The resident's data was erased here: when, and what is kept (pseudonymous) until when."""

    erasure_id: uuid.UUID
    requested_at: dt.datetime
    erased_at: dt.datetime | None
    erased: dict[str, int] = {}
    kept: list[KeptRecords] = []


class ResidentDataPart(BaseModel):
    """What one service holds about one resident: its part of the resident's export."""

    service: str
    resident_id: uuid.UUID
    generated_at: dt.datetime
    records: dict[str, list[dict[str, Any]]] = Field(
        description="Record type -> the records (every column), as the service holds them"
    )
    withheld: list[Withheld] = []
    erasure: ErasureState | None = None
    retention: list[RetentionRule] = Field(description="The service's retention table: what is kept, how long, why")


def row_data(row: Any, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Every column of an ORM row (by attribute name), for an export; relationships are left out."""
    skipped = set(exclude)
    return {attr.key: getattr(row, attr.key) for attr in sa_inspect(row).mapper.column_attrs if attr.key not in skipped}


def rows_data(rows: Iterable[Any], *, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    skipped = tuple(exclude)
    return [row_data(row, exclude=skipped) for row in rows]


def mapping_data(rows: Iterable[Mapping[str, Any]], *, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Core-table rows (the platform's audit log) as plain data."""
    skipped = set(exclude)
    return [{k: v for k, v in row.items() if k not in skipped} for row in rows]


def may_read_part(principal: Principal, resident_id: uuid.UUID) -> bool:
    """Who may read a service's whole part about a resident: the resident themselves, and intake gathering their
    export with its own service token (intake checked there that its caller — the resident, a representative in the
    ``data_rights`` scope, counter staff under the resident's authority — may ask). A representative goes through
    intake: only intake knows who represents whom in which scope, and no other service keeps a copy of that to
    answer it (data minimisation). Anyone else finds no resident (404)."""
    if principal.role is Role.RESIDENT:
        return principal.resident_id == resident_id
    return principal.role is Role.SERVICE and principal.service == INTAKE


INTAKE = "intake"
PURPOSE_EXPORT = "data export (개인정보 보호법 제35조, 제35조의2)"
