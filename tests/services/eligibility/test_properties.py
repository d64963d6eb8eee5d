"""Properties of every program version in the catalogue, generated from the rules themselves (hypothesis): a new
program or version is covered without new code. What is generated is read from the compiled rules and the YAML cases:

- the facts a version reads (through the programs it requires, derived facts through what they are derived from),
  drawn by their type, starting from the version's YAML cases (seeds) or from nothing;
- its *limits* (``fact <= N``, ``age_years >= 65``, ``child_birth_date >= timestamp(...)``; rules/coverage.py finds
  them): each is judged one won below, at and above its bound (the bound as the rule computes it, for household
  sizes 1 to 8), or the day before, of and after the date it is reached — ages and deadlines by an independent
  calendar (민법 제158조·제160조: a period counted from a day ends on the day before the corresponding day, or on
  the month's last day when that day does not exist), from birth dates on 29 February and month ends too;
- a limit on a computed income (the recognised income, the household's income) one won below, at and above its
  bound, reached by the business income, which every income unit counts in full;
- the metamorphic properties: more income or assets (or fewer debts) never make a means-tested version (one whose
  rule reads such a fact) eligible nor raise its amount; an application date past a deadline is never eligible; an
  outcome does not depend on the order of the facts nor on which catalogue object judges it, and the bulk path
  agrees; a missing fact gives needs_information (never an error, never a guess), and answering what it asks (round
  after round: the spouse's facts once there is a spouse) decides it as the whole facts do; a twin counts like a
  sibling born a day apart; a spouse's income counts like any other member's where the household is the unit; a
  couple who both receive a pension get no more each than when one of them does.

Bounded: every test derandomized, a few dozen examples each (the suite runs in about a minute on two cores)."""

from __future__ import annotations

import calendar
import datetime as dt
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from services.eligibility import income
from services.eligibility.catalogue import Catalogue, ProgramResult, load_files
from services.eligibility.facts import DERIVATIONS, MAX_NEWBORNS, FactLayers, registry_facts
from services.eligibility.rules.coverage import REFERENCE_FACTS, CatalogueCoverage, Limit, VersionPlan
from services.eligibility.rules.nodes import Group, Leaf, Node
from services.eligibility.rules.syntax import MIRRORED, Syntax
from shared.events import Outcome
from tests.services.eligibility.test_cases import CASES, NOW
from tests.services.eligibility.test_catalogue_coverage import UNREACHABLE

FILES = load_files()
CATALOGUE = FILES.catalogue()
OTHER = FILES.catalogue()  # compiled again: judging must not depend on the objects' history
FACTS = CATALOGUE.facts
PLANS: dict[tuple[str, int], VersionPlan] = {
    (seen.plan.code, seen.plan.version): seen.plan
    for versions in CatalogueCoverage.of(CATALOGUE).by_program().values()
    for seen in versions
}
PROBE = CatalogueCoverage.of(CATALOGUE)  # evaluates pieces of rules (a limit's bound)
KEYS = sorted(PLANS)

# No shrinking: a failure is reported as drawn (its facts are readable as they are), and shrinking one of these
# examples can take minutes, which a suite meant to run in about a minute cannot afford.
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
BOUNDARY = settings(PROPERTY, max_examples=12)

ELIGIBLE, INELIGIBLE, NEEDS_INFORMATION = Outcome.ELIGIBLE, Outcome.INELIGIBLE, Outcome.NEEDS_INFORMATION
DAY = dt.timedelta(days=1)
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
# Facts whose increase never helps a resident: income and assets — named so, and the kinds of assets the recognised
# income converts (not the median income, a reference).
MEANS = (
    frozenset(
        name
        for name, fact in FACTS.types.items()
        if fact.type == "integer" and not fact.derived and ("income" in name or "assets" in name)
    )
    | (frozenset(income.HOUSEHOLD_ASSETS + income.COUPLE_ASSETS) - {"debts", "couple_debts"})
) - REFERENCE_FACTS
# Facts whose decrease never helps: the debts deducted from the assets.
DEBTS = frozenset({"debts", "couple_debts"})
# Income facts a program reads for something else than the means, by the law: each with the reason.
NOT_MEANS: dict[str, dict[str, str]] = {
    "earned_income_tax_credit": dict.fromkeys(
        ("earned_income", "business_income", "spouse_income"),
        "the spouses' own earnings decide the household type (조세특례제한법 제100조의2: 맞벌이가구 when each earns "
        "3,000,000 a year or more), whose limit and credit are higher; the means are the annual income and assets",
    ),
}

