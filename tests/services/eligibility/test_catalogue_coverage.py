"""Branch coverage of the catalogue: every criterion of every rule version seen passed and failed, every conditional
of its definitions and amount taken both ways, every limit (``fact <= N``, a deadline, an age) judged on its edge on
both sides (one won, one day away from turning), every version judged on the day it replaced another and on its last
day — by the YAML table cases (tests/services/eligibility/cases). The recorder (services/eligibility/rules/coverage.py)
is tested on small rules first, then the whole catalogue is measured."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.eligibility.catalogue import Catalogue, CatalogueFiles, ProgramData, load_files
from services.eligibility.facts import FactLayers, MedianIncomeTable
from services.eligibility.rules.coverage import FAILING, PASSING, CatalogueCoverage
from services.eligibility.rules.evaluate import recording
from services.eligibility.rules.syntax import parse
from services.eligibility.specs import ProgramAttributes, VersionSpec
from tests.services.eligibility.test_cases import CASES, NOW, case_layers

# Programs whose gaps are allowed while their rules are rewritten on another branch (issue 12 listed 13 here until its
# branches were merged with their cases): a program listed here that has no gap left fails the test, so the list only
# shrinks. Empty: every program is covered.
KNOWN_GAPS: dict[str, str] = {}

# Sides no resident's facts can reach, by the rule's own arithmetic, each with the reason: a criterion that shows a
# computation in the explanation and cannot fail. The report leaves them out; each must still be unreached (a case
# reaching it proves the reason wrong), and test_properties checks on generated residents that it never happens.
UNREACHABLE: dict[str, dict[str, str]] = {
    "basic_pension": {
        "v1: criterion pension_amount is never failed": (
            "it shows the amount's computation (기초연금법 제5조, 제8조): while the income is within the threshold "
            "(else its other side, `pension_recognised_income > threshold`, holds) the amount per person is the "
            "pension or the threshold less the income, never negative"
        ),
    },
    "child_allowance": {
        "v2: criterion regional_supplement_known is never failed": (
            "the supplement is 0, 5,000, 10,000 or 20,000 by the district's tier; a district whose tier is not "
            "established makes the program need review (a person confirms it), so the criterion never fails"
        ),
    },
}


# ---------------------------------------------------------------------------------------------- small rules


@pytest.fixture(scope="module")
def files() -> CatalogueFiles:
    return load_files()


def leaf(id_: str, expr: str) -> dict[str, Any]:
    return {"id": id_, "label": {"ko": id_, "en": id_}, "legal_reference": "test", "expr": expr}


def program(code: str, *versions: dict[str, Any]) -> ProgramData:
    attributes = ProgramAttributes.model_validate(
        {"name": {"ko": code, "en": code}, "department": "welfare", "automatic": True, "sla_days": 5}
    )
    specs = [VersionSpec.model_validate({"source": "test", **v}) for v in versions]
    return ProgramData(code, attributes, [(n, spec, False) for n, spec in enumerate(specs, start=1)])


def build(files: CatalogueFiles, *programs: ProgramData) -> Catalogue:
    return Catalogue.build(
        facts=files.facts, medians=MedianIncomeTable(files.median_years), programs=programs,
        life_events=files.life_events, departments=files.departments,
    )  # fmt: skip


def judge(catalogue: Catalogue, coverage: CatalogueCoverage, code: str, day: dt.date, **facts: Any) -> str:
    env = catalogue.environment(day, FactLayers(declared=facts), NOW)
    with recording(coverage):
        (result,) = catalogue.evaluate(env, [code])
    return str(result.outcome.outcome)


def test_the_reader_follows_conditionals_macros_and_comparisons() -> None:
    tree = parse("a ? b : c < 3 ? d : xs.map(x, x > n ? 1 : 2).size()")
    assert tree is not None
    kinds = [(n.kind, n.text) for n in tree.walk() if n.kind in ("ternary", "relation")]
    assert kinds == [
        ("ternary", "a ? b : c < 3 ? d : xs . map ( x , x > n ? 1 : 2 ) . size ( )"),
        ("ternary", "c < 3 ? d : xs . map ( x , x > n ? 1 : 2 ) . size ( )"),
        ("relation", "c < 3"),
        ("ternary", "x > n ? 1 : 2"),
        ("relation", "x > n"),
    ]
    assert tree.identifiers() == {"a", "b", "c", "d", "xs", "n"}  # x is the macro's own
    assert parse("a ? b") is None
    assert parse("f(a,") is None


def test_a_limit_is_covered_by_a_case_on_its_edge_on_each_side(files: CatalogueFiles) -> None:
    catalogue = build(files, program("p", {
        "effective_from": "2020-01-01", "rule": {"all": [leaf("income_limit", "business_income <= 1000")]},
        "amount": {"expr": "business_income < 500 ? 20 : 10", "period": "monthly"},
    }))  # fmt: skip
    coverage = CatalogueCoverage.of(catalogue)
    day = dt.date(2025, 6, 1)
    ((seen,),) = coverage.by_program().values()
    (limit_key,) = [k for k, limit in seen.plan.limits.items() if limit.where == "rule.income_limit"]
    assert judge(catalogue, coverage, "p", day, business_income=700) == "eligible"
    assert judge(catalogue, coverage, "p", day, business_income=5000) == "ineligible"
    # Both sides seen, each criterion both ways, the amount's then branch never: 700 and 5000 are far from the limits.
    assert seen.limits[limit_key].sides == {PASSING, FAILING}
    assert seen.limits[limit_key].edges == set()
    gaps = coverage.gaps()["p"]
    assert "v1: rule.income_limit: `business_income <= 1000` has no case on its edge on the passing side " \
        "(bound 1000)" in gaps  # fmt: skip
    assert "v1: amount: `business_income < 500 ? 20 : 10` never takes its then branch" in gaps
    assert not any("criterion" in line for line in gaps)

    judge(catalogue, coverage, "p", day, business_income=1000)
    judge(catalogue, coverage, "p", day, business_income=1001)  # ineligible: the amount is not reached
    assert seen.limits[limit_key].edges == {PASSING, FAILING}
    judge(catalogue, coverage, "p", day, business_income=499)
    judge(catalogue, coverage, "p", day, business_income=500)
    assert coverage.gaps() == {}


def test_a_deadline_on_a_derived_fact_is_judged_by_the_day(files: CatalogueFiles) -> None:
    """An age is on its edge the day before the birthday and on the day, not a year apart; a child's age in days is
    never negative (the derivation refuses a birth after the application date), so that side cannot be reached."""
    catalogue = build(files, program("p", {
        "effective_from": "2020-01-01",
        "rule": {"all": [leaf("age_65", "age_years >= 65"), leaf("born", "child_age_days >= 0")]},
    }))  # fmt: skip
    coverage = CatalogueCoverage.of(catalogue)
    born = {"child_birth_date": dt.date(2024, 12, 1)}
    judge(catalogue, coverage, "p", dt.date(2025, 1, 1), birth_date=dt.date(1960, 3, 1), **born)  # 64
    judge(catalogue, coverage, "p", dt.date(2026, 1, 1), birth_date=dt.date(1960, 3, 1), **born)  # 65, a year later
    gaps = coverage.gaps()["p"]
    assert "v1: rule.age_65: `age_years >= 65` has no case on its edge on the failing side (bound 65)" in gaps
    assert "v1: rule.age_65: `age_years >= 65` has no case on its edge on the passing side (bound 65)" in gaps
    judge(catalogue, coverage, "p", dt.date(2025, 3, 1), birth_date=dt.date(1960, 3, 1), **born)  # the 65th birthday
    judge(catalogue, coverage, "p", dt.date(2025, 2, 28), birth_date=dt.date(1960, 3, 1), **born)  # the day before
    assert coverage.gaps()["p"] == [
        "v1: criterion born is never failed",
        "v1: rule.born: `child_age_days >= 0` has no case on its edge on the passing side (bound 0)",
        "v1: rule.born: `child_age_days >= 0` has no case on its edge on the failing side (bound 0)",
    ]
    judge(catalogue, coverage, "p", dt.date(2025, 3, 1), birth_date=dt.date(1960, 3, 1), child_birth_date="2025-03-01")
    assert coverage.gaps() == {}
    ((seen,),) = coverage.by_program().values()
    refused = next(s for s in seen.limits.values() if s.limit.where == "rule.born").refused
    assert refused == {FAILING: "applied on 2025-02-28: child_birth_date (2025-03-01) is after the application date "
                                "(2025-02-28)"}  # fmt: skip


def test_conditionals_nested_in_definitions_and_macros_are_followed(files: CatalogueFiles) -> None:
    catalogue = build(files, program("p", {
        "effective_from": "2020-01-01",
        "definitions": {"cap": "household_size == 1 ? 10 : household_size == 2 ? 20 : 30"},
        "rule": {"all": [
            leaf("small", "household_size <= 3"),
            leaf("young_child", "children_birth_dates.exists(d, d >= timestamp('2020-01-01T00:00:00Z'))"),
        ]},
        "amount": {"expr": "cap", "period": "monthly"},
    }))  # fmt: skip
    coverage = CatalogueCoverage.of(catalogue)
    day = dt.date(2025, 6, 1)
    judge(catalogue, coverage, "p", day, household_size=1, children_birth_dates=["2020-01-01", "2010-05-05"])
    gaps = coverage.gaps()["p"]
    # The inner conditional was not reached (the outer took its then branch); the macro's limit was judged per child.
    assert "v1: definitions.cap: `household_size == 2 ? 20 : 30` never takes its then branch" in gaps
    assert not any("`d >= timestamp" in line and "passing" in line for line in gaps)
    assert any("`d >= timestamp" in line and "failing" in line for line in gaps)
    judge(catalogue, coverage, "p", day, household_size=2, children_birth_dates=["2019-12-31"])  # eligible: no
    judge(catalogue, coverage, "p", day, household_size=2, children_birth_dates=["2020-01-01"])
    judge(catalogue, coverage, "p", day, household_size=3, children_birth_dates=["2020-01-01"])
    judge(catalogue, coverage, "p", day, household_size=4, children_birth_dates=["2020-01-01"])
    assert coverage.gaps() == {}


def test_versions_are_judged_on_the_day_they_replace_another_and_on_their_last_day(files: CatalogueFiles) -> None:
    rule = {"all": [leaf("income_limit", "business_income <= 1000")]}
    catalogue = build(files, program(
        "p", {"effective_from": "2020-01-01", "rule": rule}, {"effective_from": "2024-07-01", "rule": rule},
    ))  # fmt: skip
    coverage = CatalogueCoverage.of(catalogue)
    for day in (dt.date(2021, 1, 1), dt.date(2025, 1, 1)):
        judge(catalogue, coverage, "p", day, business_income=1000)
        judge(catalogue, coverage, "p", day, business_income=1001)
    assert coverage.gaps() == {
        "p": ["v1: no case on its last day, 2024-06-30", "v2: no case on its first day, 2024-07-01"]
    }
    judge(catalogue, coverage, "p", dt.date(2024, 6, 30), business_income=0)
    judge(catalogue, coverage, "p", dt.date(2024, 7, 1), business_income=0)
    assert coverage.gaps() == {}


def test_only_the_subject_program_and_only_while_installed(files: CatalogueFiles) -> None:
    """A case of a program that requires another does not test the other; nothing is recorded outside ``recording``
    and the outcome is the same with or without a recorder."""
    catalogue = build(
        files,
        program("base", {"effective_from": "2020-01-01", "rule": {"all": [leaf("rich", "household_assets > 10")]}}),
        program("top", {"effective_from": "2020-01-01", "rule": {"all": [
            {"id": "base", "label": {"ko": "b", "en": "b"}, "legal_reference": "test", "program": "base"},
        ]}}),
    )  # fmt: skip
    coverage = CatalogueCoverage.of(catalogue)
    coverage.subject = "top"
    day = dt.date(2025, 6, 1)
    assert judge(catalogue, coverage, "top", day, household_assets=11) == "eligible"
    env = catalogue.environment(day, FactLayers(declared={"household_assets": 10}), NOW)
    (result,) = catalogue.evaluate(env, ["top"])  # not recorded
    assert result.outcome.outcome == "ineligible"
    seen = {s.plan.code: s for versions in coverage.by_program().values() for s in versions}
    assert seen["top"].cases == 1
    assert seen["base"].cases == 0


# ---------------------------------------------------------------------------------------------- the catalogue


@pytest.fixture(scope="module")
def catalogue_coverage(files: CatalogueFiles) -> CatalogueCoverage:
    """Every YAML case judged with the recorder installed."""
    catalogue = files.catalogue()
    coverage = CatalogueCoverage.of(catalogue)
    with recording(coverage):
        for param in CASES:
            code, case = param.values
            coverage.subject = code
            env = catalogue.environment(case["date"], case_layers(case), NOW)
            catalogue.evaluate(env, [code])
    return coverage


def reachable_gaps(coverage: CatalogueCoverage) -> dict[str, list[str]]:
    """The gaps a case could close: the report less the sides listed in UNREACHABLE."""
    out = {}
    for code, lines in coverage.gaps().items():
        left = [line for line in lines if line not in UNREACHABLE.get(code, {})]
        if left:
            out[code] = left
    return out


def test_every_version_of_every_program_is_covered_by_the_cases(catalogue_coverage: CatalogueCoverage) -> None:
    gaps = {code: lines for code, lines in reachable_gaps(catalogue_coverage).items() if code not in KNOWN_GAPS}
    report = "\n".join(f"{code}:\n" + "\n".join(f"    {line}" for line in lines) for code, lines in gaps.items())
    assert not gaps, f"add table cases (tests/services/eligibility/cases/<program>.yaml) for:\n{report}"


def test_the_known_gaps_are_still_gaps(catalogue_coverage: CatalogueCoverage) -> None:
    """The allow-list only shrinks: a program it names must exist and still have a gap."""
    programs = catalogue_coverage.by_program()
    assert set(KNOWN_GAPS) <= set(programs), f"unknown programs in KNOWN_GAPS: {set(KNOWN_GAPS) - set(programs)}"
    covered = sorted(set(KNOWN_GAPS) - set(reachable_gaps(catalogue_coverage)))
    assert not covered, f"fully covered now: remove {covered} from KNOWN_GAPS"


def test_the_unreachable_sides_are_still_unreached(catalogue_coverage: CatalogueCoverage) -> None:
    """Each side listed as unreachable is a gap the report names (a case that reaches it proves the reason wrong),
    and has its reason."""
    gaps = catalogue_coverage.gaps()
    for code, sides in UNREACHABLE.items():
        for line, reason in sides.items():
            assert line in gaps.get(code, []), f"{code}: {line!r} is reached by a case: its reason was wrong"
            assert reason.strip()
