"""The routing decision table, priority and SLA arithmetic: pure functions over the seeded offices of the city."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.routing.offices import load_seed_file
from services.routing.policy import NoOfficeServes, Offices, OfficeView, Rule, priority, route
from services.routing.settings import RoutingSettings
from services.routing.sla import WorkingCalendar

SEED = load_seed_file(RoutingSettings().offices_file)
OFFICES = [
    OfficeView(
        code=o.code,
        departments=frozenset(str(d) for d in o.departments),
        districts=frozenset(o.districts),
        languages=frozenset(o.languages),
        ceiling=o.capacity.active_case_ceiling,
        neighbours=tuple(o.neighbours),
        fallback=o.fallback,
    )
    for o in SEED
]
CEILING = {o.code: o.ceiling for o in OFFICES}
JONGNO, JUNG, YONGSAN, MAPO, GWANGJIN = "11110", "11140", "11170", "11440", "11215"


def full(*codes: str) -> dict[str, float]:
    """Loads at which each named office is exactly at its ceiling (full: load >= ceiling)."""
    return {code: CEILING[code] for code in codes}


# district, department, loads, language, overflow allowed -> office, rule, language matched
DECISION_TABLE = [
    # Jurisdiction: each district's own office, and shared offices serving several districts.
    (JONGNO, "welfare", {}, "ko", False, "JONGNO-CSC", Rule.JURISDICTION, True),
    (MAPO, "civil_registry", {}, "ko", True, "MAPO-CSC", Rule.JURISDICTION, True),
    (JUNG, "health", {}, "ko", False, "JUNG-HC", Rule.JURISDICTION, True),
    (JONGNO, "tax", {}, "ko", False, "JUNGBU-TAX", Rule.JURISDICTION, True),
    (JUNG, "tax", {}, "ko", False, "JUNGBU-TAX", Rule.JURISDICTION, True),
    (YONGSAN, "labour", {}, "ko", False, "SEOUL-EMP", Rule.JURISDICTION, True),
    (MAPO, "labour", {}, "ko", False, "SEOUL-WEST-EMP", Rule.JURISDICTION, True),
    (YONGSAN, "housing", {}, "ko", False, "CENTRAL-HOUSING", Rule.JURISDICTION, True),
    # No office serves the district: the city-wide fallback for the department.
    (GWANGJIN, "welfare", {}, "ko", True, "SEOUL-CITYHALL", Rule.FALLBACK, True),
    (GWANGJIN, "labour", {}, "en", False, "SEOUL-CITYHALL", Rule.FALLBACK, True),
    # Capacity: a full office overflows to a neighbour only if the program allows it.
    (JONGNO, "welfare", full("JONGNO-CSC"), "ko", True, "JUNG-CSC", Rule.OVERFLOW_CAPACITY, True),
    (JONGNO, "welfare", full("JONGNO-CSC"), "ko", False, "JONGNO-CSC", Rule.OVER_CAPACITY, True),
    (JONGNO, "welfare", full("JONGNO-CSC", "JUNG-CSC"), "ko", True, "JONGNO-CSC", Rule.OVER_CAPACITY, True),
    (MAPO, "housing", full("WEST-HOUSING"), "ko", True, "CENTRAL-HOUSING", Rule.OVERFLOW_CAPACITY, True),
    # Two neighbours with room: the least utilised (JONGNO 30/60 = 0.5 beats YONGSAN 30/45 = 0.67) ...
    (JUNG, "welfare", {**full("JUNG-CSC"), "JONGNO-CSC": 30, "YONGSAN-CSC": 30}, "ko", True, "JONGNO-CSC",
     Rule.OVERFLOW_CAPACITY, True),
    # ... unless the resident needs English, which only YONGSAN speaks.
    (JUNG, "welfare", {**full("JUNG-CSC"), "JONGNO-CSC": 30, "YONGSAN-CSC": 30}, "en", True, "YONGSAN-CSC",
     Rule.OVERFLOW_CAPACITY, True),
    # Language: a responsible office that speaks it; otherwise a neighbour that does when overflow is allowed ...
    (YONGSAN, "welfare", {}, "en", False, "YONGSAN-CSC", Rule.JURISDICTION, True),
    (JONGNO, "welfare", {}, "en", True, "JUNG-CSC", Rule.OVERFLOW_LANGUAGE, True),
    (MAPO, "welfare", {}, "en", True, "YONGSAN-CSC", Rule.OVERFLOW_LANGUAGE, True),
    # ... and otherwise the responsible office, flagged for an interpreter.
    (JONGNO, "welfare", {}, "en", False, "JONGNO-CSC", Rule.JURISDICTION, False),
    (MAPO, "welfare", full("YONGSAN-CSC"), "en", True, "MAPO-CSC", Rule.JURISDICTION, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("district", "department", "loads", "language", "overflow", "office", "rule", "matched"), DECISION_TABLE
)
def test_the_routing_decision_table(
    district: str,
    department: str,
    loads: dict[str, float],
    language: str,
    overflow: bool,
    office: str,
    rule: Rule,
    matched: bool,
) -> None:
    decision = route(
        OFFICES, loads, district_code=district, department=department, language=language, overflow_allowed=overflow
    )
    assert (decision.office_code, decision.rule, decision.language_matched) == (office, rule, matched)
    assert decision.interpreter_needed is not matched
    # The chosen office is one of the candidates recorded, with the load the decision saw.
    chosen = next(c for c in decision.candidates if c.office_code == office)
    assert chosen.load == loads.get(office, 0.0)
    assert chosen.ceiling == CEILING[office]


def test_the_decision_records_every_candidate_with_its_load_and_room() -> None:
    loads = {**full("JUNG-CSC"), "JONGNO-CSC": 12.5, "YONGSAN-CSC": 44.0}
    decision = route(OFFICES, loads, district_code=JUNG, department="welfare", language="ko", overflow_allowed=True)
    record = decision.as_record()
    assert record["rule"] == "overflow_capacity"
    assert record["office_code"] == "JONGNO-CSC"
    assert [(c["office_code"], c["role"], c["load"], c["has_room"]) for c in record["candidates"]] == [
        ("JUNG-CSC", "responsible", 45.0, False),
        ("JONGNO-CSC", "neighbour", 12.5, True),
        ("YONGSAN-CSC", "neighbour", 44.0, True),
    ]
    assert "JONGNO-CSC" in record["explanation"]
    # Every field of the decision and of its candidates, in order (as_record names them one by one).
    whole = {**asdict(decision), "rule": "overflow_capacity", "candidates": [asdict(c) for c in decision.candidates]}
    assert list(record.items()) == list(whole.items())


def test_neighbours_are_only_considered_when_the_program_allows_overflow() -> None:
    decision = route(OFFICES, full("JONGNO-CSC"), district_code=JONGNO, department="welfare", overflow_allowed=False)
    assert [c.office_code for c in decision.candidates] == ["JONGNO-CSC"]
    assert "does not allow overflow" in decision.explanation


def test_a_neighbour_that_does_not_handle_the_department_is_never_a_candidate() -> None:
    offices = [
        OfficeView("A", frozenset({"welfare"}), frozenset({"1"}), frozenset({"ko"}), 1, ("B", "C")),
        OfficeView("B", frozenset({"tax"}), frozenset({"2"}), frozenset({"ko"}), 10),
        OfficeView("C", frozenset({"welfare"}), frozenset({"3"}), frozenset({"ko"}), 10),
    ]
    decision = route(offices, {"A": 1}, district_code="1", department="welfare", overflow_allowed=True)
    assert decision.office_code == "C"
    assert [c.office_code for c in decision.candidates] == ["A", "C"]


def test_a_department_no_office_handles_is_held_at_a_city_wide_desk_and_only_without_one_is_nowhere() -> None:
    # City Hall no longer takes tax: nobody handles tax for a district outside the four.
    offices = [replace(o, departments=o.departments - {"tax"}) if o.code == "SEOUL-CITYHALL" else o for o in OFFICES]
    for loads, overflow in (({}, False), (full("SEOUL-CITYHALL"), True)):  # held there even when full
        decision = route(offices, loads, district_code=GWANGJIN, department="tax", overflow_allowed=overflow)
        assert (decision.office_code, decision.rule) == ("SEOUL-CITYHALL", Rule.UNSERVED)
        assert [(c.office_code, c.role) for c in decision.candidates] == [("SEOUL-CITYHALL", "fallback")]
        assert f"No office handles tax for district {GWANGJIN}" in decision.explanation
    # Inside the city the tax offices still serve: the other side of the rule.
    assert route(offices, {}, district_code=JONGNO, department="tax").rule is Rule.JURISDICTION

    # Of two city-wide desks, the one that speaks the resident's language, else the least loaded.
    desk = OfficeView("BUSAN-DESK", frozenset({"welfare"}), frozenset(), frozenset({"ko", "vi"}), 10, fallback=True)
    two = [*offices, desk]
    assert route(two, {}, district_code=GWANGJIN, department="tax", language="vi").office_code == "BUSAN-DESK"
    assert route(two, {"BUSAN-DESK": 5}, district_code=GWANGJIN, department="tax").office_code == "SEOUL-CITYHALL"

    no_desk = [replace(o, fallback=False) for o in offices]
    with pytest.raises(NoOfficeServes, match="no office handles tax for district 11215, and there is no city-wide"):
        route(no_desk, {}, district_code=GWANGJIN, department="tax")


# ---------------------------------------------------------------------------------------------- priority

CALENDAR = WorkingCalendar("KR")
MONDAY = dt.date(2025, 9, 1)


@pytest.mark.parametrize(
    ("vulnerability", "due", "escalated", "expected"),
    [
        ([], dt.date(2025, 9, 15), False, 1),  # nothing special, due in two weeks
        (["low_income"], dt.date(2025, 9, 15), False, 2),  # one flag
        (["low_income", "disability"], dt.date(2025, 9, 15), False, 3),  # two flags
        (["elderly_alone"], dt.date(2025, 9, 15), False, 3),  # one severe flag
        ([], dt.date(2025, 9, 3), False, 2),  # due in two working days
        ([], dt.date(2025, 8, 29), False, 2),  # overdue
        (["child_head_of_household"], dt.date(2025, 9, 2), False, 4),  # severe and due tomorrow
        (["single_parent", "disability", "low_income"], dt.date(2025, 9, 2), False, 4),  # capped at urgent
        ([], dt.date(2025, 9, 15), True, 4),  # escalated
    ],
)
def test_priority_rises_with_vulnerability_and_the_deadline(
    vulnerability: list[str], due: dt.date, escalated: bool, expected: int
) -> None:
    level = priority(
        vulnerability, due_date=due, today=MONDAY, calendar=CALENDAR, due_soon_working_days=2, escalated=escalated
    )
    assert level == expected


def test_due_soon_counts_working_days_not_calendar_days() -> None:
    friday = dt.date(2025, 9, 5)
    # Due the Wednesday after: Mon, Tue, Wed are three working days away, although only five calendar days.
    assert priority([], due_date=dt.date(2025, 9, 10), today=friday, calendar=CALENDAR, due_soon_working_days=2) == 1
    assert priority([], due_date=dt.date(2025, 9, 9), today=friday, calendar=CALENDAR, due_soon_working_days=2) == 2


# ---------------------------------------------------------------------------------------------- SLA arithmetic


def test_a_due_date_skips_the_weekend() -> None:
    friday = dt.date(2025, 9, 26)
    assert CALENDAR.add_working_days(friday, 3) == dt.date(2025, 10, 1)  # Mon 29, Tue 30, Wed 1
    assert CALENDAR.add_working_days(friday, 0) == friday


def test_a_due_date_skips_public_holidays() -> None:
    # 2025: Fri 3 Oct National Foundation Day, Chuseok 5-7 Oct with the substitute holiday on Wed 8, Hangul Day Thu 9.
    thursday = dt.date(2025, 10, 2)
    assert not CALENDAR.is_working_day(dt.date(2025, 10, 8))
    assert CALENDAR.add_working_days(thursday, 1) == dt.date(2025, 10, 10)
    assert CALENDAR.add_working_days(thursday, 3) == dt.date(2025, 10, 14)
    assert CALENDAR.working_days_between(thursday, dt.date(2025, 10, 14)) == 3


def test_a_calendar_loads_its_own_country_alone_and_another_country_still_loads() -> None:
    """The holidays of Korea without every other country's module (routing's memory), and another country's, asked
    for afterwards in the same process, still right."""
    probe = """