# How a derived fact grows with the calendar: (the date it counts from, the unit, the date it counts to — the
# application date when None, and how many days after the fact's date the count starts). The oracle below counts
# independently of facts.py.
CLOCKS: dict[str, tuple[str, str, str | None, int]] = {
    "age_years": ("birth_date", "years", None, 0),
    "spouse_age_years": ("spouse_birth_date", "years", None, 0),
    # 기초연금: months from the month of birth, whatever the day (applied for from the month before the 65th).
    "calendar_age_months": ("birth_date", "calendar_months", None, 0),
    "child_age_months": ("child_birth_date", "months", None, 0),
    "child_age_days": ("child_birth_date", "days", None, 0),
    "days_since_move_in": ("moved_in_date", "days", None, 0),
    "days_since_death": ("deceased_death_date", "days", None, 0),
    "days_since_business_start": ("business_start_date", "days", None, 0),
    "months_since_death_month": ("deceased_death_date", "calendar_months", None, 0),
    "age_at_business_start": ("birth_date", "years", "business_start_date", 0),
    # 고용보험법 제75조: within 12 months of the day after the leave ended (민법 제157조: the first day not counted).
    "months_after_maternity_leave": ("maternity_leave_end_date", "months", None, 1),
}
# Derived counts of children whose age in months is in [from, to), and the lists a child counted there may be in:
# the parent's own children (and grandchildren raised), or also the children fostered (the carer's counts).
OWN = ("children_birth_dates",)
CARED = ("children_birth_dates", "fostered_children_birth_dates")
COUNTS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "children_under_8": (0, 96, CARED),
    "children_under_9": (0, 108, CARED),
    "children_under_12_months": (0, 12, CARED),
    "children_12_to_23_months": (12, 24, CARED),
    "children_under_18": (0, 216, OWN),
    "children_school_age": (72, 216, OWN),
}
# Computed incomes, and the base fact that moves each by exactly one won per won: the business income, which every
# income unit counts in full (no deduction, unlike earned income; the applicant's own, so in every unit).
LEVERS: dict[str, str] = {
    "recognised_income": "business_income",
    "pension_recognised_income": "business_income",
    "household_income": "business_income",
}
# Derived facts compared against a bound that neither a calendar nor a lever moves: their limits are proved by the
# YAML cases and the coverage test only; each with the reason.
NOT_BY_CALENDAR: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------- the calendar oracle


