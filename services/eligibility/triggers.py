"""What makes proactive screening run by itself, and for whom.

- **Facts changed**: a registry update (``resident.updated``), department facts (``facts.reported`` or
  ``POST /v1/facts``), a consent newly granted (``proactive_screening``, or a department's data) and an answer to a
  screening question each *queue* the resident (:func:`queue`); the next incremental run screens the queued
  residents only.
- **Dates crossed a boundary**: screening records, per resident, the next day on which their dates move a fact the
  proactive rules read (:class:`ReviewCalendar`); the daily run screens the residents whose day has come.
- **The rules changed**: a new catalogue revision (a version published, a program added) or a change in what is in
  force today (a version, a median-income year or a district-tier table taking effect) makes a full run
  (:func:`rules_in_force`).

The scheduler (``scheduler.py``) decides which run is due; the runs themselves are ``screening_runs.py``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from services.eligibility.catalogue import Catalogue
from services.eligibility.facts import DERIVATIONS
from services.eligibility.repository import Repository

if TYPE_CHECKING:
    # Imported where the columns are made (next_reviews): the consumers queue residents through this module, and a
    # process that never screens does without Polars (about 37 MB of memory once imported).
    import polars as pl

# Derived facts counted in days: they change every day, so a resident for whom one is known (and recent) is reviewed
# the next day. The proactive rules read day counts only close to the event they count from (a newborn's first 60
# days); past this horizon a resident is reviewed by their month boundaries again.
DAY_COUNTS = frozenset({"child_age_days", "days_since_move_in", "days_since_death", "days_since_business_start"})
DAY_COUNT_HORIZON = dt.timedelta(days=400)
# Dates a period is counted from the next day of (민법 제157조): months after a leave ended (facts._months_after).
FROM_NEXT_DAY = frozenset(DERIVATIONS["months_after_maternity_leave"].inputs)
_DAY = dt.timedelta(days=1)


async def queue(repo: Repository, resident_id: uuid.UUID, reason: str, now: dt.datetime) -> None:
    """Screen the resident again at the next incremental run (in the caller's transaction)."""
    await repo.queue_for_screening(resident_id, reason, now)


def consent_reasons(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """What a consent change means for screening: newly granted proactive screening, or a department's data newly
    allowed or withdrawn for a resident who is screened (facts the rules read changed)."""
    before = before or {}
    reasons = []
    if after.get("proactive_screening") and not before.get("proactive_screening"):
        reasons.append("consent_granted")
    elif after.get("proactive_screening"):
        purposes = {p for p in (*before, *after) if p.startswith("department_data:")}
        if any(bool(before.get(p)) != bool(after.get(p)) for p in purposes):
            reasons.append("department_consent_changed")
    return reasons


def first_of_next_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def next_month_change(start: dt.date, today: dt.date) -> dt.date:
    """The first day after ``today`` on which the completed months from ``start`` grow (``facts.months_between``:
    on the same day of a later month, or the first of the month after when that month has no such day); ``start``
    itself when it is still ahead (a date after the day judged makes its derivations fail until then)."""
    if start > today:
        return start
    months = (today.year - start.year) * 12 + (today.month - start.month) - (1 if today.day < start.day else 0)
    index = start.year * 12 + (start.month - 1) + months + 1
    year, month = divmod(index, 12)
    month += 1
    if start.day <= calendar.monthrange(year, month)[1]:
        return dt.date(year, month, start.day)
    return first_of_next_month(dt.date(year, month, 1))


class ReviewCalendar:
    """The day a screened resident should next be screened for their dates alone, on one screening date.

    Every fact the rules read that depends on the day is a function of the resident's dates: ages in years and
    completed months change on the day of the month of each date (a birthday, a child's monthly birthday; the day
    after it for a period counted from the next day, the months after a leave ended); ages in calendar months, the
    median-income year and the district tiers change on the first of a month; day counts every day. So the next
    review is the earliest of: the next monthly change of each date the resident has, the first of next month, and
    — while a day count the proactive rules read is known and recent — tomorrow. No outcome can change before it."""

    def __init__(self, catalogue: Catalogue, as_of: dt.date, read: frozenset[str] | None = None) -> None:
        self.as_of = as_of
        types = catalogue.facts.types.values()
        self.date_facts = tuple(
            t.name for t in types if not t.derived and (t.type == "date" or (t.type == "list" and t.items == "date"))
        )
        counted = DAY_COUNTS if read is None else DAY_COUNTS & read
        self.daily_inputs = frozenset(i for name in counted for i in DERIVATIONS[name].inputs)
        self.month_end = first_of_next_month(as_of)

    def next_review(self, values: Mapping[str, Any]) -> dt.date:
        today = self.as_of
        best = self.month_end
        for name in self.date_facts:
            value = values.get(name)
            if value is None:
                continue
            for day in value if isinstance(value, list | tuple) else (value,):
                if not isinstance(day, dt.date):
                    continue
                if name in self.daily_inputs and today - day <= DAY_COUNT_HORIZON:
                    return today + _DAY
                start = day + _DAY if name in FROM_NEXT_DAY else day
                best = min(best, next_month_change(start, today))
        return best

    def next_reviews(self, table: pl.DataFrame) -> pl.Series:
        """:meth:`next_review` of every row of ``table`` (base facts, a column each; ``fact_table.registry_table``),
        in columns: the same day for each (``test_screening_runs.py`` holds them to each other)."""
        import polars as pl

        today = self.as_of
        candidates: list[pl.Expr] = [pl.lit(self.month_end)]
        daily: list[pl.Expr] = []
        for name in self.date_facts:
            if name not in table.columns:
                continue
            listed = isinstance(table.schema[name], pl.List)
            day = pl.element() if listed else pl.col(name)
            start = day + pl.duration(days=1) if name in FROM_NEXT_DAY else day
            change = _next_month_change(start, today)
            candidates.append(pl.col(name).list.eval(change).list.min() if listed else change)
            if name in self.daily_inputs:
                recent = (pl.lit(today) - day).dt.total_days() <= DAY_COUNT_HORIZON.days
                daily.append(pl.col(name).list.eval(recent).list.any() if listed else recent)
        best = pl.min_horizontal(candidates)
        if daily:
            tomorrow = pl.any_horizontal([d.fill_null(False) for d in daily])
            best = pl.when(tomorrow).then(pl.lit(today + _DAY)).otherwise(best)
        return table.select(best.alias("review_on")).to_series()


def _next_month_change(start: pl.Expr, today: dt.date) -> pl.Expr:
    """:func:`next_month_change` in columns (``start`` a date column; null stays null)."""
    import polars as pl

    year, month, day = start.dt.year().cast(pl.Int64), start.dt.month().cast(pl.Int64), start.dt.day().cast(pl.Int64)
    months = (today.year - year) * 12 + (today.month - month) - pl.when(day > today.day).then(1).otherwise(0)
    index = year * 12 + (month - 1) + months + 1
    first = pl.date(index // 12, index % 12 + 1, 1)
    length = first.dt.month_end().dt.day().cast(pl.Int64)
    same_day = pl.date(index // 12, index % 12 + 1, pl.min_horizontal(day, length))
    return (
        pl.when(start > pl.lit(today))
        .then(start)
        .when(day <= length)
        .then(same_day)
        .otherwise(first.dt.offset_by("1mo"))
    )


def rules_in_force(catalogue: Catalogue, day: dt.date) -> str:
    """A fingerprint of what the proactive rules judge by on ``day``: each proactive program's version in force, the
    median-income year and the district-tier table. It changes when something takes effect, not only when the
    catalogue is edited, so a version published for a later date gets its full run on that date."""
    parts = sorted(
        f"{code}:{version.version}"
        for code, program in catalogue.programs.items()
        if program.attributes.proactive and (version := program.version_on(day)) is not None
    )
    median = catalogue.medians.in_force(day)
    tiers = catalogue.districts.in_force(day)
    parts.append(f"median:{median.effective_from.isoformat() if median else '-'}")
    parts.append(f"tiers:{tiers.effective_from.isoformat() if tiers else '-'}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
