"""Differential tests: the vectorised path (fact_table + rules/vectorise + vectorised) against the per-record engine.

For random populations (hypothesis) with values on the catalogue's own limits (every whole-number literal of every
rule ±1, the recognised-income thresholds of each household size ±1 won, birth dates a day either side of each age
and deadline the rules count, month ends and 29 February), every program's outcome, every criterion's status and
every amount must be the same; a failure names the smallest resident that shows it (the population's first
disagreeing resident, with every fact removed that the disagreement does not need). The registry table is held to
``registry_facts`` + ``resolve`` the same way. Bounded: a few populations per test, derandomized."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.eligibility import vectorised
from services.eligibility.catalogue import Catalogue, load_files
from services.eligibility.fact_table import FALLBACK, base_schema, months_before, registry_table
from services.eligibility.facts import FactLayers, ReportedValue, registry_facts, resolve
from services.eligibility.rules.lint import tokenize
from services.eligibility.specs import CriterionSpec, VersionSpec
from services.eligibility.vectorised import OUTCOMES, Judge, amount_column, plan
from shared.events import CriterionStatus

FILES = load_files()
CATALOGUE = FILES.catalogue()
FACTS = CATALOGUE.facts
NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
# Days on which different versions are in force (2024, mid-2025, 2026).
DAYS = (dt.date(2024, 3, 31), dt.date(2025, 6, 1), dt.date(2026, 2, 28))

DIFFERENTIAL = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _literals() -> list[int]:
    """Every whole number a rule of the catalogue names, with its neighbours."""
    found: set[int] = {0, 1, 2}
    for program in FILES.programs:
        for version in program.versions:
            sources = [*version.definitions.values()]
            if version.amount is not None:
                sources.append(version.amount.expr)
            stack = [version.rule]
            while stack:
                node = stack.pop()
                if node.expr:
                    sources.append(node.expr)
                stack += [*(node.all_ or []), *(node.any_ or []), *([node.not_] if node.not_ else [])]
            for source in sources:
                for kind, text in tokenize(source) or []:
                    if kind == "num" and text.isdigit():
                        found.update({int(text) - 1, int(text), int(text) + 1})
    return sorted(found)


LITERALS = _literals()
THRESHOLDS = sorted(
    {
        CATALOGUE.medians.amount(day, size) * percent // 100 + delta
        for day in DAYS
        if CATALOGUE.medians.in_force(day) is not None  # none in 2024: programs reading it need review then
        for size in range(1, 8)
        for percent in (30, 32, 40, 48, 50, 60, 63, 75, 100, 150)
        for delta in (-1, 0, 1)
    }
)
AGES_IN_MONTHS = sorted(
    {m for years in (6, 8, 9, 15, 18, 19, 34, 35, 60, 64, 65, 69, 70, 75) for m in (years * 12,)}
    | {1, 2, 12, 24, 65 * 12 - 1, 779, 780, 96, 107, 108}
)


def _dates(day: dt.date) -> st.SearchStrategy[dt.date]:
    edges = [months_before(day, m) + dt.timedelta(days=d) for m in AGES_IN_MONTHS for d in (-1, 0, 1)]
    edges += [dt.date(2024, 2, 29), dt.date(2023, 1, 31), dt.date(2022, 1, 1), dt.date(2024, 1, 1), day,
              day + dt.timedelta(days=1), day - dt.timedelta(days=60), day - dt.timedelta(days=61)]  # fmt: skip
    return st.one_of(st.sampled_from(edges), st.dates(dt.date(1920, 1, 1), dt.date(2027, 12, 31)))


def _integers(name: str) -> st.SearchStrategy[int]:
    if name in ("household_size", "newborns", "birth_order", "employee_count", "parental_leave_months"):
        return st.one_of(st.integers(-1, 12), st.sampled_from([0, 1, 9, 10, 1500]))
    return st.one_of(
        st.sampled_from(LITERALS),
        st.sampled_from(THRESHOLDS),
        st.integers(-1_000_000, 600_000_000),
        st.sampled_from([-(10**15), 10**15, 10**14 + 1]),
    )


def _value(name: str, day: dt.date) -> st.SearchStrategy[Any]:
    fact = FACTS[name]
    if fact.type == "integer":
        return _integers(name)
    if fact.type == "boolean":
        return st.booleans()
    if fact.type == "string":
        if fact.enum:
            return st.sampled_from(fact.enum)
        if name == "district_code":
            # Seoul, Gyeonggi, Busan, a county, Changwon, a depopulation area of each tier, one not established.
            return st.sampled_from(["11110", "11440", "41111", "26110", "47720", "48121", "52710", "51770", "43745",
                                    "46910", "47900", "99999"])  # fmt: skip
        return st.text(min_size=1, max_size=5)
    if fact.type == "date":
        return _dates(day)
    if fact.type == "list":
        return st.lists(_dates(day), max_size=4)
    raise AssertionError(name)


def _resident(names: Sequence[str], day: dt.date) -> st.SearchStrategy[dict[str, Any]]:
    """Each fact known or missing (about one in six missing), drawn from the limits or at random."""
    return st.fixed_dictionaries({n: st.one_of(st.none(), _value(n, day), _value(n, day), _value(n, day),
                                               _value(n, day), _value(n, day)) for n in names})  # fmt: skip


def per_record(catalogue: Catalogue, codes: Sequence[str], day: dt.date, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The per-record engine's derived facts (``derived:<name>``, None when missing or failed), outcomes, amounts
    and criteria statuses, as the columns name them."""
    known = {k: v for k, v in facts.items() if v is not None}
    env = catalogue.environment(day, FactLayers(registry=known), NOW)
    out: dict[str, Any] = {}
    for name in plan(catalogue, codes, day).facts:
        if catalogue.facts[name].derived and name != "application_date":
            out[f"derived:{name}"] = env.values.get(name)
    statuses = {CriterionStatus.PASSED: True, CriterionStatus.FAILED: False, CriterionStatus.UNKNOWN: None}
    for result in catalogue.evaluate(env, codes):
        code = result.program.code
        out[code] = result.outcome.outcome
        out[amount_column(code)] = result.outcome.amount
        for criterion in result.outcome.criteria:
            out[f"{code}.{criterion['id']}"] = statuses[criterion["status"]]
    return out