def reached(start: dt.date, n: int, unit: str) -> dt.date:
    """The first day on which ``n`` units have passed since ``start`` (the day of ``start`` counted): the
    corresponding day n units later, or the first day of the next month when that month has no such day."""
    if unit == "days":
        return start + dt.timedelta(days=n)
    if unit == "calendar_months":
        months = start.year * 12 + start.month - 1 + n
        return dt.date(months // 12, months % 12 + 1, 1)
    months = n * 12 if unit == "years" else n
    total = start.year * 12 + start.month - 1 + months
    year, month = total // 12, total % 12 + 1
    if start.day <= calendar.monthrange(year, month)[1]:
        return dt.date(year, month, start.day)
    return dt.date(year, month, calendar.monthrange(year, month)[1]) + DAY


def elapsed(start: dt.date, on: dt.date, unit: str) -> int:
    """How many units have passed from ``start`` to ``on``, by :func:`reached`."""
    if unit == "days":
        return (on - start).days
    months = (on.year * 12 + on.month) - (start.year * 12 + start.month)
    if unit == "calendar_months":
        return months
    n = months // 12 + 1 if unit == "years" else months + 1  # at most one more than has passed
    while reached(start, n, unit) > on:
        n -= 1
    return n


def test_the_calendar_oracle() -> None:
    assert reached(dt.date(1960, 2, 29), 65, "years") == dt.date(2025, 3, 1)
    assert reached(dt.date(1960, 2, 29), 64, "years") == dt.date(2024, 2, 29)
    assert reached(dt.date(2025, 1, 31), 1, "months") == dt.date(2025, 3, 1)
    assert reached(dt.date(2017, 6, 15), 96, "months") == dt.date(2025, 6, 15)
    assert reached(dt.date(2025, 3, 31), 7, "calendar_months") == dt.date(2025, 10, 1)
    assert elapsed(dt.date(1960, 2, 29), dt.date(2025, 2, 28), "years") == 64
    assert elapsed(dt.date(1960, 2, 29), dt.date(2025, 3, 1), "years") == 65
    assert elapsed(dt.date(2024, 12, 31), dt.date(2025, 12, 30), "months") == 11
    assert elapsed(dt.date(2024, 12, 31), dt.date(2025, 12, 31), "months") == 12


# ---------------------------------------------------------------------------------------------- what a version reads


def window(key: tuple[str, int]) -> tuple[dt.date, dt.date]:
    """The days the version is in force (an open end is cut at the end of 2027)."""
    program = CATALOGUE.programs[key[0]]
    (version,) = [v for v in program.versions if v.version == key[1]]
    last = version.effective_to or dt.date(2027, 12, 31)
    for other in program.versions:
        if other.effective_from > version.effective_from:
            last = min(last, other.effective_from - DAY)
    return version.effective_from, last


def reads(code: str, version: int, seen: set[str] | None = None) -> set[str]:
    """The base facts a version reads, through its derived facts and the programs it requires (any version)."""
    seen = seen if seen is not None else set()
    if code in seen:
        return set()
    seen.add(code)
    rule = PLANS[(code, version)].rule
    out: set[str] = set()
    for name in rule.facts_read:
        derivation = DERIVATIONS.get(name)
        out |= {name} if derivation is None else {*derivation.inputs, *derivation.optional}
    for ref in rule.refs:
        for other in CATALOGUE.programs[ref].versions:
            out |= reads(ref, other.version, seen)
    return out - set(DERIVATIONS)


NEEDED = {key: sorted(reads(*key)) for key in KEYS}
# Inputs a derivation reads when known but never asks for: leaving one out is not a missing fact.
OPTIONAL = frozenset(name for d in DERIVATIONS.values() for name in d.optional)


def version_of(day: dt.date, code: str) -> int | None:
    found = CATALOGUE.programs[code].version_on(day)
    return found.version if found is not None else None


def case_facts(case: dict[str, Any]) -> dict[str, Any]:
    """A case's facts as one resident's declaration: what its ``household`` (the registry's members) establishes
    over what it declares, as the registry's facts take precedence."""
    registry = registry_facts(birth_date=None, district_code=None, household=case.get("household"), vulnerability=None)
    return {**(case.get("facts") or {}), **registry}


SEEDS: dict[tuple[str, int], list[tuple[dt.date, dict[str, Any]]]] = {}
for _param in CASES:
    _code, _case = _param.values
    _version = version_of(_case["date"], _code)
    # A case proving that a person must look (contradictory facts, a district whose tier is not established) is no
    # resident to draw others from: the properties are about residents the rules decide.
    if _version is not None and _case["expect"]["outcome"] != "needs_review":
        SEEDS.setdefault((_code, _version), []).append((_case["date"], case_facts(_case)))
ELIGIBLE_SEEDS = {
    key: [s for s in seeds if str(CATALOGUE.evaluate(CATALOGUE.environment(s[0], FactLayers(declared=s[1]), NOW),
                                                      [key[0]])[0].outcome.outcome) == ELIGIBLE]
    for key, seeds in SEEDS.items()
}  # fmt: skip
INTERESTING: dict[str, set[Any]] = {}
for _seeds in SEEDS.values():
    for _day, _facts in _seeds:
        for _name, _value in _facts.items():
            INTERESTING.setdefault(_name, set()).add(_value if not isinstance(_value, list) else tuple(_value))


def tier_established(district_code: str) -> bool:
    """Whether every district tier table classifies the district: a depopulation area whose tier is not established
    needs a person (its YAML cases prove that), so residents are drawn from the others."""
    try:
        for table in CATALOGUE.districts.tables:
            table.tier(district_code)
    except (LookupError, ValueError):
        return False
    return True


DISTRICTS = sorted(d for d in {*INTERESTING.get("district_code", ()), "26110"} if tier_established(d))


# ---------------------------------------------------------------------------------------------- generating residents


def special_days(first: dt.date, last: dt.date) -> list[dt.date]:
    """29 February, the end and start of each month: where calendars go wrong."""
    out = []
    for year in range(first.year, last.year + 1):
        for month in range(1, 13):
            end = calendar.monthrange(year, month)[1]
            out += [dt.date(year, month, 1), dt.date(year, month, end)]
            if month == 2:
                out += [dt.date(year, 2, 28)]
    return [d for d in out if first <= d <= last]


def dates(first: dt.date, last: dt.date) -> st.SearchStrategy[dt.date]:
    specials = special_days(first, last)
    plain = st.dates(first, last)
    return st.one_of(st.sampled_from(specials), plain) if specials else plain


def value_of(name: str, day: dt.date) -> st.SearchStrategy[Any]:
    fact = FACTS[name]
    if name == "household_size":
        return st.integers(1, 8)
    if name == "newborns":  # more is a mistake for a person to look at (facts.MAX_NEWBORNS)
        return st.integers(1, MAX_NEWBORNS)
    known = sorted(v for v in INTERESTING.get(name, ()) if not isinstance(v, tuple))
    if fact.type == "integer":
        near = [v + d for v in known for d in (-1, 0, 1) if isinstance(v, int) and v + d >= 0]
        return st.one_of(st.sampled_from(near), st.integers(0, 10**9)) if near else st.integers(0, 10**9)
    if fact.type == "number":
        return st.floats(0, 10**9, allow_nan=False)
    if fact.type == "boolean":
        return st.booleans()
    if fact.type == "string":
        return st.sampled_from(fact.enum) if fact.enum else st.sampled_from(DISTRICTS)
    if fact.type == "date":
        return dates(day.replace(year=day.year - 100, day=min(day.day, 28)), day)
    return st.lists(dates(day.replace(year=day.year - 25, day=min(day.day, 28)), day), max_size=4)


@st.composite
def scenario(
    draw: st.DrawFn, key: tuple[str, int], *, complete: bool, eligible: bool = False
) -> tuple[dt.date, dict[str, Any]]:
    """An application date the version is in force on and a resident's facts: one of its cases, a case with a few
    facts changed, or drawn from nothing; ``complete`` adds every fact the version reads that is missing."""
    first, last = window(key)
    seeds = ELIGIBLE_SEEDS.get(key) if eligible else SEEDS.get(key)
    mode = draw(st.sampled_from(["seed", "changed", "drawn"])) if seeds else "drawn"
    if mode == "drawn":
        day, facts = draw(dates(first, last)), {}
    else:
        day, facts = draw(st.sampled_from(seeds or []))
        facts = dict(facts)
    needed = NEEDED[key]
    if mode == "changed" and needed:
        for name in draw(st.sets(st.sampled_from(needed), max_size=3)):
            facts[name] = draw(value_of(name, day))
    if complete:
        for name in needed:
            if name not in facts:
                facts[name] = draw(value_of(name, day))
    return day, facts


def judge(code: str, day: dt.date, facts: dict[str, Any], *, catalogue: Catalogue = CATALOGUE,
          explain: bool = True) -> ProgramResult:  # fmt: skip
    env = catalogue.environment(day, FactLayers(declared=facts), NOW)
    assert not env.rejected, env.rejected
    (result,) = catalogue.evaluate(env, [code], explain=explain)
    return result


def by(day: dt.date, facts: dict[str, Any], *, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The facts with every date after ``day`` moved to it (but those in ``keep``): a resident whose facts a later
    or earlier application date still allows (a child is born by the application date)."""
    out: dict[str, Any] = {}
    for name, value in facts.items():
        if name in keep:
            out[name] = value
        elif isinstance(value, dt.date):
            out[name] = min(value, day)
        elif isinstance(value, list | tuple) and value and isinstance(value[0], dt.date):
            out[name] = [min(v, day) for v in value]
        else:
            out[name] = value
    return out


def status_of(result: ProgramResult, criterion: str) -> str:
    return str(next(c["status"] for c in result.outcome.criteria if c["id"] == criterion))


def shown(result: ProgramResult, criterion: str, name: str) -> Any:
    return next(c["values"][name] for c in result.outcome.criteria if c["id"] == criterion)


# ---------------------------------------------------------------------------------------------- metamorphic properties


def means_of(key: tuple[str, int]) -> list[str]:
    return sorted(((MEANS | DEBTS) & set(NEEDED[key])) - set(NOT_MEANS.get(key[0], {})))


def means_tested(key: tuple[str, int]) -> bool:
    return bool(means_of(key))


@pytest.mark.parametrize("key", [k for k in KEYS if means_tested(k)], ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_more_income_or_assets_never_make_eligible_nor_raise_the_amount(key: tuple[str, int], data: st.DataObject):
    day, facts = data.draw(scenario(key, complete=True))
    name = data.draw(st.sampled_from(means_of(key)))
    change = data.draw(st.one_of(st.integers(1, 1000), st.integers(1, 10**9)))
    more = facts[name] + change if name in MEANS else max(0, facts[name] - change)  # fewer debts: more means
    assume(more != facts[name])
    before, after = judge(key[0], day, facts).outcome, judge(key[0], day, {**facts, name: more}).outcome
    if before.outcome != ELIGIBLE:
        assert after.outcome != ELIGIBLE, f"{name} {facts[name]} -> {more} made it eligible"
    elif after.outcome == ELIGIBLE and before.amount is not None and after.amount is not None:
        assert after.amount <= before.amount, f"{name} {facts[name]} -> {more} raised the amount"


def test_means_tested_programs_are_found_by_what_they_read() -> None:
    found = {key[0] for key in KEYS if means_tested(key)}
    assert {"livelihood_benefit", "basic_pension", "earned_income_tax_credit", "diaper_formula_support"} <= found
    assert "senior_transport_card" not in found


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_outcomes_are_deterministic_and_the_bulk_path_agrees(key: tuple[str, int], data: st.DataObject) -> None:
    day, facts = data.draw(scenario(key, complete=False))
    shuffled = dict(data.draw(st.permutations(list(facts.items()))))
    first = judge(key[0], day, facts).determination(FACTS)
    again = judge(key[0], day, shuffled, catalogue=OTHER).determination(FACTS)
    assert first == again
    bulk = judge(key[0], day, facts, explain=False).outcome
    assert (bulk.outcome, bulk.amount) == (first["outcome"], first["amount"])


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_a_missing_fact_is_asked_never_guessed(key: tuple[str, int], data: st.DataObject) -> None:
    """Leaving facts out only ever turns a decided outcome into needs_information (never the other outcome, never
    an error), asks only for what was left out, and answering what it asks decides it as the whole facts do."""
    day, whole_facts = data.draw(scenario(key, complete=True))
    droppable = sorted(set(whole_facts) - OPTIONAL)
    assume(droppable)
    dropped = data.draw(st.sets(st.sampled_from(droppable), min_size=1))
    partial_facts = {k: v for k, v in whole_facts.items() if k not in dropped}
    whole = judge(key[0], day, whole_facts).determination(FACTS)
    partial = judge(key[0], day, partial_facts).determination(FACTS)
    assert whole["error"] is None, whole["error"]
    assert partial["error"] is None, partial["error"]
    assert whole["outcome"] in (ELIGIBLE, INELIGIBLE)
    assert partial["outcome"] in (whole["outcome"], NEEDS_INFORMATION)
    if partial["outcome"] == ELIGIBLE and partial["amount"] is not None:
        assert partial["amount"] == whole["amount"]
    # What only some answers make relevant is asked once they are given (the spouse's facts once there is a spouse):
    # a few rounds, each asking only for what was left out and not given yet, end where the whole facts do.
    known, answered = dict(partial_facts), partial
    while answered["outcome"] == NEEDS_INFORMATION:
        asked = {m["name"] for m in answered["missing"]}
        assert asked, "needs_information must say what is missing"
        assert asked <= dropped - set(known), f"asked for {asked - (dropped - set(known))}, which it was given"
        known |= {n: whole_facts[n] for n in asked}
        answered = judge(key[0], day, known).determination(FACTS)
    assert answered["outcome"] == whole["outcome"]
    if answered["outcome"] == ELIGIBLE and answered["amount"] is not None:  # (an amount's own facts may be asked later)
        assert answered["amount"] == whole["amount"]


def child_counters(key: tuple[str, int]) -> bool:
    rule = PLANS[key].rule
    return rule.amount is not None and bool(rule.facts_read & set(COUNTS))


@pytest.mark.parametrize("key", [k for k in KEYS if child_counters(k)], ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_a_twin_counts_like_a_sibling_born_a_day_apart(key: tuple[str, int], data: st.DataObject) -> None:
    day, facts = data.draw(scenario(key, complete=True, eligible=True))
    children = list(facts["children_birth_dates"])
    assume(children)
    child = data.draw(st.sampled_from(children))
    later = child + DAY
    sibling = later if later <= day and elapsed(later, day, "months") == elapsed(child, day, "months") else child - DAY
    # Not on the day of the birth the application is about: a second child listed that day is one of its newborns.
    assume(facts.get("child_birth_date") not in (child, sibling))
    twins = judge(key[0], day, {**facts, "children_birth_dates": [*children, child]}).outcome
    siblings = judge(key[0], day, {**facts, "children_birth_dates": [*children, sibling]}).outcome
    assert (twins.outcome, twins.amount) == (siblings.outcome, siblings.amount)


def read_directly(code: str, version: int, seen: set[str] | None = None) -> set[str]:
    """The facts (derived ones by their own name) a version's expressions read, and those of the programs it
    requires."""
    seen = seen if seen is not None else set()
    if code in seen:
        return set()
    seen.add(code)
    rule = PLANS[(code, version)].rule
    out = set(rule.facts_read)
    for ref in rule.refs:
        for other in CATALOGUE.programs[ref].versions:
            out |= read_directly(ref, other.version, seen)
    return out


HOUSEHOLD_UNIT = frozenset({"recognised_income", "household_income"})


def household_is_the_unit(key: tuple[str, int]) -> bool:
    """Its income test counts the whole household, and nothing else it reads asks whether there is a spouse."""
    read = read_directly(*key)
    spouse = {"has_spouse", "pension_recognised_income", "spouse_age_years", "spouse_basic_pension"}
    return bool(read & HOUSEHOLD_UNIT) and not read & spouse


@pytest.mark.parametrize("key", [k for k in KEYS if household_is_the_unit(k)], ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_a_spouse_counts_like_any_other_member_of_the_household(key: tuple[str, int], data: st.DataObject) -> None:
    """Where the household is the income unit (국민기초생활보장법 제2조제9호, 긴급복지 ...), a spouse's income is one
    member's like another's: the same household with the spouse counted among the other members is judged alike."""
    day, facts = data.draw(scenario(key, complete=True))
    size = data.draw(st.integers(2, 8))
    spouse, others = data.draw(st.integers(0, 10**7)), data.draw(st.integers(0, 10**7))
    couple = {**facts, "household_size": size, "has_spouse": True, "spouse_income": spouse}
    couple["other_members_income"] = others
    as_member = {**couple, "has_spouse": False, "other_members_income": others + spouse if size > 2 else spouse}
    as_member.pop("spouse_income")
    if size == 2:
        couple.pop("other_members_income")  # nobody else: not read
    first, second = judge(key[0], day, couple).outcome, judge(key[0], day, as_member).outcome
    assert (first.outcome, first.amount) == (second.outcome, second.amount)


def both_receive(key: tuple[str, int]) -> bool:
    return PLANS[key].rule.amount is not None and "spouse_basic_pension" in NEEDED[key]


@pytest.mark.parametrize("key", [k for k in KEYS if both_receive(k)], ids=lambda k: f"{k[0]} v{k[1]}")
@PROPERTY
@given(data=st.data())
def test_a_couple_who_both_receive_get_no_more_each_than_when_one_does(key: tuple[str, int], data: st.DataObject):
    """기초연금법 제8조①: when both spouses receive the pension, each is reduced — never raised."""
    day, facts = data.draw(scenario(key, complete=True))
    facts = {**facts, "has_spouse": True}
    one = judge(key[0], day, {**facts, "spouse_basic_pension": False}).outcome
    both = judge(key[0], day, {**facts, "spouse_basic_pension": True}).outcome
    assert both.outcome == one.outcome  # whether the applicant qualifies does not depend on the spouse's pension
    if one.outcome == ELIGIBLE and one.amount is not None and both.amount is not None:
        assert both.amount <= one.amount


def test_the_couple_properties_reach_their_programs() -> None:
    assert {k[0] for k in KEYS if household_is_the_unit(k)} >= {"livelihood_benefit", "emergency_welfare"}
    assert {k[0] for k in KEYS if both_receive(k)} >= {"basic_pension"}


# ---------------------------------------------------------------------------------------------- limits


def leaves_that_decide(node: Node, out: set[str]) -> set[str]:
    """The criteria that fail the whole rule when they fail (reached from the root through ``all`` only)."""
    if isinstance(node, Leaf):
        out.add(node.id)
    elif isinstance(node, Group) and node.kind == "all":
        for child in node.children:
            leaves_that_decide(child, out)
    return out


def conjuncts(node: Syntax) -> Iterator[Syntax]:
    if node.kind == "and":
        for child in node.children:
            yield from conjuncts(child)
    else:
        yield node


def subject_kind(subject: str) -> str | None:
    if subject in NOT_BY_CALENDAR:
        return "cases only"
    if subject in CLOCKS:
        return "clock"
    if subject in COUNTS:
        return "count"
    if subject in LEVERS:
        return "lever"
    fact = FACTS.types.get(subject)
    if fact is None or fact.derived:
        return None
    return "date" if fact.type == "date" else "number"


LIMITS = [
    (key, index, limit)
    for key in KEYS
    for index, limit in enumerate(PLANS[key].limits.values())
    if limit.where.startswith("rule.") and len(limit.subjects) == 1
]


def limit_id(param: tuple[tuple[str, int], int, Limit]) -> str:
    key, _index, limit = param
    return f"{key[0]} v{key[1]} {limit.where.removeprefix('rule.')}: {limit.text}"


def test_every_limit_on_a_derived_fact_has_a_calendar() -> None:
    """A limit on a derived fact is boundary-tested through how that fact moves with the calendar (or, for a computed
    income, with the base fact that moves it one won at a time); a new derived fact compared against a bound needs its
    line in CLOCKS, COUNTS or LEVERS (or, when nothing moves it so, in NOT_BY_CALENDAR with the reason)."""
    unknown = {f"{limit_id(p)} ({p[2].subjects[0][0]})" for p in LIMITS if subject_kind(p[2].subjects[0][0]) is None}
    assert not unknown, f"limits on derived facts with no calendar here: {sorted(unknown)}"


class Judged:
    """A limit of a version, judged around its bound."""

    def __init__(self, key: tuple[str, int], limit: Limit) -> None:
        self.key = key
        self.limit = limit
        self.plan = PLANS[key]
        self.criterion = limit.where.removeprefix("rule.")
        (self.subject, self.side), = limit.subjects  # fmt: skip
        self.op = limit.node.op
        self.facing = self.op if self.side == 0 else MIRRORED[self.op]  # as if the subject were on the left
        root = self.plan.roots[limit.where]
        self.exact = root is limit.node
        self.conjunct = any(c is limit.node for c in conjuncts(root))
        self.decides = self.criterion in leaves_that_decide(self.plan.rule.root, set())

    def holds(self, value: Any, bound: Any) -> bool:
        check = OPERATORS[self.op]
        return check(value, bound) if self.side == 0 else check(bound, value)

    def bound(self, day: dt.date, facts: dict[str, Any]) -> Any:
        env = CATALOGUE.environment(day, FactLayers(declared=facts), NOW)
        return PROBE.value_of(self.plan, self.limit.node.children[1 - self.side], env)

    def last_holding(self, bound: int) -> tuple[int, bool]:
        """The value on the near side of the flip and whether the limit holds there (the flip is between it and
        the next value up)."""
        below = bound - 1 if self.facing in ("<", ">=") else bound
        return below, self.holds(below, bound)

    def check(self, result: ProgramResult, holds: bool) -> None:
        """The criterion takes the side the comparison says (when it is the whole criterion; when it is one of an
        ``&&``, failing fails it), and a failing criterion that decides the rule makes the program ineligible."""
        status = status_of(result, self.criterion)
        if self.exact:
            assert status == ("passed" if holds else "failed"), (status, holds)
        elif self.conjunct and not holds:
            assert status == "failed"
        if status == "failed" and self.decides:
            assert result.outcome.outcome == INELIGIBLE


@pytest.mark.parametrize("param", [p for p in LIMITS if subject_kind(p[2].subjects[0][0]) == "number"], ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_a_limit_on_an_amount_turns_at_its_bound(param: tuple[tuple[str, int], int, Limit], data: st.DataObject):
    """One won (one unit) below, at and above the bound as the rule computes it for the facts drawn (household
    sizes 1 to 8 when it reads the median income)."""
    key, _index, limit = param
    judged = Judged(key, limit)
    day, facts = data.draw(scenario(key, complete=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, int) and not isinstance(bound, bool))
    for value in (bound - 1, bound, bound + 1):
        result = judge(key[0], day, {**facts, judged.subject: value})
        judged.check(result, judged.holds(value, bound))


@pytest.mark.parametrize("param", [p for p in LIMITS if subject_kind(p[2].subjects[0][0]) == "lever"], ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_a_limit_on_a_computed_income_turns_at_its_bound(param: tuple[tuple[str, int], int, Limit],
                                                         data: st.DataObject) -> None:  # fmt: skip
    """The computed income one won below, at and above the bound, reached by moving its lever (the business income)
    by the difference: the income shown is the one aimed at, and the criterion takes its side."""
    key, _index, limit = param
    judged = Judged(key, limit)
    lever = LEVERS[judged.subject]
    day, facts = data.draw(scenario(key, complete=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, int) and not isinstance(bound, bool))
    env = CATALOGUE.environment(day, FactLayers(declared=facts), NOW)
    assume(judged.subject in env.values)
    base = env.values[judged.subject] - facts[lever]  # the computed income without the lever's won
    for target in (bound - 1, bound, bound + 1):
        assume(target - base >= 0)
        result = judge(key[0], day, {**facts, lever: target - base})
        assert shown(result, judged.criterion, judged.subject) == target
        judged.check(result, judged.holds(target, bound))


@pytest.mark.parametrize("param", [p for p in LIMITS if subject_kind(p[2].subjects[0][0]) == "date"], ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_a_limit_on_a_date_turns_on_its_day(param: tuple[tuple[str, int], int, Limit], data: st.DataObject) -> None:
    key, _index, limit = param
    judged = Judged(key, limit)
    day, facts = data.draw(scenario(key, complete=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, dt.datetime))
    edge = bound.date()
    assume(edge + DAY <= day)  # a date the facts allow on the application date (a child born by then)
    for value in (edge - DAY, edge, edge + DAY):
        result = judge(key[0], day, {**facts, judged.subject: value})
        judged.check(result, judged.holds(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC), bound))


@st.composite
def around_flip(draw: st.DrawFn, key: tuple[str, int], units: int, unit: str) -> tuple[dt.date, dt.date]:
    """A start date (29 February and month ends among them) and the day ``units`` have passed since it, both days
    around that in force for the version."""
    first, last = window(key)
    target = draw(st.dates(first + DAY, last - DAY))
    guess = target - dt.timedelta(days=units * {"days": 1, "months": 30.44, "years": 365.25}.get(unit, 30.44))
    start = draw(dates(guess - dt.timedelta(days=40), guess + dt.timedelta(days=40)))
    flip = reached(start, units, unit)
    assume(first < flip < last)
    return start, flip


@pytest.mark.parametrize("param", [p for p in LIMITS if subject_kind(p[2].subjects[0][0]) == "clock"], ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_an_age_or_deadline_turns_on_its_day(param: tuple[tuple[str, int], int, Limit], data: st.DataObject) -> None:
    """The day before, of and after an age or a number of days is reached, counted by the independent calendar."""
    key, _index, limit = param
    judged = Judged(key, limit)
    source, unit, anchor, after = CLOCKS[judged.subject]
    day, facts = data.draw(scenario(key, complete=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, int))
    below, _ = judged.last_holding(bound)
    start, flip = data.draw(around_flip(key, below + 1, unit))
    facts = {**by(min(day, flip - DAY), facts), source: start - dt.timedelta(days=after)}
    for on in (flip - DAY, flip, flip + DAY):
        # Counted to another date (the business start): that date moves, the application date stays.
        result = judge(key[0], on, facts) if anchor is None else judge(key[0], day, {**facts, anchor: on})
        expected = elapsed(start, on, unit)
        if expected < 0 and result.outcome.outcome == Outcome.NEEDS_REVIEW and source in str(result.outcome.error):
            continue  # not born yet: the derivation refuses it, a person looks (the side a limit cannot reach)
        assert shown(result, judged.criterion, judged.subject) == expected, (start, on)
        judged.check(result, judged.holds(expected, bound))


@pytest.mark.parametrize("param", [p for p in LIMITS if subject_kind(p[2].subjects[0][0]) == "count"], ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_a_child_enters_and_leaves_a_count_on_the_day(param: tuple[tuple[str, int], int, Limit], data: st.DataObject):
    """A child is counted from the day they reach the count's lower age and until the day they reach its upper age."""
    key, _index, limit = param
    judged = Judged(key, limit)
    lowest, highest, lists = COUNTS[judged.subject]
    day, facts = data.draw(scenario(key, complete=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, int))
    months = data.draw(st.sampled_from([m for m in (lowest, highest) if m > 0]))
    start, flip = data.draw(around_flip(key, months, "months"))
    # One child, in one of the lists the count reads; the child an application at a birth is about is that child.
    where = data.draw(st.sampled_from(lists))
    children: dict[str, Any] = {name: [start] if name == where else [] for name in CARED}
    if "child_birth_date" in DERIVATIONS[judged.subject].inputs:
        children["child_birth_date"] = start
    facts = by(flip - DAY, {k: v for k, v in facts.items() if k not in ("child_birth_date", "newborns")})
    for on in (flip - DAY, flip, flip + DAY):
        result = judge(key[0], on, {**facts, **children})
        expected = 1 if lowest <= elapsed(start, on, "months") < highest else 0
        assert shown(result, judged.criterion, judged.subject) == expected, (start, on)
        judged.check(result, judged.holds(expected, bound))


def deadlines() -> list[tuple[tuple[str, int], int, Limit]]:
    """Limits that a later application date passes: an upper bound on a fact that grows with the application date,
    in a criterion that decides the rule."""
    out = []
    for param in LIMITS:
        key, _index, limit = param
        judged = Judged(key, limit)
        clock = CLOCKS.get(judged.subject)
        upper = judged.facing in ("<", "<=")
        if clock is not None and clock[2] is None and upper and judged.decides and (judged.exact or judged.conjunct):
            out.append(param)
    return out


@pytest.mark.parametrize("param", deadlines(), ids=limit_id)
@BOUNDARY
@given(data=st.data())
def test_an_application_past_a_deadline_is_never_eligible(param: tuple[tuple[str, int], int, Limit],
                                                          data: st.DataObject) -> None:  # fmt: skip
    key, _index, limit = param
    judged = Judged(key, limit)
    source, unit, _, after = CLOCKS[judged.subject]
    day, facts = data.draw(scenario(key, complete=True, eligible=True))
    bound = judged.bound(day, facts)
    assume(isinstance(bound, int))
    below, _ = judged.last_holding(bound)
    start, flip = data.draw(around_flip(key, below + 1, unit))
    _first, last = window(key)
    late = data.draw(dates(flip, min(last, flip + dt.timedelta(days=1000))))
    result = judge(key[0], late, {**by(flip, facts), source: start - dt.timedelta(days=after)})
    assert result.outcome.outcome != ELIGIBLE, (start, late)
    assert status_of(result, judged.criterion) == "failed"


NEVER = re.compile(r"v(?P<version>\d+): criterion (?P<criterion>\w+) is never (?P<status>passed|failed)")
UNREACHABLE_CRITERIA = [
    ((code, int(found["version"])), found["criterion"], found["status"])
    for code, sides in UNREACHABLE.items()
    for line in sides
    if (found := NEVER.fullmatch(line))
]


@pytest.mark.parametrize(
    ("key", "criterion", "status"), UNREACHABLE_CRITERIA, ids=lambda v: v if isinstance(v, str) else f"{v[0]} v{v[1]}"
)
@PROPERTY
@given(data=st.data())
def test_a_side_the_coverage_calls_unreachable_is_never_reached(key: tuple[str, int], criterion: str, status: str,
                                                                data: st.DataObject) -> None:  # fmt: skip
    """What test_catalogue_coverage.UNREACHABLE says no facts can reach, generated residents do not reach either."""
    day, facts = data.draw(scenario(key, complete=True))
    result = judge(key[0], day, facts)
    assert status_of(result, criterion) != status, facts


def test_the_suite_reaches_every_kind_of_limit() -> None:
    kinds = {subject_kind(p[2].subjects[0][0]) for p in LIMITS}
    assert {"number", "date", "clock", "count", "lever"} <= kinds
    assert len(deadlines()) >= 5
