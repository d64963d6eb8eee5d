"""The rules engine on its own: Kleene logic, what is asked and what is not, derived facts, provenance, validation of
rule versions, rules that fail at evaluation, and compiling once."""

from __future__ import annotations

import builtins
import datetime as dt
import itertools
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cel
import pytest

from services.eligibility import catalogue as catalogue_module
from services.eligibility import rules
from services.eligibility.catalogue import (
    Catalogue,
    CatalogueFiles,
    CompileCache,
    ProgramData,
    load_files,
)
from services.eligibility.facts import (
    CATALOGUE_DIR,
    FactCatalogue,
    FactLayers,
    MedianIncomeTable,
    MedianIncomeYear,
    ReportedValue,
    months_between,
    years_between,
)
from services.eligibility.rules import RuleInvalid, compile_version
from services.eligibility.specs import ProgramAttributes, VersionSpec

NOW = dt.datetime(2025, 6, 1, 9, tzinfo=dt.UTC)
DAY = dt.date(2025, 6, 1)
T, F, U = "passed", "failed", "unknown"


@pytest.fixture(scope="module")
def files() -> CatalogueFiles:
    return load_files()


@pytest.fixture(scope="module")
def catalogue(files: CatalogueFiles) -> Catalogue:
    return files.catalogue()


def leaf(id_: str, expr: str) -> dict[str, Any]:
    return {"id": id_, "label": {"ko": id_, "en": id_}, "legal_reference": "test", "expr": expr}


def program(code: str, rule: dict[str, Any], **version: Any) -> ProgramData:
    attributes = ProgramAttributes.model_validate(
        {"name": {"ko": code, "en": code}, "department": "welfare", "automatic": True, "sla_days": 5}
    )
    spec = VersionSpec.model_validate({"effective_from": "2020-01-01", "source": "test", "rule": rule, **version})
    return ProgramData(code, attributes, [(1, spec, False)])


def build(files: CatalogueFiles, *programs: ProgramData, medians: MedianIncomeTable | None = None) -> Catalogue:
    return Catalogue.build(
        facts=files.facts,
        medians=medians or MedianIncomeTable(files.median_years),
        programs=programs,
        life_events=files.life_events,
        departments=files.departments,
    )


def judge(catalogue: Catalogue, code: str, declared: dict[str, Any], day: dt.date = DAY, **layers: Any) -> Any:
    env = catalogue.environment(day, FactLayers(declared=declared, **layers), NOW)
    (result,) = catalogue.evaluate(env, [code])
    return result.determination(catalogue.facts)


# ---------------------------------------------------------------------------------------------- Kleene logic


KLEENE_AND = {(T, T): T, (T, F): F, (T, U): U, (F, F): F, (F, U): F, (U, U): U}
KLEENE_OR = {(T, T): T, (T, F): T, (T, U): T, (F, F): F, (F, U): U, (U, U): U}
KLEENE_NOT = {T: F, F: T, U: U}


def test_groups_follow_kleene_three_valued_logic(files: CatalogueFiles) -> None:
    a, b = leaf("a", "korean_national"), leaf("b", "has_spouse")
    negated = {"id": "n", "label": {"ko": "n", "en": "n"}, "not": a}
    cat = build(files, program("p_all", {"all": [a, b]}), program("p_any", {"any": [a, b]}), program("p_not", negated))
    value = {T: True, F: False}
    outcome = {T: "eligible", F: "ineligible", U: "needs_information"}
    for x, y in itertools.product((T, F, U), repeat=2):
        facts = {k: value[s] for k, s in (("korean_national", x), ("has_spouse", y)) if s != U}
        key = (x, y) if (x, y) in KLEENE_AND else (y, x)
        assert judge(cat, "p_all", facts)["outcome"] == outcome[KLEENE_AND[key]], (x, y)
        assert judge(cat, "p_any", facts)["outcome"] == outcome[KLEENE_OR[key]], (x, y)
    for x in (T, F, U):
        facts = {"korean_national": value[x]} if x != U else {}
        result = judge(cat, "p_not", facts)
        assert result["outcome"] == outcome[KLEENE_NOT[x]]
        assert {c["id"]: c["status"] for c in result["criteria"]} == {"n": KLEENE_NOT[x], "a": x}


