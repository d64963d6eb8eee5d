"""Children, counted one by one: twins are two, the newborns of an application are added unless the registry lists
them already, and each program counts the children its law counts (a carer's, or a parent's)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.eligibility.catalogue import Catalogue, CatalogueFiles, load_files
from services.eligibility.facts import FactLayers, ReportedValue, registry_facts
from services.eligibility.screening import Screener

NOW = dt.datetime(2025, 6, 15, 9, tzinfo=dt.UTC)
DAY = dt.date(2025, 6, 15)
COUNTS = (
    "children_under_8",
    "children_under_9",
    "children_under_12_months",
    "children_12_to_23_months",
    "children_under_18",
    "children_school_age",
)


@pytest.fixture(scope="module")
def files() -> CatalogueFiles:
    return load_files()


@pytest.fixture(scope="module")
def catalogue(files: CatalogueFiles) -> Catalogue:
    return files.catalogue()


def counts(catalogue: Catalogue, day: dt.date = DAY, **declared: Any) -> dict[str, Any]:
    env = catalogue.environment(day, FactLayers(declared=declared), NOW)
    assert not env.rejected, env.rejected
    return {name: env.values.get(name, env.errors.get(name)) for name in COUNTS}


def test_twins_are_two_children_in_every_count(catalogue: Catalogue) -> None:
    twins = counts(catalogue, children_birth_dates=["2024-09-01", "2024-09-01"], child_birth_date="2024-09-01")
    assert twins == {
        "children_under_8": 2,
        "children_under_9": 2,
        "children_under_12_months": 2,
        "children_12_to_23_months": 0,
        "children_under_18": 2,
        "children_school_age": 0,
    }
    school = counts(catalogue, children_birth_dates=["2015-03-03", "2015-03-03", "2008-01-01"])
    assert (school["children_school_age"], school["children_under_18"], school["children_under_9"]) == (3, 3, 0)


@pytest.mark.parametrize(
    ("listed", "newborns", "expected"),
    [
        ([], None, 1),  # the number born not known yet: the application is about at least one
        ([], 1, 1),
        ([], 2, 2),  # newborn twins the registry does not list yet
        (["2025-06-01"], 2, 2),  # one of them listed already
        (["2025-06-01", "2025-06-01"], 2, 2),  # both listed: not four
        (["2025-06-01", "2025-06-01"], None, 2),  # both listed, the number not given: the registry's two
        (["2025-06-01", "2025-06-01", "2025-06-01"], 2, 3),  # the registry knows more than was declared
        (["2025-05-31"], 1, 2),  # a child born the day before is another child
    ],
)
def test_newborns_are_added_unless_the_registry_lists_them(
    catalogue: Catalogue, listed: list[str], newborns: int | None, expected: int
) -> None:
    declared: dict[str, Any] = {"children_birth_dates": listed, "child_birth_date": "2025-06-01"}
    if newborns is not None:
        declared["newborns"] = newborns
    assert counts(catalogue, **declared)["children_under_12_months"] == expected


def test_an_impossible_number_of_newborns_is_an_error_not_a_count(catalogue: Catalogue) -> None:
    for wrong in (0, 10, 100_000):
        found = counts(catalogue, children_birth_dates=[], child_birth_date="2025-06-01", newborns=wrong)
        assert found["children_under_9"] == f"newborns ({wrong}) must be between 1 and 9"
    # Without a child the application is about, the number born is not read.
    assert counts(catalogue, children_birth_dates=["2020-01-01"], newborns=0)["children_under_9"] == 1


def test_a_child_born_after_the_application_date_is_not_counted(catalogue: Catalogue) -> None:
    found = counts(catalogue, children_birth_dates=["2025-06-16", "2020-01-01"])
    assert found["children_under_9"] == 1


def test_the_counts_for_a_birth_need_the_child_it_is_about(catalogue: Catalogue) -> None:
    env = catalogue.environment(DAY, FactLayers(declared={"children_birth_dates": ["2025-01-01"]}), NOW)
    assert env.values["children_under_9"] == 1
    assert "children_under_12_months" not in env.values
    assert env.asks["children_under_12_months"] == ("child_birth_date",)


def member(relation: str, born: str) -> dict[str, Any]:
    return {"relation": relation, "birth_date": born}


@pytest.mark.parametrize(
    ("household", "own", "fostered"),
    [
        ([member("child", "2020-01-01"), member("child", "2020-01-01")], ["2020-01-01", "2020-01-01"], []),
        ([member("grandchild", "2019-03-03")], ["2019-03-03"], []),  # 조손가정: no child of the resident lives here
        ([member("child", "1994-02-02"), member("grandchild", "2019-03-03")], ["1994-02-02"], []),  # its parent may
        ([member("foster_child", "2021-01-01"), member("ward", "2015-05-05")], [], ["2021-01-01", "2015-05-05"]),
        ([member("spouse", "1990-01-01"), member("sibling", "2019-03-03"), member("parent", "1960-01-01")], [], []),
        ([member("other", "2019-03-03"), member("grandparent", "1940-01-01")], [], []),
        ([], [], []),
    ],
)
def test_the_registry_gives_the_children_the_resident_raises(
    household: list[dict[str, Any]], own: list[str], fostered: list[str]
) -> None:
    facts = registry_facts(birth_date=None, district_code=None, household=household, vulnerability=None)
    assert facts["children_birth_dates"] == [dt.date.fromisoformat(d) for d in own]
    assert facts["fostered_children_birth_dates"] == [dt.date.fromisoformat(d) for d in fostered]
    assert facts["household_size"] == 1 + len(household)


def test_each_program_counts_the_children_its_law_counts(catalogue: Catalogue) -> None:
    """A foster carer with a foster child of 5 and an own child of 10: the carer's programs count both, a parent's
    programs (tax credit, single-parent support, education benefit) the own child only."""
    household = [member("foster_child", "2020-01-01"), member("child", "2015-01-01")]
    registry = registry_facts(birth_date=None, district_code=None, household=household, vulnerability=None)
    env = catalogue.environment(DAY, FactLayers(registry=registry), NOW)
    counted = {name: env.values[name] for name in ("children_under_9", "children_under_18", "children_school_age")}
    assert counted == {"children_under_9": 1, "children_under_18": 1, "children_school_age": 1}
    fostered_only = registry_facts(birth_date=None, district_code=None, household=household[:1], vulnerability=None)
    env = catalogue.environment(DAY, FactLayers(registry=fostered_only), NOW)
    assert (env.values["children_under_9"], env.values["children_under_18"]) == (1, 0)
    # Each count says it was derived from the registry.
    assert env.sources["children_under_9"] == "derived:registry"


def test_a_grandparent_beside_an_adult_child_is_established_by_the_department(catalogue: Catalogue) -> None:
    """The registry cannot tell whose child a grandchild is when a child of the resident lives there too: the welfare
    department's report (with the resident's consent) says the grandparent raises it, and overrides the registry."""
    household = [member("child", "1994-02-02"), member("grandchild", "2019-03-03")]
    registry = registry_facts(birth_date=None, district_code=None, household=household, vulnerability=None)
    before = catalogue.environment(DAY, FactLayers(registry=registry), NOW)
    assert before.values["children_under_8"] == 0
    report = ReportedValue("children_birth_dates", ["2019-03-03"], "welfare", "ssis", NOW - dt.timedelta(days=1))
    consents = {"department_data:welfare": True}
    after = catalogue.environment(DAY, FactLayers(registry=registry, reported=[report], consents=consents), NOW)
    assert after.values["children_under_8"] == 1
    assert after.sources["children_birth_dates"] == "department:welfare"
    unconsented = catalogue.environment(DAY, FactLayers(registry=registry, reported=[report]), NOW)
    assert unconsented.values["children_under_8"] == 0


# ---------------------------------------------------------------------------------------------- bulk = per application

HOUSEHOLDS: list[list[dict[str, Any]]] = [
    [],
    [member("child", "2020-05-05")],
    [member("spouse", "1990-01-01"), member("child", "2020-05-05"), member("child", "2020-05-05")],  # twins
    [member("child", "2017-06-15"), member("child", "2017-06-15"), member("child", "2024-12-01")],  # twins turning 9
    [member("grandchild", "2019-03-03"), member("grandchild", "2019-03-03")],  # 조손가정, twins
    [member("child", "1994-02-02"), member("grandchild", "2019-03-03")],  # the grandchild's parent lives here
    [member("foster_child", "2023-05-05"), member("foster_child", "2023-05-05"), member("child", "2012-01-01")],
    [member("ward", "2016-01-01"), member("sibling", "2019-01-01")],
]
DISTRICTS = ["11440", "26350", "47170", "46890", "47730"]  # every tier, and one a person must confirm


@pytest.mark.parametrize("day", [dt.date(2025, 6, 15), dt.date(2026, 6, 15)])
def test_bulk_screening_finds_what_the_per_application_engine_decides(catalogue: Catalogue, day: dt.date) -> None:
    """The screener (distinct profiles, no explanations, Kleene short-cuts) and the engine an application goes through
    agree, program by program, on twins, grandchildren, foster children and wards in every district tier."""
    codes = catalogue.in_force(day)
    screener = Screener(catalogue, codes, day, NOW)
    compared = 0
    for household in HOUSEHOLDS:
        for district in DISTRICTS:
            registry = registry_facts(
                birth_date=dt.date(1985, 1, 1), district_code=district, household=household, vulnerability=()
            )
            layers = FactLayers(declared={"korean_national": True}, registry=registry)
            found = {f.program.code: (f.version, f.amount) for f in screener.findings(layers)}
            env = catalogue.environment(day, layers, NOW)
            decided = {
                r.program.code: (r.version.version, r.outcome.amount)
                for r in catalogue.evaluate(env, codes)
                if r.outcome.outcome == "eligible"
            }
            assert found == decided, (household, district)
            compared += 1
    assert compared == len(HOUSEHOLDS) * len(DISTRICTS)
    # The allowance itself, as the screener found it: twins are two children, foster twins two, in each tier.
    twins = registry_facts(birth_date=dt.date(1985, 1, 1), district_code="46890", household=HOUSEHOLDS[2],
                           vulnerability=())  # fmt: skip
    allowance = {f.program.code: f.amount for f in screener.findings(FactLayers(declared={"korean_national": True},
                                                                                registry=twins))}  # fmt: skip
    assert allowance["child_allowance"] == (240_000 if day.year == 2026 else 200_000)
