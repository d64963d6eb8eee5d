"""The labour programs' own facts: the maternity claim deadline counted from the end of the leave (reported by the
employment centre or declared), and what each derivation does at its edges. The table cases in ``cases/`` cover the
programs' boundaries; this file covers the derivations and where their inputs come from."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.eligibility.catalogue import Catalogue, load_files
from services.eligibility.facts import FactLayers, ReportedValue, registry_facts
from services.eligibility.screening import Screener

NOW = dt.datetime(2025, 6, 1, 9, tzinfo=dt.UTC)
LABOUR = {"department_data:labour": True}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_files().catalogue()


def judge(catalogue: Catalogue, code: str, day: dt.date, layers: FactLayers) -> dict[str, Any]:
    env = catalogue.environment(day, layers, NOW)
    (result,) = catalogue.evaluate(env, [code])
    return result.determination(catalogue.facts)


def criterion(determination: dict[str, Any], criterion_id: str) -> dict[str, Any]:
    return next(c for c in determination["criteria"] if c["id"] == criterion_id)


# ---------------------------------------------------------------------------------------------- maternity leave


@pytest.mark.parametrize(
    ("last_day", "day", "months"),
    [
        (dt.date(2025, 7, 14), dt.date(2025, 7, 14), -1),  # the leave's last day: not over yet
        (dt.date(2025, 7, 14), dt.date(2025, 7, 15), 0),
        (dt.date(2024, 6, 15), dt.date(2025, 6, 15), 11),  # the last day to claim
        (dt.date(2024, 6, 15), dt.date(2025, 6, 16), 12),
        (dt.date(2024, 5, 31), dt.date(2025, 5, 31), 11),  # a month's end
        (dt.date(2024, 5, 31), dt.date(2025, 6, 1), 12),
        (dt.date(2024, 2, 29), dt.date(2025, 2, 28), 11),  # no 29 February: the month's last day
        (dt.date(2024, 2, 29), dt.date(2025, 3, 1), 12),
        (dt.date(2024, 2, 28), dt.date(2025, 2, 28), 11),  # from 29 February, whose year has no such day
        (dt.date(2024, 2, 28), dt.date(2025, 3, 1), 12),
        (dt.date(2023, 2, 28), dt.date(2024, 2, 29), 11),  # from 1 March: ends the day before, 29 February
        (dt.date(2023, 2, 28), dt.date(2024, 3, 1), 12),
    ],
)
def test_the_maternity_claim_runs_twelve_months_from_the_day_after_the_leave(
    catalogue: Catalogue, last_day: dt.date, day: dt.date, months: int
) -> None:
    env = catalogue.environment(day, FactLayers(declared={"maternity_leave_end_date": last_day}), NOW)
    assert env.values["months_after_maternity_leave"] == months


def test_the_employment_centre_reports_the_end_of_the_leave_and_the_resident_is_not_asked(catalogue: Catalogue) -> None:
    employee = {"employment_status": "employed", "insured_days_total": 400, "monthly_wage": 2_000_000}
    day = dt.date(2025, 6, 1)
    asked = judge(catalogue, "maternity_leave_benefit", day, FactLayers(declared=employee))
    assert asked["outcome"] == "needs_information"
    assert [m["name"] for m in asked["missing"]] == ["maternity_leave_end_date"]

    # The employer's confirmation, as the employment centre reports it: it ended 13 months ago, so the claim is late,
    # whatever the resident declared — and without the resident's consent to labour data, the declaration stands.
    confirmation = ReportedValue(
        "maternity_leave_end_date", "2024-04-30", "labour", "ei-confirmation", NOW - dt.timedelta(days=2)
    )
    declared = {**employee, "maternity_leave_end_date": "2025-05-30"}
    reported = judge(catalogue, "maternity_leave_benefit", day,
                     FactLayers(declared=declared, reported=[confirmation], consents=LABOUR))  # fmt: skip
    deadline = criterion(reported, "within_12_months_of_leave_end")
    assert reported["outcome"] == "ineligible"
    assert deadline["status"] == "failed"
    assert deadline["values"]["months_after_maternity_leave"] == 13
    assert deadline["sources"]["months_after_maternity_leave"] == "derived:department:labour"

    unconsented = judge(catalogue, "maternity_leave_benefit", day,
                        FactLayers(declared=declared, reported=[confirmation]))  # fmt: skip
    assert unconsented["outcome"] == "eligible"
    assert criterion(unconsented, "within_12_months_of_leave_end")["sources"] == {
        "months_after_maternity_leave": "derived:declared"
    }


def test_a_maternity_leave_reported_by_another_department_is_not_used(catalogue: Catalogue) -> None:
    not_authority = ReportedValue("maternity_leave_end_date", "2020-01-01", "tax", "nts", NOW - dt.timedelta(days=1))
    layers = FactLayers(declared={"maternity_leave_end_date": "2025-05-30"}, reported=[not_authority],
                        consents={"department_data:tax": True})  # fmt: skip
    env = catalogue.environment(dt.date(2025, 6, 1), layers, NOW)
    assert env.values["months_after_maternity_leave"] == 0


def _civil_code_deadline(last_day: dt.date) -> dt.date:
    """The last day of "12 months after the leave ended", written out the way 민법 제157조·제160조 read, as an
    oracle independent of the derivation: the period starts the next day and ends the day before the same day 12
    months later; when that month has no such day, it ends on the month's last day."""
    start = last_day + dt.timedelta(days=1)
    try:
        return start.replace(year=start.year + 1) - dt.timedelta(days=1)
    except ValueError:  # a start on 29 February: the next February has no 29th
        return dt.date(start.year + 1, 2, 28)