def test_only_facts_that_could_change_the_outcome_are_asked(files: CatalogueFiles) -> None:
    rule = {
        "all": [
            leaf("nationality", "korean_national"),
            {"any": [leaf("spouse", "has_spouse"), leaf("single_parent", "single_parent")]},
        ]
    }
    cat = build(files, program("p", rule))
    # A failed member of an 'all' settles it: its unknown siblings are not asked for.
    assert judge(cat, "p", {"korean_national": False})["missing"] == []
    assert judge(cat, "p", {"korean_national": False})["outcome"] == "ineligible"
    # A passed member of an 'any' settles the 'any'.
    determined = judge(cat, "p", {"has_spouse": True})
    assert [m["name"] for m in determined["missing"]] == ["korean_national"]
    # Everything unknown: each fact once, in the order of the rule.
    asked = judge(cat, "p", {})
    assert [m["name"] for m in asked["missing"]] == ["korean_national", "has_spouse", "single_parent"]
    assert {m["asked_of"] for m in asked["missing"]} == {"resident"}
    assert all(m["question"]["ko"] and m["question"]["en"] for m in asked["missing"])


def test_a_missing_fact_never_counts_as_zero_or_false(files: CatalogueFiles) -> None:
    cat = build(
        files,
        program("low_income", leaf("low", "earned_income < 1000000")),
        program("not_single", {"id": "n", "label": {"ko": "n", "en": "n"}, "not": leaf("s", "single_parent")}),
        program("no_kids", leaf("none", "children_under_8 == 0")),
        program("or_branch", leaf("either", "household_size == 1 || earned_income < 1000")),
    )
    for code in ("low_income", "not_single", "no_kids"):
        result = judge(cat, code, {})
        assert result["outcome"] == "needs_information", code
        assert result["amount"] is None
    # Inside one expression too: an unknown that cannot matter is absorbed, one that can makes it unknown.
    assert judge(cat, "or_branch", {"household_size": 1})["outcome"] == "eligible"
    unknown = judge(cat, "or_branch", {"household_size": 3})
    assert unknown["outcome"] == "needs_information"
    assert [m["name"] for m in unknown["missing"]] == ["earned_income"]
    assert unknown["criteria"][0]["values"] == {"household_size": 3, "earned_income": None}
    assert unknown["criteria"][0]["sources"] == {"household_size": "declared", "earned_income": "missing"}


def test_inside_one_criterion_only_the_facts_its_result_waits_on_are_asked(files: CatalogueFiles) -> None:
    """A criterion whose result is unknown asks for the missing facts it reaches with what is known, not for every
    fact it names: a fact the known ones make irrelevant is not asked."""
    cat = build(
        files,
        program("rent", leaf("rent", "(tenure == 'monthly_rent' ? monthly_rent : 0) + lease_deposit / 100 >= 0")),
        program("couple", leaf("couple", "(has_spouse && monthly_wage > 0 ? 1 : 2) + household_size > 0")),
    )

    def asked(code: str, declared: dict[str, Any]) -> list[str]:
        result = judge(cat, code, declared)
        assert result["outcome"] == "needs_information"
        return [m["name"] for m in result["missing"]]

    assert asked("rent", {"tenure": "jeonse"}) == ["lease_deposit"], "no monthly rent on a jeonse"
    assert sorted(asked("rent", {"tenure": "monthly_rent"})) == ["lease_deposit", "monthly_rent"]
    assert asked("couple", {"has_spouse": False}) == ["household_size"], "no spouse, no spouse's wage"
    assert sorted(asked("couple", {"has_spouse": True})) == ["household_size", "monthly_wage"]
    # Nothing known: whether there is a spouse is asked (the wage may be too: either could settle it).
    assert {"has_spouse", "household_size"} <= set(asked("couple", {}))
    assert judge(cat, "couple", {"has_spouse": False, "household_size": 1})["outcome"] == "eligible"


def test_a_derived_fact_with_missing_inputs_asks_for_the_inputs(catalogue: Catalogue) -> None:
    env = catalogue.environment(DAY, FactLayers(declared={"earned_income": 100}), NOW)
    assert "age_years" not in env.values
    assert "median_income" not in env.values
    assert env.asks["age_years"] == ("birth_date",)
    assert env.asks["median_income"] == ("household_size",)
    assert env.asks["children_under_8"] == ("children_birth_dates",)
    (pension,) = catalogue.evaluate(env, ["senior_pneumococcal_vaccination"])
    assert pension.outcome.missing == ["birth_date"]


