"""Differential tests: near misses told in columns (``vectorised.Judge`` with ``near_misses``, as the automatic
screening runs tell them through ``ProactiveJudge``) against the per-record ``near_misses.near_miss``.

For random populations (hypothesis, derandomized) with values on the catalogue's own limits (those of
``test_vectorised.py``: every whole-number literal ±1, the recognised-income thresholds ±1 won, birth dates a day
either side of each age the rules count ...), residents complete but for a few facts — the shape of a near miss —
and residents with any facts missing, every program's near miss must be the same: none, or the same fact asked with
the same reason. A failure names the smallest resident showing it (every fact removed the disagreement does not
need)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.eligibility import income
from services.eligibility.catalogue import Catalogue
from services.eligibility.facts import FactLayers
from services.eligibility.near_misses import near_miss
from services.eligibility.screening_runs import ProactiveJudge
from services.eligibility.vectorised import plan
from tests.services.eligibility.test_vectorised import (
    CATALOGUE,
    DAYS,
    DIFFERENTIAL,
    LITERALS,
    NOW,
    PROACTIVE,
    THRESHOLDS,
    _resident,
    _value,
)

# Facts a run never asks unprompted (settings.screening_unasked_facts): one of them, so both answers are exercised.
UNASKED = frozenset({"disability_registered"})
Found = list[tuple[str, str, str, str] | None]


def per_record(catalogue: Catalogue, codes: Sequence[str], day: dt.date, facts: dict[str, Any]) -> Found:
    env = catalogue.environment(day, FactLayers(registry=facts), NOW)
    out: Found = []
    for code in codes:
        miss = near_miss(catalogue, env, code, UNASKED)
        out.append(None if miss is None else (code, miss.fact, miss.why["ko"], miss.why["en"]))
    return out


def columnar(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Sequence[dict[str, Any]]
) -> tuple[list[Found], ProactiveJudge]:
    judge = ProactiveJudge(catalogue, codes, day, NOW, UNASKED)
    out = []
    for judgement in judge.judge_many([FactLayers(registry=r) for r in rows]):
        by_code = {m.program.code: (m.program.code, m.fact, m.why["ko"], m.why["en"]) for m in judgement.near_misses}
        out.append([by_code.get(code) for code in codes])
    return out, judge


def disagreements(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Sequence[dict[str, Any]]
) -> list[tuple[int, str, Any, Any]]:
    found = []
    got_rows, _ = columnar(catalogue, codes, day, rows)
    for index, (facts, got) in enumerate(zip(rows, got_rows, strict=True)):
        want = per_record(catalogue, codes, day, facts)
        for code, mine, theirs in zip(codes, got, want, strict=True):
            if mine != theirs:
                found.append((index, code, mine, theirs))
    return found


def assert_same(catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Sequence[dict[str, Any]]) -> None:
    found = disagreements(catalogue, codes, day, rows)
    if not found:
        return
    index, code = found[0][0], found[0][1]
    current = dict(rows[index])
    for name in sorted(current):
        trial = {k: v for k, v in current.items() if k != name}
        if any(d[1] == code for d in disagreements(catalogue, codes, day, [trial])):
            current = trial
    again = [d for d in disagreements(catalogue, codes, day, [current]) if d[1] == code] or [found[0]]
    shown = json.dumps(current, default=str, sort_keys=True, ensure_ascii=False)
    pytest.fail(
        f"on {day}: the near miss of {code} is {again[0][2]!r} in columns but {again[0][3]!r} per record "
        f"({len(found)} disagreements in the population); the smallest resident showing it: {shown}"
    )


def _all_but_a_few(names: Sequence[str], day: dt.date, codes: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A resident with every fact known but up to three of those one program reads (the shape of a near miss)."""
    complete = st.fixed_dictionaries({n: _within_64_bits(n, day) for n in names})
    reads = [sorted(plan(CATALOGUE, [code], day).base) for code in codes]
    # The incomes and what says which of them are needed (income.*_needs), as often as all programs together.
    incomes = sorted({*income.PENSION_INCOME_INPUTS, *income.RECOGNISED_INCOME_INPUTS} & set(names))
    groups = [r for r in reads if r] + [incomes] * len(reads)
    removed = st.sampled_from(groups).flatmap(lambda read: st.lists(st.sampled_from(read), min_size=1, max_size=3))
    return st.tuples(complete, removed).map(lambda t: {k: v for k, v in t[0].items() if k not in t[1]})


def _within_64_bits(name: str, day: dt.date) -> st.SearchStrategy[Any]:
    """A value on the limits, as ``test_vectorised`` draws them, but none so large that the row goes to the per-record
    engine (those are drawn by ``_resident``): the columns must be the ones telling the near miss."""
    if CATALOGUE.facts[name].type == "integer" and name not in ("household_size", "newborns"):
        return st.one_of(st.sampled_from(LITERALS), st.sampled_from(THRESHOLDS), st.integers(-1_000_000, 600_000_000))
    if name in ("household_size", "newborns"):
        return st.integers(-1, 12)
    return _value(name, day)


