"""The retention tables of the four services (services/<service>/retention.yaml): every table that holds something
about a resident is in its service's table, every row names its source with the date relied on, every kept record
type says how long, from when and why; and the day a kept record is destroyed is computed as its row says."""

from __future__ import annotations

import datetime as dt
import importlib
import re

import pytest
from pydantic import ValidationError

from onestop.registry import SERVICES
from shared.personal_data import CountedFrom, Disposition, RetentionRule, RetentionSchedule

# Tables that hold nothing about any one resident, and why.
NOT_ABOUT_RESIDENTS: dict[str, dict[str, str]] = {
    "intake": {},
    "eligibility": {
        "programs": "the catalogue",
        "rule_versions": "the catalogue",
        "median_incomes": "reference figures",
        "catalogue_state": "the catalogue's revision",
        "screenings": "counts of a screening run, no resident",
        "screening_schedule": "the scheduler's memory and lease, no resident",
    },
    "routing": {"offices": "offices and their capacity", "offerings": "partners' offerings"},
    "notify": {
        "partners": "partners and their names",
        "partner_grants": "what partners were granted",
        "subscriptions": "partners' subscriptions",
        "aggregate_periods": "the aggregate feed's periods",
        "aggregate_counts": "counts of at least the minimum group, no resident",
    },
}
# Every service: the inbox holds handled event ids only; the outbox holds events (pseudonymous) until the relay has
# published them, and the relay deletes them outbox_retention_hours (a day) later.
PLATFORM_TRANSIENT = {"inbox", "outbox"}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _schedule(service: str) -> RetentionSchedule:
    module = importlib.import_module(f"services.{service}.resident_data")
    schedule: RetentionSchedule = module.SCHEDULE
    return schedule


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_every_table_about_a_resident_is_in_its_service_s_retention_table(service: str) -> None:
    schedule = _schedule(service)
    assert schedule.service == service
    models = importlib.import_module(f"services.{service}.models")
    tables = set(models.Base.metadata.tables)
    listed = schedule.tables
    assert listed <= tables, f"{service} lists tables it does not have: {listed - tables}"
    missing = tables - listed - set(NOT_ABOUT_RESIDENTS[service]) - PLATFORM_TRANSIENT
    assert not missing, f"{service}'s retention table does not say what becomes of {sorted(missing)}"
    assert "audit_log" in listed, "the access log is kept, and says so"


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_every_row_names_its_source_and_every_kept_type_how_long_from_when_and_why(service: str) -> None:
    for rule in _schedule(service).rules:
        assert DATE.search(rule.legal_basis), f"{service}.{rule.record_type}: the date of the act relied on"
        assert rule.description.ko
        assert rule.description.en
        if rule.disposition is Disposition.KEEP:
            assert rule.years or rule.days
            assert rule.counted_from is not None
            assert rule.reason is not None
            assert rule.reason.ko
            assert rule.reason.en
        else:
            assert (rule.years, rule.days) == (0, 0), f"{service}.{rule.record_type}: erased at once has no period"


def test_periods_the_act_does_not_settle_say_so() -> None:
    """Where the period is a choice or the article uncertain, the row says "확인 필요" rather than guessing silently."""
    unsettled = {(s.name, r.record_type) for s in SERVICES for r in _schedule(s.name).rules if r.unsettled}
    assert ("intake", "decision_files") in unsettled, "the 5 years come from the office's records schedule"
    assert ("intake", "erasure_requests") in unsettled
    assert ("routing", "erasure_record") in unsettled


def _rule(**overrides: object) -> RetentionRule:
    values: dict[str, object] = {
        "record_type": "decision_files",
        "tables": ["cases"],
        "disposition": "keep",
        "description": {"ko": "결정 기록", "en": "Decision files"},
        "years": 5,
        "counted_from": "decision",
        "from_next_year": True,
        "reason": {"ko": "보존", "en": "Kept"},
        "legal_basis": "공공기록물 관리에 관한 법률 시행령 제26조 (as in force 2025-01-01)",
    }
    values.update(overrides)
    return RetentionRule.model_validate(values)


def test_a_public_record_s_period_starts_on_the_first_of_january_after_it_was_made() -> None:
    rule = _rule()
    assert rule.destroy_on(dt.date(2026, 3, 10)) == dt.date(2032, 1, 1)
    assert rule.destroy_on(dt.date(2026, 12, 31)) == dt.date(2032, 1, 1)
    assert rule.destroy_on(dt.date(2027, 1, 1)) == dt.date(2033, 1, 1)
    kept = rule.kept(3, dt.date(2026, 3, 10))
    assert (kept.count, kept.destroy_on, kept.record_type) == (3, dt.date(2032, 1, 1), "decision_files")


def test_records_kept_from_several_days_are_told_one_line_per_day_they_are_destroyed() -> None:
    kept = _rule().kept_each([dt.date(2026, 3, 10), dt.date(2027, 2, 1), dt.date(2026, 11, 30)])
    assert [(k.count, k.destroy_on) for k in kept] == [(2, dt.date(2032, 1, 1)), (1, dt.date(2033, 1, 1))]
    assert _rule().kept_each([]) == []


def test_a_period_from_the_day_itself_in_years_and_days() -> None:
    assert _rule(from_next_year=False, years=2).destroy_on(dt.date(2026, 3, 10)) == dt.date(2028, 3, 10)
    assert _rule(from_next_year=False, years=2).destroy_on(dt.date(2028, 2, 29)) == dt.date(2030, 2, 28)
    assert _rule(from_next_year=False, years=0, days=7).destroy_on(dt.date(2026, 12, 28)) == dt.date(2027, 1, 4)


@pytest.mark.parametrize(
    "overrides",
    [
        {"years": 0, "days": 0},
        {"counted_from": None},
        {"reason": None},
    ],
)
def test_a_kept_type_without_a_period_a_start_or_a_reason_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="needs a period, its start and a reason"):
        _rule(**overrides)


def test_an_erased_type_needs_no_period() -> None:
    rule = _rule(disposition="erase", years=0, counted_from=None, reason=None, from_next_year=False)
    assert rule.disposition is Disposition.ERASE
    assert rule.counted_from is None
    assert CountedFrom.DECISION.value == "decision"


def test_a_type_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        RetentionSchedule.model_validate({"service": "x", "rules": [_rule().model_dump(), _rule().model_dump()]})