@pytest.mark.parametrize(
    ("born", "on", "months"),
    [
        (dt.date(2017, 6, 15), dt.date(2025, 6, 14), 95),  # the day before the 8th birthday
        (dt.date(2017, 6, 15), dt.date(2025, 6, 15), 96),  # the 8th birthday
        (dt.date(2025, 1, 31), dt.date(2025, 2, 28), 0),  # no 31 February: the month ends on the last day ...
        (dt.date(2025, 1, 31), dt.date(2025, 3, 1), 1),  # ... so the first month is complete on 1 March
        (dt.date(2024, 2, 29), dt.date(2025, 2, 28), 11),
        (dt.date(2024, 2, 29), dt.date(2025, 3, 1), 12),
        (dt.date(2025, 5, 1), dt.date(2025, 5, 1), 0),
    ],
)
def test_age_in_months_follows_the_civil_code(born: dt.date, on: dt.date, months: int) -> None:
    assert months_between(born, on) == months
    assert years_between(born, on) == months // 12


def test_the_median_income_table_is_versioned_reference_data(files: CatalogueFiles, catalogue: Catalogue) -> None:
    medians = catalogue.medians
    assert medians.amount(dt.date(2025, 12, 31), 4) == 6_097_773
    assert medians.amount(dt.date(2026, 1, 1), 4) == 6_494_738
    assert medians.amount(dt.date(2025, 6, 1), 8) == 8_064_805 + 2 * (8_064_805 - 7_108_192)
    # No table in force: programs reading the median need review, with the reason; the others are judged.
    only_2026 = MedianIncomeTable([y for y in files.median_years if y.year == 2026])
    cat = build(
        files,
        program("by_median", leaf("low", "earned_income <= median_income / 2")),
        program("by_age", leaf("old", "age_years >= 65")),
        medians=only_2026,
    )
    env = cat.environment(DAY, FactLayers(declared={"household_size": 2, "earned_income": 0,
                                                    "birth_date": "1950-01-01"}), NOW)  # fmt: skip
    results = {r.program.code: r.outcome for r in cat.evaluate(env, ["by_median", "by_age"])}
    assert results["by_median"].outcome == "needs_review"
    assert "no median income table is in force on 2025-06-01" in (results["by_median"].error or "")
    assert results["by_age"].outcome == "eligible"
    assert MedianIncomeTable([MedianIncomeYear(2025, dt.date(2025, 1, 1), {1: 1}, "x")]).in_force(DAY) is not None


# ---------------------------------------------------------------------------------------------- failing rules


def test_a_birth_after_the_application_date_is_not_given_a_negative_age(catalogue: Catalogue) -> None:
    future = {"child_birth_date": "2025-07-01", "korean_national": True}
    env = catalogue.environment(DAY, FactLayers(declared=future), NOW)
    assert "child_age_months" not in env.values
    (result,) = catalogue.evaluate(env, ["parent_benefit"])
    assert result.outcome.outcome == "needs_review"
    assert "child_birth_date (2025-07-01) is after the application date (2025-06-01)" in (result.outcome.error or "")


def test_a_rule_that_raises_needs_review_and_the_other_programs_are_still_judged(files: CatalogueFiles) -> None:
    cat = build(
        files,
        program("broken", leaf("divides", "100 / (household_size - household_size) > 1")),
        program("indexes", leaf("third_child", "children_birth_dates[2] > timestamp('2020-01-01T00:00:00Z')")),
        program("fine", leaf("one", "household_size == 1")),
    )
    env = cat.environment(DAY, FactLayers(declared={"household_size": 1, "children_birth_dates": []}), NOW)
    results = {r.program.code: r.determination(cat.facts) for r in cat.evaluate(env, ["broken", "indexes", "fine"])}
    assert results["broken"]["outcome"] == "needs_review"
    assert "divides" in results["broken"]["error"]
    assert "division by zero" in results["broken"]["error"]
    assert results["broken"]["missing"] == []
    assert results["indexes"]["outcome"] == "needs_review"
    assert results["fine"]["outcome"] == "eligible"