import datetime as dt, sys
from services.routing.sla import WorkingCalendar
korea = WorkingCalendar("KR")
assert korea.holiday_name(dt.date(2025, 10, 6)) == "Chuseok", korea.holiday_name(dt.date(2025, 10, 6))
countries = sorted(m for m in sys.modules if m.startswith("holidays.countries."))
assert countries == ["holidays.countries.south_korea"], countries
assert not WorkingCalendar("US").is_working_day(dt.date(2025, 7, 4))
assert WorkingCalendar("US").is_working_day(dt.date(2025, 10, 6))
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_extra_closure_days_from_settings_are_not_working_days() -> None:
    closed = WorkingCalendar("KR", [dt.date(2025, 10, 10)])
    assert closed.add_working_days(dt.date(2025, 10, 2), 3) == dt.date(2025, 10, 15)
    assert closed.holiday_name(dt.date(2025, 10, 10)) == "closure"


def test_a_pause_for_the_resident_moves_the_due_date_by_the_working_days_waited() -> None:
    due = CALENDAR.add_working_days(dt.date(2025, 10, 2), 3)  # Tue 14 Oct
    asked, answered = dt.date(2025, 10, 10), dt.date(2025, 10, 15)  # asked on Fri 10, answered on Wed 15
    paused = CALENDAR.working_days_between(asked, answered)  # Mon 13, Tue 14, Wed 15 (the weekend does not count)
    assert paused == 3
    assert CALENDAR.add_working_days(due, paused) == dt.date(2025, 10, 17)
    # Answered on the day it was asked: the clock lost nothing.
    assert CALENDAR.working_days_between(asked, asked) == 0