def columnar(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    p = plan(catalogue, codes, day)
    table = pl.DataFrame([{n: r.get(n) for n in p.base} for r in rows], schema=p.base, orient="row")
    judge = Judge(catalogue, p, table)
    judged = judge.run()
    derived = [n for n in p.facts if catalogue.facts[n].derived and n != "application_date"]
    values = judge.frame.select(*derived, FALLBACK).iter_rows(named=True)
    out = []
    for row, facts in zip(judged.iter_rows(named=True), values, strict=True):
        row = dict(row)
        # A row beyond 64-bit comfort is judged per record: its derived columns are not used, so not compared.
        row[FALLBACK] = facts.pop(FALLBACK)
        row.update({f"derived:{k}": v for k, v in facts.items()})
        for code in p.order:
            row[code] = OUTCOMES[row[code]]
        out.append(row)
    return out


Rows = Sequence[Mapping[str, Any]]
Columnar = Callable[[Catalogue, Sequence[str], dt.date, Rows], list[dict[str, Any]]]


def disagreements(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Rows, judged: Columnar = columnar
) -> list[tuple[int, str, Any, Any]]:
    found = []
    for index, (facts, got) in enumerate(zip(rows, judged(catalogue, codes, day, rows), strict=True)):
        want = per_record(catalogue, codes, day, facts)
        for key, value in want.items():
            if got.get(FALLBACK) and key.startswith("derived:"):
                continue
            if got.get(key, "<no column>") != value:
                found.append((index, key, got.get(key, "<no column>"), value))
    return found


def smallest(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, facts: Mapping[str, Any], judged: Columnar
) -> dict[str, Any]:
    """The resident with every fact removed (one at a time) that the disagreement does not need."""
    current = {k: v for k, v in facts.items() if v is not None}
    for name in sorted(current):
        trial = {k: v for k, v in current.items() if k != name}
        if disagreements(catalogue, codes, day, [trial], judged):
            current = trial
    return current


def assert_same(
    catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Rows, judged: Columnar = columnar
) -> None:
    found = disagreements(catalogue, codes, day, rows, judged)
    if found:
        index = found[0][0]
        resident = smallest(catalogue, codes, day, rows[index], judged)
        shown = json.dumps(resident, default=str, sort_keys=True, ensure_ascii=False)
        again = disagreements(catalogue, codes, day, [resident], judged)
        detail = again[0] if again else found[0]
        pytest.fail(
            f"on {day}: {detail[1]} is {detail[2]!r} vectorised but {detail[3]!r} per record "
            f"({len(found)} disagreements in the population); the smallest resident showing it: {shown}"
        )


PROACTIVE = {day: [c for c, p in CATALOGUE.programs.items() if p.attributes.proactive and p.version_on(day)]
             for day in DAYS}  # fmt: skip
EVERY = {day: CATALOGUE.in_force(day) for day in DAYS}


@st.composite
def populations(
    draw: st.DrawFn, codes_of: Mapping[dt.date, list[str]]
) -> tuple[dt.date, list[str], list[dict[str, Any]]]:
    day = draw(st.sampled_from(DAYS))
    codes = codes_of[day]
    names = sorted(plan(CATALOGUE, codes, day).base)
    rows = draw(st.lists(_resident(names, day), min_size=5, max_size=40))
    return day, codes, rows


@DIFFERENTIAL
@given(populations(PROACTIVE))
def test_every_proactive_program_judges_a_population_as_the_per_record_engine(
    case: tuple[dt.date, list[str], list[dict[str, Any]]],
) -> None:
    day, codes, rows = case
    assert_same(CATALOGUE, codes, day, rows)


@st.composite
def sparse_populations(
    draw: st.DrawFn, codes_of: Mapping[dt.date, list[str]]
) -> tuple[dt.date, list[str], list[dict[str, Any]]]:
    """Populations in which about half the facts are missing for every resident, as a registry page's department
    facts often are: the judge reads such a fact as a typed null rather than a column."""
    day, codes, rows = draw(populations(codes_of))
    blank = {n for n in sorted(rows[0]) if draw(st.booleans())}
    return day, codes, [{k: (None if k in blank else v) for k, v in row.items()} for row in rows]


@settings(DIFFERENTIAL, max_examples=4)
@given(sparse_populations(PROACTIVE))
def test_facts_missing_for_every_resident_judge_as_the_per_record_engine(
    case: tuple[dt.date, list[str], list[dict[str, Any]]],
) -> None:
    day, codes, rows = case
    assert_same(CATALOGUE, codes, day, rows)


@settings(DIFFERENTIAL, max_examples=3)
@given(populations(EVERY))
def test_every_program_in_force_judges_a_population_as_the_per_record_engine(
    case: tuple[dt.date, list[str], list[dict[str, Any]]],
) -> None:
    day, codes, rows = case
    assert_same(CATALOGUE, codes, day, rows)


def test_a_disagreement_names_the_smallest_resident_that_shows_it() -> None:
    """The report a failure gives, seen on a deliberately wrong columnar result: a resident whose age alone decides
    the senior transport card is reported with the facts that decision needs, not the noise around them."""
    day = DAYS[1]
    codes = ["senior_transport_card"]
    resident = {"birth_date": dt.date(1950, 1, 1), "district_code": "11110", "korean_national": True,
                "monthly_rent": 123, "tenure": "owner"}  # fmt: skip

    def wrong(catalogue: Catalogue, codes: Sequence[str], day: dt.date, rows: Rows) -> list[dict[str, Any]]:
        out = columnar(catalogue, codes, day, rows)
        for row, facts in zip(out, rows, strict=True):
            if facts.get("birth_date") is not None:
                row["senior_transport_card"] = "wrong"
        return out

    with pytest.raises(pytest.fail.Exception) as failure:
        assert_same(CATALOGUE, codes, day, [resident], wrong)
    message = str(failure.value)
    assert "senior_transport_card is 'wrong' vectorised" in message
    assert '"birth_date": "1950-01-01"' in message
    assert "monthly_rent" not in message
    assert "tenure" not in message


def test_ages_and_periods_are_counted_as_the_per_record_engine_counts_them() -> None:
    """Every birth date over four years (month ends and 29 February among them) against days that end months and
    leap years: months completed, and the last birth date of someone N months old."""
    from services.eligibility import facts as per_record_facts
    from services.eligibility.fact_table import months_between

    born = [dt.date(2020, 1, 1) + dt.timedelta(days=d) for d in range(4 * 366)]
    for day in (dt.date(2024, 2, 29), dt.date(2024, 3, 31), dt.date(2025, 2, 28), dt.date(2023, 12, 31), DAYS[1]):
        frame = pl.DataFrame({"born": born}).select(months_between(pl.col("born"), day).alias("months"))
        assert frame.get_column("months").to_list() == [per_record_facts.months_between(b, day) for b in born]
        for months in range(0, 60):
            last = months_before(day, months)
            assert per_record_facts.months_between(last, day) >= months
            assert per_record_facts.months_between(last + dt.timedelta(days=1), day) < months


def test_the_smaller_and_the_greater_of_two_incomes_ignore_a_missing_one_as_polars_does() -> None:
    """``fact_table._least`` and ``_greatest`` (the recognised incomes' deductions and caps) against Polars' own
    ``min_horizontal`` and ``max_horizontal``, missing values on either side and both included."""
    from services.eligibility.fact_table import _greatest, _least

    values = [None, -(10**15), -1, 0, 1, 5_000_000, 10**15]
    frame = pl.DataFrame({"a": [a for a in values for _ in values], "b": [b for _ in values for b in values]},
                         schema={"a": pl.Int64, "b": pl.Int64})  # fmt: skip
    a, b = pl.col("a"), pl.col("b")
    got = frame.select(_least(a, b).alias("least"), _greatest(a, b).alias("greatest"))
    want = frame.select(pl.min_horizontal(a, b).alias("least"), pl.max_horizontal(a, b).alias("greatest"))
    assert got.to_dicts() == want.to_dicts()
    literal = pl.lit(5_000_000, dtype=pl.Int64)
    assert (
        frame.select(_least(a, literal)).to_series().to_list()
        == frame.select(pl.min_horizontal(a, literal)).to_series().to_list()
    )


def test_rows_at_risk_of_a_cel_error_are_judged_per_record() -> None:
    """An income beyond 64-bit arithmetic's comfort, and a household of 1,500: the per-record engine judges those rows
    (whatever it makes of them), the columns the rest."""
    day = DAYS[1]
    codes = PROACTIVE[day]
    p = plan(CATALOGUE, codes, day)
    rows = [
        {"earned_income": 10**15, "household_size": 2, "birth_date": dt.date(1950, 1, 1)},
        {"household_size": 1500, "birth_date": dt.date(1950, 1, 1)},
        {"household_size": 2, "birth_date": dt.date(1990, 1, 1)},
    ]
    table = pl.DataFrame([{n: r.get(n) for n in p.base} for r in rows], schema=p.base, orient="row")
    judge = Judge(CATALOGUE, p, table)
    flagged = judge.frame.get_column("__per_record").to_list()
    assert flagged == [True, True, False]
    assert_same(CATALOGUE, codes, day, rows)


def test_facts_looked_up_per_distinct_value_are_the_per_record_engines() -> None:
    """The district's tier, its regions' deductions and the median income of a household's size are computed once per
    distinct value and gathered by each row's position among them: every district kind (established or not, none)
    against every household size (beyond the columns' limit and none too), with every income and asset known so that
    the recognised incomes are computed, on each day — the same derived facts, outcomes and amounts as per record."""
    districts = ["11110", "41111", "26110", "47720", "48121", "52710", "99999", None]
    sizes = [1, 2, 3, 4, 5, 6, 7, 1500, None]
    incomes = {name: 300_000 for name in ("earned_income", "business_income", "public_pension_income",
                                          "spouse_income", "other_members_income", "residence_value",
                                          "other_property_value", "financial_assets", "vehicle_value", "debts",
                                          "couple_property_value", "couple_financial_assets",
                                          "couple_vehicle_value", "couple_debts")}  # fmt: skip
    rows = [
        {**incomes, "district_code": district, "household_size": size, "has_spouse": size is not None and size > 1,
         "birth_date": dt.date(1958, 5, 1), "tenure": "monthly_rent", "monthly_rent": 300_000}
        for district in districts
        for size in sizes
    ]  # fmt: skip
    for day in DAYS:
        assert_same(CATALOGUE, PROACTIVE[day], day, rows)


def _with_rule(code: str, criteria: list[dict[str, Any]], definitions: dict[str, str], amount: str) -> Catalogue:
    """The catalogue with ``code``'s latest version judged by ``criteria`` (all of them), ``definitions`` and
    ``amount`` instead of its own."""
    entry = next(p for p in FILES.programs if p.code == code)
    version = entry.versions[-1]
    rule = {"all": [{"label": {"ko": c["id"], "en": c["id"]}, **c} for c in criteria]}
    changed_version = VersionSpec.model_validate(
        {**version.model_dump(by_alias=True), "rule": rule, "definitions": definitions,
         "amount": {"expr": amount, "period": "monthly", "legal_reference": "test"}}
    )  # fmt: skip
    files = load_files()
    files.programs = [
        entry.model_copy(update={"versions": [changed_version]}) if p.code == code else p for p in files.programs
    ]
    return files.catalogue()


# Division and remainder with dividends of either sign and divisors that are positive on every row or not (CEL
# truncates towards zero; the columns take a shorter way where the population's bounds allow), through definitions
# and conditionals, with text tests beside them (one absorbing a missing district code) and lists short (tested as
# equalities) and long (looked up).
ARITHMETIC = _with_rule(
    "senior_transport_card",
    [
        {"id": "by_constant", "expr": "business_income / 7 >= -3 && earned_income / 100 != 5"},
        {"id": "shifted", "expr": "(earned_income - 500) / 3 != -1"},
        {"id": "by_column", "expr": "business_income / household_size > -2"},
        {"id": "remainders", "expr": "earned_income % 7 != 3 && business_income % household_size != -1"},
        {"id": "grade_scaled", "expr": "grade * 10 / 3 >= 3"},
        {"id": "listed_or_anyway", "expr": "district_code in ['11110', '47720'] || true"},
        {"id": "prefix", "expr": "district_code.startsWith('4') ? business_income > 0 : grade == 1"},
        {"id": "short_lists", "expr": "household_size in [1, 3, 5] || business_income in [7, 0]"},
        {"id": "long_list", "expr": "district_code in ['11110', '11140', '11170', '11440', '26110', '41111', "
                                    "'47720', '48121', '52710']"},
    ],
    {"grade": "district_code.startsWith('11') ? 1 : (district_code.startsWith('4') ? 2 : 3)",
     "quarter": "business_income > 0 ? business_income / 4 : business_income / 3"},
    "grade * 1000 + quarter",
)  # fmt: skip
_DISTRICTS = ["11110", "11440", "41111", "47720", "26110", "99999", None]


@pytest.mark.parametrize(
    ("incomes", "sizes"),
    [
        ([0, 1, 6, 7, 500, 503, 999, 1000, 123_456], [1, 2, 3, 7]),  # non-negative dividends, divisors positive
        ([-1_000_001, -22, -21, -7, -6, -1, 0, 1, 499, 497, 7, 6], [1, 2, 3, 7]),  # both signs
        ([-22, -7, -1, 0, 1, 7, 22], [-3, -1, 0, 1, 3, None]),  # divisors of both signs and zero: risks per record
    ],
)
def test_division_and_text_lookups_judge_as_the_per_record_engine(incomes: list[int], sizes: list[int]) -> None:
    day = DAYS[1]
    rows = [
        {"business_income": income, "earned_income": incomes[-1 - i % len(incomes)], "household_size": size,
         "district_code": _DISTRICTS[i % len(_DISTRICTS)], "birth_date": dt.date(1950, 1, 1)}
        for i, (income, size) in enumerate((a, b) for a in incomes for b in sizes)
    ]  # fmt: skip
    rows.append({"birth_date": dt.date(1950, 1, 1)})  # every fact the criteria read missing
    assert vectorised.unvectorisable(ARITHMETIC, day, ["senior_transport_card"]) == {}
    assert_same(ARITHMETIC, ["senior_transport_card"], day, rows)


@settings(DIFFERENTIAL, max_examples=10)
@given(
    st.lists(
        st.fixed_dictionaries({
            "business_income": st.one_of(st.none(), st.integers(-50, 50), st.integers(-(10**12), 10**12)),
            "earned_income": st.one_of(st.none(), st.integers(-50, 1_000)),
            "household_size": st.one_of(st.none(), st.integers(-3, 12)),
            "district_code": st.sampled_from(_DISTRICTS),
            "birth_date": st.just(dt.date(1950, 1, 1)),
        }),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_division_and_text_lookups_on_random_populations(rows: list[dict[str, Any]]) -> None:
    assert_same(ARITHMETIC, ["senior_transport_card"], DAYS[1], rows)


def test_a_construct_the_compiler_cannot_translate_sends_its_program_to_the_per_record_engine() -> None:
    """A rule with a macro (``exists``) over a list is judged per record for every row, the same; ``unvectorisable``
    (what ``onestop catalogue check`` prints) names it and why, and the catalogue's own programs are all vectorised."""
    day = DAYS[1]
    entry = next(p for p in FILES.programs if p.code == "senior_transport_card")
    version = entry.versions[-1]
    rule = CriterionSpec.model_validate(
        {"all": [version.rule.model_dump(by_alias=True, exclude_none=True),
                 {"id": "has_an_older_parent", "label": {"ko": "부모", "en": "A parent"},
                  "expr": "parent_birth_dates.exists(d, d < timestamp('1950-01-01T00:00:00Z'))"}]}
    )  # fmt: skip
    changed_version = VersionSpec.model_validate(
        {**version.model_dump(by_alias=True), "rule": rule.model_dump(by_alias=True)}
    )
    changed = entry.model_copy(update={"versions": [changed_version]})
    files = load_files()
    files.programs = [changed if p.code == entry.code else p for p in files.programs]
    catalogue = files.catalogue()
    reasons = vectorised.unvectorisable(catalogue, day)
    assert set(reasons) == {"senior_transport_card"}
    assert "exists" in reasons["senior_transport_card"] or "call" in reasons["senior_transport_card"]
    assert vectorised.unvectorisable(CATALOGUE, day) == {}
    rows: list[dict[str, Any]] = [
        {"birth_date": dt.date(1950, 1, 1), "district_code": "11110", "parent_birth_dates": [dt.date(1930, 5, 5)]},
        {"birth_date": dt.date(1950, 1, 1), "district_code": "11110", "parent_birth_dates": []},
        {"birth_date": dt.date(1990, 1, 1)},
    ]
    assert_same(catalogue, ["senior_transport_card"], day, rows)


# ---------------------------------------------------------------------------------------------- the registry table

VULNERABILITY = ["disability", "single_parent", "elderly_alone"]
RELATIONS = ["spouse", "child", "parent", "sibling", "grandparent", "grandchild", "foster_child", "ward", "other"]


@st.composite
def projections(draw: st.DrawFn) -> dict[str, Any]:
    day = DAYS[1]
    member = st.fixed_dictionaries(
        {
            "relation": st.sampled_from(RELATIONS),
            "birth_date": _dates(day).map(dt.date.isoformat),
            "monthly_income": st.one_of(st.none(), st.integers(0, 5_000_000)),
            "disability": st.booleans(),
        }
    )
    departments = ["tax", "welfare", "labour", "civil_registry", "housing"]
    return {
        "registry_version": draw(st.one_of(st.none(), st.just(1), st.just(1), st.just(3))),
        "birth_date": draw(_dates(day)),
        "district_code": draw(st.sampled_from(["11110", "41111", "1111", "", "47720"])),
        "household": draw(st.one_of(st.none(), st.lists(member, max_size=6))),
        "vulnerability": draw(st.one_of(st.none(), st.lists(st.sampled_from(VULNERABILITY), max_size=2))),
        "consents": {f"department_data:{d}": draw(st.booleans()) for d in departments},
        "reports": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["earned_income", "financial_assets", "korean_national", "tenure", "birth_date",
                                     "children_birth_dates", "spouse_income", "household_size", "district_code"]),
                    st.sampled_from(departments),
                    st.integers(0, 3),  # observed, days before NOW
                    st.sampled_from([None, -1, 1]),  # valid until: open, expired, still valid
                    st.integers(0, 10),
                ),
                max_size=6,
            )
        ),
        # Answers to screening questions (the declared layer, beneath the registry and the departments).
        "answers": draw(
            st.dictionaries(
                st.sampled_from(["civil_servant", "earned_income", "birth_date", "tenure", "korean_national",
                                 "children_birth_dates", "household_size", "district_code"]),
                st.integers(0, 10),
                max_size=4,
            )
        ),
    }  # fmt: skip


