"""The labour programs' own facts: the maternity claim deadline counted from the end of the leave (reported by the
employment centre or declared), and what each derivation does at its edges. The table cases in ``cases/`` cover the
programs' boundaries; this file covers the derivations and where their inputs come from."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.eligibility.catalogue import Catalogue, load_files
from services.eligibility.facts import FactLayers, ReportedValue

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