def test_a_case_is_late_once_a_working_day_after_its_due_date_begins() -> None:
    # Due on Thursday 2 Oct 2025, before Foundation Day (Fri 3), the weekend, Chuseok and Hangul Day (6-9 Oct).
    due = dt.date(2025, 10, 2)
    on_time = [due + dt.timedelta(days=n) for n in range(8)]  # Thu 2 .. Thu 9: no working day after the due date
    assert [CALENDAR.is_late(due, day) for day in on_time] == [False] * 8
    assert CALENDAR.is_late(due, dt.date(2025, 10, 10))  # Friday 10: the next working day
    # The same rule as a bound a query can use: late today means due before the last working day up to today.
    assert [CALENDAR.late_if_due_before(day) for day in (due, dt.date(2025, 10, 9), dt.date(2025, 10, 10))] == [
        due,
        due,
        dt.date(2025, 10, 10),
    ]


_CODES, _DEPARTMENTS, _DISTRICTS = ["A", "B", "C", "D"], ["welfare", "tax", "labour"], ["1", "2", "3"]
_OFFICE_VIEWS = st.builds(
    OfficeView,
    code=st.sampled_from(_CODES),
    departments=st.frozensets(st.sampled_from(_DEPARTMENTS)),
    districts=st.frozensets(st.sampled_from(_DISTRICTS)),
    languages=st.just(frozenset({"ko"})),
    ceiling=st.just(10.0),
    fallback=st.booleans(),
)


@given(
    offices=st.lists(_OFFICE_VIEWS, max_size=6),
    district=st.sampled_from(_DISTRICTS),
    department=st.sampled_from(_DEPARTMENTS),
)
def test_the_office_index_finds_the_offices_testing_every_office_finds(
    offices: list[OfficeView], district: str, department: str
) -> None:
    """Routing looks offices up in an index made once for a transaction's cases: the same offices, in code order,
    as testing each one (the last office of a code counting, as ever)."""
    index = Offices(offices)
    latest = sorted({o.code: o for o in offices}.values(), key=lambda o: o.code)
    assert index.serving(district, department) == [o for o in latest if o.serves(district, department)]
    assert index.fallback_for(department) == [o for o in latest if o.fallback and department in o.departments]
    assert index.fallbacks == [o for o in latest if o.fallback]