def test_a_fact_that_failed_fails_only_the_criteria_reading_it(
    files: CatalogueFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No district tier table is in force on DAY, so the tier's derivation fails: a criterion reading it makes its
    program need review, naming why; the criteria of every other program are judged as ever, each run once against
    the shared context (not through the slow path, whose checks the failed fact would otherwise cost them all)."""
    from services.eligibility.rules.evaluate import RuleRun

    cat = build(
        files,
        program("tiered", leaf("tier", "district_support_tier == 'capital_region'")),
        program("plain", {"all": [leaf("alone", "household_size == 1"), leaf("grown", "household_size < 3")]}),
    )
    env = cat.environment(DAY, FactLayers(declared={"household_size": 1, "district_code": "11440"}), NOW)
    assert "no district tier table is in force" in env.errors["district_support_tier"]
    slow: list[str] = []
    real_leaf = RuleRun.leaf

    def leaf_slowly(run: RuleRun, node: Any) -> Any:
        slow.append(node.id)
        return real_leaf(run, node)

    monkeypatch.setattr(RuleRun, "leaf", leaf_slowly)
    results = {r.program.code: r.determination(cat.facts) for r in cat.evaluate(env, ["tiered", "plain"])}
    assert results["tiered"]["outcome"] == "needs_review"
    assert "no district tier table is in force" in results["tiered"]["error"]
    assert results["plain"]["outcome"] == "eligible"
    assert [(c["id"], c["status"]) for c in results["plain"]["criteria"]] == [("alone", "passed"), ("grown", "passed")]
    assert slow == ["tier"]


def test_a_program_requiring_one_that_needs_review_needs_review(files: CatalogueFiles) -> None:
    requires = {"id": "req", "label": {"ko": "r", "en": "r"}, "program": "broken"}
    cat = build(files, program("broken", leaf("x", "1 / (household_size - 1) > 0")), program("user", requires))
    result = judge(cat, "user", {"household_size": 1})
    assert result["outcome"] == "needs_review"
    assert "broken" in result["error"]


# ---------------------------------------------------------------------------------------------- provenance


def test_authoritative_sources_override_declared_values_while_consent_and_validity_last(files: CatalogueFiles) -> None:
    cat = build(files, program("wages", leaf("low_wages", "earned_income < 3000000")))
    declared = {"earned_income": 500_000}
    tax = ReportedValue("earned_income", 900_000, "tax", "nts", NOW - dt.timedelta(days=3))
    newer = ReportedValue("earned_income", 2_000_000, "labour", "hrd", NOW - dt.timedelta(days=1))
    expired = ReportedValue("earned_income", 10, "labour", "hrd", NOW - dt.timedelta(hours=1), valid_until=NOW)
    no_authority = ReportedValue("earned_income", 1, "welfare", "ssis", NOW)

    def wages(reported: list[ReportedValue], consents: dict[str, bool]) -> tuple[Any, Any]:
        criterion = judge(cat, "wages", declared, reported=reported, consents=consents)["criteria"][0]
        return criterion["values"]["earned_income"], criterion["sources"]["earned_income"]

    both = {"department_data:tax": True, "department_data:labour": True}
    assert wages([], {}) == (500_000, "declared")
    assert wages([tax], {}) == (500_000, "declared"), "no consent: the department's value is not used"
    assert wages([tax], both) == (900_000, "department:tax")
    assert wages([tax, newer], both) == (2_000_000, "department:labour"), "the latest observation wins"
    assert wages([tax, newer], {"department_data:tax": True}) == (900_000, "department:tax")
    assert wages([tax, expired], both) == (900_000, "department:tax"), "an expired fact is not used"
    assert wages([no_authority], {"department_data:welfare": True}) == (500_000, "declared")


def test_a_derived_value_names_where_its_inputs_came_from(catalogue: Catalogue) -> None:
    # The registry overrides what was declared; a derived value names where its inputs came from.
    result = judge(catalogue, "livelihood_benefit", {"household_size": 1}, registry={"household_size": 2})
    assert result["criteria"][0]["sources"]["median_income"] == "derived:registry"
    assert result["criteria"][0]["values"]["median_income"] == 3_932_658


def test_declared_answers_of_the_wrong_type_are_ignored_not_guessed(catalogue: Catalogue) -> None:
    env = catalogue.environment(DAY, FactLayers(declared={"household_size": "three", "age_years": 40}), NOW)
    assert "household_size" not in env.values
    assert "age_years" not in env.values
    assert set(env.rejected) == {"household_size", "age_years"}


# ---------------------------------------------------------------------------------------------- validation


def version(rule: dict[str, Any] | None = None, **extra: Any) -> VersionSpec:
    return VersionSpec.model_validate(
        {"effective_from": "2030-01-01", "source": "test", "rule": rule or leaf("ok", "age_years > 1"), **extra}
    )


@pytest.mark.parametrize(
    ("spec", "field", "kind"),
    [
        (version(leaf("x", "salary > 3")), "rule.expr", "unknown_fact"),
        (version(leaf("x", "age_years >")), "rule.expr", "syntax"),
        (version(leaf("x", "birth_date > 5")), "rule.expr", "type_error"),  # a date compared with a number
        (version(leaf("x", "birth_date == 5")), "rule.expr", "type_error"),  # CEL would say false; we refuse
        (version(leaf("x", "employment_status == 'unemployd'")), "rule.expr", "type_error"),
        (version(leaf("x", "tenure in ['owner', 'renter']")), "rule.expr", "type_error"),
        (version(leaf("x", "household_size == '3'")), "rule.expr", "type_error"),
        (version(leaf("x", "recognised_income <= median_income * 0.32")), "rule.expr", "type_error"),
        (version(leaf("x", "age_years + 1")), "rule.expr", "type_error"),  # not true/false
        (version(leaf("x", "frobnicate(age_years)")), "rule.expr", "unknown_function"),
        (version(amount={"expr": "age_years * 1.5", "period": "once"}), "amount.expr", "type_error"),
        (version(amount={"expr": "age_years > 1", "period": "once"}), "amount.expr", "type_error"),
        (version(leaf("x", "a > 1"), definitions={"a": "b + 1", "b": "a + 1"}), "definitions.a", "cycle"),
        (version(definitions={"age_years": "1"}), "definitions.age_years", "invalid"),
        (version({"id": "p", "label": {"ko": "p", "en": "p"}, "program": "self_ref"}), "rule.program", "cycle"),
        (
            version({"id": "p", "label": {"ko": "p", "en": "p"}, "program": "nowhere"}),
            "rule.program",
            "unknown_program",
        ),
        (version({"all": [leaf("x", "true"), leaf("x", "false")]}), "rule.all[1].id", "duplicate"),
        (version({"expr": "age_years > 1"}), "rule", "malformed"),  # a leaf without id and label
        (version({"not": leaf("x", "true")}), "rule", "malformed"),  # a 'not' without a label
        (
            version({"id": "x", "label": {"ko": "x", "en": "x"}, "expr": "true", "all": [leaf("y", "true")]}),
            "rule",
            "malformed",
        ),
        (version(leaf("x", "true"), effective_to="2029-12-31"), "effective_to", "invalid"),
        (version(leaf("x", "children_birth_dates.exists(t, t > 0)")), "rule.expr", "type_error"),
        (version(leaf("x", "[1].exists(t, t > 0)"), definitions={"t": "1"}), "rule.expr", "invalid"),
        (version(relevant_when="age_years"), "relevant_when", "type_error"),
    ],
)
def test_invalid_rule_versions_are_refused_naming_the_field(
    files: CatalogueFiles, spec: VersionSpec, field: str, kind: str
) -> None:
    with pytest.raises(RuleInvalid) as caught:
        compile_version(spec, files.facts, {"self_ref", "other"}, own_code="self_ref", prefix="")
    assert any(e["field"] == field and e["type"] == kind for e in caught.value.errors), caught.value.errors


def test_a_deep_tree_is_refused(files: CatalogueFiles) -> None:
    node: dict[str, Any] = leaf("bottom", "true")
    for depth in range(rules.MAX_DEPTH + 1):
        node = {"all": [node, leaf(f"l{depth}", "true")]}
    with pytest.raises(RuleInvalid) as caught:
        compile_version(version(node), files.facts, set())
    assert caught.value.errors[0]["type"] == "malformed"


def test_programs_requiring_each_other_are_refused(files: CatalogueFiles) -> None:
    a = program("aa", {"id": "r", "label": {"ko": "r", "en": "r"}, "program": "bb"})
    b = program("bb", {"id": "r", "label": {"ko": "r", "en": "r"}, "program": "aa"})
    with pytest.raises(RuleInvalid) as caught:
        build(files, a, b)
    assert "require each other" in caught.value.errors[0]["message"]


def test_definitions_are_shown_with_their_values(files: CatalogueFiles, catalogue: Catalogue) -> None:
    alone = {"has_spouse": False, "children_birth_dates": [], "parent_birth_dates": [], "annual_household_income": 1,
             "household_assets": 0}  # fmt: skip
    single = judge(catalogue, "earned_income_tax_credit", alone)
    # The household is single, so whether there are two earners cannot matter and is not asked.
    assert single["outcome"] == "eligible"
    assert single["missing"] == []
    income = single["criteria"][0]
    assert income["values"]["income_limit"] == 22_000_000
    assert income["values"]["single"] is True
    assert income["sources"]["income_limit"] == "rule"
    assert income["values"]["spouse_income"] is None


# ---------------------------------------------------------------------------------------------- compile once


def cel_compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CEL sources compiled from now on, in order."""
    compiled: list[str] = []
    real_compile = cel.compile

    def counting(source: str) -> Any:
        compiled.append(source)
        return real_compile(source)

    monkeypatch.setattr(cel, "compile", counting)
    return compiled


def test_rules_are_compiled_once_and_evaluated_without_python_eval(
    files: CatalogueFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = cel_compiles(monkeypatch)
    monkeypatch.setattr(catalogue_module, "_compiled", OrderedDict())  # nothing compiled yet in this process
    cache = CompileCache()
    first = files.catalogue(cache)
    after_first = len(compiled)
    assert after_first > 0
    again = files.catalogue(cache)  # a reload: nothing new to compile
    assert len(compiled) == after_first
    assert again.programs["basic_pension"].versions[0].rule is first.programs["basic_pension"].versions[0].rule

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine must never use eval or exec")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    for _ in range(3):
        env = first.environment(DAY, FactLayers(declared={"birth_date": "1950-01-01", "household_size": 1}), NOW)
        first.evaluate(env, first.in_force(DAY))
    assert len(compiled) == after_first, "evaluation compiled something"


def test_a_catalogue_loaded_again_from_the_same_files_is_not_compiled_again_and_other_facts_are(
    files: CatalogueFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A service compiles its catalogue when it seeds and again when it serves it: the second finds every rule
    compiled (the facts' files are the same). A fact catalogue from other files, or made in code, compiles its own."""
    first = files.catalogue()
    compiled = cel_compiles(monkeypatch)
    again = load_files().catalogue()
    assert compiled == []
    assert again.programs["basic_pension"].versions[0].rule is first.programs["basic_pension"].versions[0].rule

    shutil.copytree(CATALOGUE_DIR, tmp_path / "catalogue")
    facts_file = tmp_path / "catalogue" / "facts.yaml"
    facts_file.write_text(facts_file.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    edited = load_files(tmp_path / "catalogue")
    assert edited.facts.fingerprint != files.facts.fingerprint
    other = edited.catalogue()
    assert compiled, "rules compiled against other facts"
    assert other.programs["basic_pension"].versions[0].rule is not first.programs["basic_pension"].versions[0].rule
    made = FactCatalogue(files.facts.types.values(), files.facts.income)
    assert made.fingerprint != files.facts.fingerprint


def test_other_programs_the_facts_make_relevant_are_judged_too(catalogue: Catalogue) -> None:
    env = catalogue.environment(DAY, FactLayers(declared={"birth_date": "1950-01-01"}), NOW)
    codes = catalogue.programs_for("job_loss", env)
    assert {"unemployment_benefit", "basic_pension", "senior_transport_card"} <= set(codes)
    young = catalogue.environment(DAY, FactLayers(declared={"birth_date": "1990-01-01"}), NOW)
    assert "basic_pension" not in catalogue.programs_for("job_loss", young)