def test_every_leave_ending_in_two_years_is_in_time_on_its_last_day_and_late_the_day_after(
    catalogue: Catalogue,
) -> None:
    employee = {"employment_status": "employed", "insured_days_total": 400, "monthly_wage": 2_000_000}
    first = dt.date(2023, 1, 1)
    for offset in range(731):  # 2023-01-01 .. 2024-12-31: both Februaries, every month's end
        last_day = first + dt.timedelta(days=offset)
        deadline = _civil_code_deadline(last_day)
        for day, outcome in ((deadline, "eligible"), (deadline + dt.timedelta(days=1), "ineligible")):
            layers = FactLayers(declared={**employee, "maternity_leave_end_date": last_day})
            got = judge(catalogue, "maternity_leave_benefit", day, layers)["outcome"]
            assert got == outcome, f"leave ending {last_day}, claimed {day}: {got}"


# ---------------------------------------------------------------------------------------------- parental leave


def _parental_leave_total(wage: int, months: int) -> int:
    """고용보험법 시행령 제95조① month by month, as an oracle: 100 % up to 2,500,000 for months 1-3, 100 % up to
    2,000,000 for months 4-6, 80 % up to 1,600,000 from month 7, never below 700,000."""
    total = 0
    for month in range(1, months + 1):
        if month <= 3:
            paid = min(wage, 2_500_000)
        elif month <= 6:
            paid = min(wage, 2_000_000)
        else:
            paid = min(wage * 80 // 100, 1_600_000)
        total += max(paid, 700_000)
    return total


@pytest.mark.parametrize("wage", [500_000, 700_000, 874_999, 1_000_000, 1_999_999, 2_000_000, 2_000_002, 2_500_001,
                                  3_000_000, 9_000_000])  # fmt: skip
def test_the_parental_leave_amount_follows_the_2025_steps_month_by_month(catalogue: Catalogue, wage: int) -> None:
    leave = {"employment_status": "employed", "insured_days_total": 200, "child_birth_date": "2024-03-10",
             "monthly_wage": wage, "parental_leave_extension": True}  # fmt: skip
    previous = 0
    for months in range(1, 19):
        result = judge(catalogue, "parental_leave_benefit", dt.date(2025, 6, 1),
                       FactLayers(declared={**leave, "parental_leave_months": months}))  # fmt: skip
        assert result["outcome"] == "eligible"
        assert result["amount"] == _parental_leave_total(wage, months), f"{months} months at {wage}"
        assert 700_000 <= result["amount"] - previous <= 2_500_000, "each month adds one month's benefit"
        previous = result["amount"]


# ---------------------------------------------------------------------------------------------- national employment


def test_the_registry_gives_the_family_unit_and_its_dependants(catalogue: Catalogue) -> None:
    """The family unit of 구직자취업촉진법 시행령 제2조①: spouse, parents and children, not the others at the
    address (siblings, grandparents, grandchildren, others)."""
    household: list[dict[str, Any]] = [
        {"relation": "spouse", "birth_date": "1986-05-01", "disability": True},  # working age, disabled: counts
        {"relation": "child", "birth_date": "2018-03-01"},  # counts
        {"relation": "parent", "birth_date": "1950-02-01"},  # 75: counts
        {"relation": "sibling", "birth_date": "2012-01-01"},  # a minor, but not in the family unit
        {"relation": "grandparent", "birth_date": "1940-01-01"},
        {"relation": "grandchild", "birth_date": "2022-01-01"},
        {"relation": "other", "birth_date": "1990-01-01", "disability": True},
    ]
    registry = registry_facts(birth_date=dt.date(1985, 1, 1), district_code="11440", household=household,
                              vulnerability=[])  # fmt: skip
    assert registry["household_size"] == 8
    assert registry["family_birth_dates"] == [dt.date(1986, 5, 1), dt.date(2018, 3, 1), dt.date(1950, 2, 1)]
    assert registry["family_disabled_birth_dates"] == [dt.date(1986, 5, 1)]

    declared = {"earned_income": 3_000_000, "business_income": 0, "public_pension_income": 0, "spouse_income": 0,
                "other_members_income": 0, "household_assets": 100_000_000, "employment_days_2y": 300}  # fmt: skip
    result = judge(catalogue, "national_employment_support", dt.date(2025, 6, 1),
                   FactLayers(declared=declared, registry=registry))  # fmt: skip
    assert result["outcome"] == "eligible"
    assert result["amount"] == 500_000 + 3 * 100_000
    # The threshold is the median for the household of eight, as the registry has it.
    income = criterion(result, "income_within_60_percent")
    assert income["sources"] == {"household_income": "derived:declared+registry", "median_income": "derived:registry",
                                 "threshold": "rule"}  # fmt: skip


def test_a_family_member_born_after_the_application_date_is_not_yet_a_dependant(catalogue: Catalogue) -> None:
    family = {"family_birth_dates": ["1986-05-01", "2025-07-01"], "family_disabled_birth_dates": ["2025-07-01"]}
    env = catalogue.environment(dt.date(2025, 6, 1), FactLayers(declared=family), NOW)
    assert env.values["employment_support_dependants"] == 0
    later = catalogue.environment(dt.date(2025, 7, 1), FactLayers(declared=family), NOW)
    assert later.values["employment_support_dependants"] == 1


def test_bulk_screening_agrees_with_the_per_application_engine_on_the_labour_programs(catalogue: Catalogue) -> None:
    codes = ["national_employment_support", "maternity_leave_benefit", "parental_leave_benefit", "unemployment_benefit"]
    base = {"birth_date": "1985-01-01", "earned_income": 1_000_000, "business_income": 0, "public_pension_income": 0,
            "spouse_income": 0, "other_members_income": 0, "household_assets": 0,
            "employment_days_2y": 150, "employment_status": "employed", "insured_days_total": 400,
            "monthly_wage": 2_300_000, "maternity_leave_end_date": "2024-06-15", "child_birth_date": "2024-04-20",
            "parental_leave_months": 12}  # fmt: skip
    households: list[list[dict[str, Any]]] = [
        [],
        [{"relation": "child", "birth_date": "2007-06-15"}, {"relation": "parent", "birth_date": "1955-06-15"}],
        [{"relation": "spouse", "birth_date": "1984-01-01", "disability": True},
         {"relation": "sibling", "birth_date": "2015-01-01"}],
    ]  # fmt: skip
    for day in (dt.date(2025, 6, 14), dt.date(2025, 6, 15), dt.date(2025, 6, 16), dt.date(2026, 1, 1)):
        screener = Screener(catalogue, codes, day, NOW)
        for household in households:
            registry = registry_facts(birth_date=None, district_code=None, household=household, vulnerability=None)
            layers = FactLayers(declared=base, registry=registry)
            found = {f.program.code: f.amount for f in screener.findings(layers)}
            env = catalogue.environment(day, layers, NOW)
            judged = {r.program.code: r.outcome.amount for r in catalogue.evaluate(env, codes)
                      if r.outcome.outcome == "eligible"}  # fmt: skip
            assert found == judged, f"{day} {household}"