def _report_value(name: str, seed: int) -> Any:
    kind = FACTS[name].type
    if kind == "integer":
        return seed * 100_000
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "date":
        return (dt.date(1990, 1, 1) + dt.timedelta(days=seed * 400)).isoformat()
    if kind == "list":
        return [(dt.date(2015, 1, 1) + dt.timedelta(days=seed * 300)).isoformat()] * (seed % 3)
    if name == "tenure":
        return ["owner", "jeonse", "monthly_rent", "nonsense"][seed % 4]
    return ["11110", "41111", "4111"][seed % 3]


@settings(DIFFERENTIAL, max_examples=15)
@given(st.lists(projections(), min_size=1, max_size=20))
def test_the_registry_table_resolves_facts_as_the_per_record_engine(people: list[dict[str, Any]]) -> None:
    """Each layer as ``resolve`` takes it: a department's report, then the registry, then what the resident declared."""
    names = sorted(base_schema(FACTS))
    residents, reports, answers, expected = [], [], [], []
    next_id = 0
    for person in people:
        rid = str(uuid.uuid4())
        residents.append({
            "resident_id": rid, "registry_version": person["registry_version"], "birth_date": person["birth_date"],
            "district_code": person["district_code"] or None,
            "household": None if person["household"] is None else json.dumps(person["household"]),
            "vulnerability": None if person["vulnerability"] is None else json.dumps(person["vulnerability"]),
            "consents": json.dumps(person["consents"]),
        })  # fmt: skip
        reported = []
        for name, department, days, valid, seed in person["reports"]:
            next_id += 1
            observed = NOW - dt.timedelta(days=days)
            until = None if valid is None else NOW + dt.timedelta(days=valid)
            value = _report_value(name, seed)
            reports.append({"resident_id": rid, "id": next_id, "name": name, "value": json.dumps(value),
                            "department": department, "observed_at": observed, "valid_until": until})  # fmt: skip
            reported.append(ReportedValue(name, value, department, "test", observed, until))
        registry = {} if person["registry_version"] is None else registry_facts(
            birth_date=person["birth_date"], district_code=person["district_code"] or None,
            household=person["household"], vulnerability=person["vulnerability"],
        )  # fmt: skip
        declared = {name: _report_value(name, seed) for name, seed in person["answers"].items()}
        answers += [{"resident_id": rid, "name": n, "value": json.dumps(v)} for n, v in declared.items()]
        values, _, _ = resolve(
            FACTS,
            FactLayers(declared=declared, registry=registry, reported=reported, consents=person["consents"]),
            NOW,
        )
        expected.append(values)
    resident_frame = pl.DataFrame(residents, schema={
        "resident_id": pl.String, "registry_version": pl.Int64, "birth_date": pl.Date, "district_code": pl.String,
        "household": pl.String, "vulnerability": pl.String, "consents": pl.String})  # fmt: skip
    report_frame = pl.DataFrame(reports, schema={
        "resident_id": pl.String, "id": pl.Int64, "name": pl.String, "value": pl.String, "department": pl.String,
        "observed_at": pl.Datetime("us", "UTC"), "valid_until": pl.Datetime("us", "UTC")})  # fmt: skip
    answer_frame = pl.DataFrame(answers, schema={"resident_id": pl.String, "name": pl.String, "value": pl.String})
    table = registry_table(resident_frame, report_frame, FACTS, names, NOW, answer_frame)
    assert table.get_column("resident_id").to_list() == [r["resident_id"] for r in residents]
    for row, want in zip(table.iter_rows(named=True), expected, strict=True):
        got = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items() if k != "resident_id" and v is not None
        }
        assert got == want, json.dumps({"registry table": got, "per record": want}, default=str, ensure_ascii=False)