@st.composite
def populations(draw: st.DrawFn) -> tuple[dt.date, list[str], list[dict[str, Any]]]:
    day = draw(st.sampled_from(DAYS))
    codes = PROACTIVE[day]
    names = sorted(plan(CATALOGUE, codes, day).base)
    near = _all_but_a_few(names, day, codes)
    rows = draw(st.lists(st.one_of(near, near, near, near, _resident(names, day)), min_size=10, max_size=40))
    return day, codes, [{k: v for k, v in r.items() if v is not None} for r in rows]


@settings(DIFFERENTIAL, max_examples=25)
@given(populations())
def test_near_misses_in_columns_are_those_the_per_record_engine_finds(
    case: tuple[dt.date, list[str], list[dict[str, Any]]],
) -> None:
    day, codes, rows = case
    assert_same(CATALOGUE, codes, day, rows)


@st.composite
def sparse_populations(draw: st.DrawFn) -> tuple[dt.date, list[str], list[dict[str, Any]]]:
    """As ``populations``, with some facts missing for every resident (the judge reads those as typed nulls): a
    criterion none of whose facts has a column among them."""
    day, codes, rows = draw(populations())
    names = sorted(plan(CATALOGUE, codes, day).base)
    blank = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=15)))
    return day, codes, [{k: v for k, v in r.items() if k not in blank} for r in rows]


@settings(DIFFERENTIAL, max_examples=10)
@given(sparse_populations())
def test_near_misses_with_facts_missing_for_every_resident_are_those_the_per_record_engine_finds(
    case: tuple[dt.date, list[str], list[dict[str, Any]]],
) -> None:
    day, codes, rows = case
    assert_same(CATALOGUE, codes, day, rows)


def _income_tested() -> tuple[dt.date, str, dict[str, Any]]:
    """A resident known in everything the livelihood benefit reads but their earned income."""
    day = DAYS[1]
    facts = {
        "birth_date": dt.date(1950, 1, 1), "district_code": "11110", "korean_national": True, "household_size": 1,
        "has_spouse": False, "earned_income": 0, "business_income": 0, "public_pension_income": 0,
        "residence_value": 0, "other_property_value": 0, "financial_assets": 0, "vehicle_value": 0, "debts": 0,
    }  # fmt: skip
    return day, "livelihood_benefit", facts


def test_one_missing_income_is_a_near_miss_told_in_columns() -> None:
    """The recognised income waits on the one income missing: asked for in columns (no per-record evaluation), with
    the reason the per-record engine gives; a second missing income makes it no near miss."""
    day, code, facts = _income_tested()
    assert code in PROACTIVE[day]
    missing_one = {k: v for k, v in facts.items() if k != "earned_income"}
    found, judge = columnar(CATALOGUE, PROACTIVE[day], day, [missing_one])
    ours = [m for m in found[0] if m is not None and m[0] == code]
    assert [m[1] for m in ours] == ["earned_income"]
    assert found[0] == per_record(CATALOGUE, PROACTIVE[day], day, missing_one)
    assert judge.near_misses_per_record == 0
    missing_two = {k: v for k, v in missing_one.items() if k != "business_income"}
    found, _ = columnar(CATALOGUE, PROACTIVE[day], day, [missing_two])
    assert all(m is None or m[0] != code for m in found[0])
    assert found[0] == per_record(CATALOGUE, PROACTIVE[day], day, missing_two)


@pytest.mark.parametrize(
    ("dropped", "code", "asked"),
    [
        # rent_support_computed reads both through ``&&``: CEL with stand-ins tells it waits on the tenure alone.
        (("tenure", "monthly_rent"), "housing_benefit", "tenure"),
        # The spouse's income is asked only once there is a spouse (income.household_income_needs).
        (("has_spouse", "spouse_income"), "livelihood_benefit", "has_spouse"),
    ],
)
def test_of_two_missing_facts_the_one_the_rule_waits_on_is_asked(
    dropped: tuple[str, str], code: str, asked: str
) -> None:
    """Two facts missing, one of which only matters given the other: asked for the one, told in columns (a criterion
    absorbing a missing fact is run with CEL once per distinct tuple of its facts' values), as per record."""
    day = DAYS[1]
    codes = PROACTIVE[day]
    names = sorted(plan(CATALOGUE, codes, day).base)
    complete = {n: _typical(n, day) for n in names}
    rows = [{k: v for k, v in complete.items() if k not in dropped}, complete]
    found, judge = columnar(CATALOGUE, codes, day, rows)
    assert found == [per_record(CATALOGUE, codes, day, r) for r in rows]
    assert (code, asked) in [m[:2] for m in found[0] if m is not None]
    assert judge.near_misses_per_record == 0


def _typical(name: str, day: dt.date) -> Any:
    fact = CATALOGUE.facts[name]
    if fact.type == "integer":
        return 1
    if fact.type == "boolean":
        return True
    if fact.type == "string":
        return fact.enum[0] if fact.enum else "11110"
    if fact.type == "date":
        return day - dt.timedelta(days=365 * 40)
    return []
