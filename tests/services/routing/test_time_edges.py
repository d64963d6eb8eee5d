"""The SLA's edges in time, over the real NATS and database, with routing's "today" moved by hand:

- a paused case resumes from the day the resident answered (in the offices' time zone), however late routing hears of
  it, while its priority and days left are as of the day routing handles the answer; an answer given before a question
  was asked does not answer it;
- a case is on time through its whole due date and breached from the next working day (a weekend after a Friday due
  date is not yet a breach), and a decision counts as late by the same rule;
- a case that only a later evaluation round creates counts its SLA from that round's evaluation, in the offices' time
  zone, not from the application nor from the day routing handles the round.

November 2025 has no public holiday in Korea, so only weekends are skipped."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.events import ApplicationInfoProvided
from tests.services.routing.support import cases_of, context, determined, emitted, feed, program, timer
from tests.support.services import RunningService

SEOUL = ZoneInfo("Asia/Seoul")
MON, TUE, WED, THU, FRI, SAT, SUN = (dt.date(2025, 11, 3) + dt.timedelta(days=n) for n in range(7))
NEXT_MON, NEXT_TUE, NEXT_WED, NEXT_THU, NEXT_FRI = (dt.date(2025, 11, 10) + dt.timedelta(days=n) for n in range(5))


def seoul(day: dt.date, hour: int = 10, minute: int = 0, second: int = 0) -> dt.datetime:
    """A moment of ``day`` on the offices' clock (UTC+9): 00:00 in Seoul is 15:00 UTC the day before."""
    return dt.datetime.combine(day, dt.time(hour, minute, second), SEOUL)


@pytest.fixture
def routing_today() -> dt.date:
    return MON


def on(service: RunningService, day: dt.date) -> None:
    """Routing's clock reads ``day`` from now on (its handlers, its API and its SLA timer)."""
    context(service).clock.fixed_today = day


async def detail(service: RunningService, case_id: uuid.UUID) -> dict[str, Any]:
    response = await service.client.get(f"/v1/cases/{case_id}", headers=service.auth("admin"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------------------------------- a: the answer's day


async def test_a_paused_case_resumes_from_the_day_the_resident_answered_however_late_routing_handles_it(
    routing: RunningService,
) -> None:
    app = uuid.uuid4()
    codes = ("answered_same_day", "answered_before_midnight", "answered_after_midnight")
    await feed(routing, determined(app, [program(code, sla_days=5) for code in codes], application_date=MON))
    cases = await cases_of(routing, app)
    assert {c.due_date for c in cases.values()} == {NEXT_MON}  # five working days after Monday 3 Nov

    # Tuesday: the caseworker asks the resident about each; every clock stops (Tuesday itself counts as worked).
    on(routing, TUE)
    alice = routing.auth("caseworker", subject="caseworker:alice", offices=["JONGNO-CSC"])
    for case in cases.values():
        assert (await routing.client.post(f"/v1/cases/{case.id}/claim", headers=alice)).status_code == 200
        response = await routing.client.post(
            f"/v1/cases/{case.id}/request-info", headers=alice, json={"questions": [{"text": "Your lease?"}]}
        )
        assert response.json()["sla"]["paused_since"] == TUE.isoformat(), response.text

    # The resident answers on Tuesday, on Thursday one second before midnight and on Friday at midnight (Seoul);
    # routing is backlogged and handles all three answers only on Wednesday 12 Nov.
    answered = {
        "answered_same_day": seoul(TUE, 16),
        "answered_before_midnight": seoul(THU, 23, 59, 59),
        "answered_after_midnight": seoul(FRI, 0),
    }
    on(routing, NEXT_WED)
    await feed(
        routing,
        *(
            ApplicationInfoProvided(
                application_id=app,
                resident_id=cases[code].resident_id,
                answers={"lease": "yes"},
                case_ids=[cases[code].id],
                provided_at=at.astimezone(dt.UTC),
            )
            for code, at in answered.items()
        ),
    )

    # The pause ends on the answer's day: 0, 2 (Wed, Thu) and 3 (Wed, Thu, Fri) working days, not the 6 up to the
    # day routing handled them.
    expected = {
        "answered_same_day": (0, NEXT_MON),
        "answered_before_midnight": (2, NEXT_WED),
        "answered_after_midnight": (3, NEXT_THU),
    }
    resumed = await cases_of(routing, app)
    assert {code: (c.paused_working_days, c.due_date) for code, c in resumed.items()} == expected
    assert {c.status for c in resumed.values()} == {"assigned"}
    events = await emitted(routing, "case.resumed")
    assert {e["program_code"]: (e["paused_working_days"], e["due_date"]) for e in events} == {
        code: (days, due.isoformat()) for code, (days, due) in expected.items()
    }

    # What the caseworker sees is as of the day routing handled the answers (Wednesday 12 Nov): the first is two
    # working days overdue, the others are due today and tomorrow, so all rise in priority (due soon).
    views = {code: await detail(routing, case.id) for code, case in resumed.items()}
    assert {code: v["sla"]["working_days_left"] for code, v in views.items()} == {
        "answered_same_day": -2,
        "answered_before_midnight": 0,
        "answered_after_midnight": 1,
    }
    assert {code: v["priority"] for code, v in views.items()} == dict.fromkeys(codes, 2)
    for code, view in views.items():
        entry = view["history"][-1]
        assert entry["action"] == "info_provided"
        assert entry["details"]["answered_on"] == answered[code].date().isoformat()
        assert entry["details"]["paused_working_days"] == expected[code][0]


async def test_an_answer_given_before_a_question_was_asked_does_not_answer_it(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(routing, determined(app, [program("asked_before"), program("asked_after")], application_date=MON))
    cases = await cases_of(routing, app)
    alice = routing.auth("caseworker", subject="caseworker:alice", offices=["JONGNO-CSC"])
    for code, asked_on in (("asked_before", WED), ("asked_after", FRI)):
        on(routing, asked_on)
        assert (await routing.client.post(f"/v1/cases/{cases[code].id}/claim", headers=alice)).status_code == 200
        response = await routing.client.post(
            f"/v1/cases/{cases[code].id}/request-info", headers=alice, json={"questions": [{"text": "Your lease?"}]}
        )
        assert response.status_code == 200, response.text

    # The resident answered on Wednesday and on Thursday (for the whole application); routing hears of it on
    # Monday. Friday's question was asked after both answers: it still waits for its own.
    on(routing, NEXT_MON)
    await feed(
        routing,
        *(
            ApplicationInfoProvided(
                application_id=app,
                resident_id=cases["asked_before"].resident_id,
                answers={"lease": "yes"},
                provided_at=seoul(day, 18).astimezone(dt.UTC),
            )
            for day in (WED, THU)
        ),
    )
    after = await cases_of(routing, app)
    assert {code: (c.status, c.paused_since, c.paused_working_days) for code, c in after.items()} == {
        "asked_before": ("assigned", None, 0),  # answered the day it was asked: no working day lost
        "asked_after": ("waiting_on_resident", FRI, 0),
    }
    assert [e["program_code"] for e in await emitted(routing, "case.resumed")] == ["asked_before"]

    # Its own answer, on the Monday routing handles it, resumes it.
    await feed(
        routing,
        ApplicationInfoProvided(
            application_id=app,
            resident_id=cases["asked_after"].resident_id,
            answers={"lease": "yes"},
            case_ids=[cases["asked_after"].id],
            provided_at=seoul(NEXT_MON, 9).astimezone(dt.UTC),
        ),
    )
    resumed = (await cases_of(routing, app))["asked_after"]
    assert (resumed.status, resumed.paused_working_days, resumed.due_date) == ("assigned", 1, NEXT_TUE)


# ---------------------------------------------------------------------------------------------- b: the due date


async def test_a_case_is_on_time_through_its_due_date_and_breached_from_the_next_working_day(
    routing: RunningService,
) -> None:
    app = uuid.uuid4()
    programs = [program("due_wednesday", sla_days=2), program("due_friday", sla_days=4)]
    await feed(routing, determined(app, programs, application_date=MON))
    cases = await cases_of(routing, app)
    assert {code: c.due_date for code, c in cases.items()} == {"due_wednesday": WED, "due_friday": FRI}

    # One sweep of the SLA timer each day: the day before each due date, the day itself, the days after.
    breached_on: dict[dt.date, list[str]] = {}
    for day in (TUE, WED, THU, FRI, SAT, SUN, NEXT_MON, NEXT_TUE):
        on(routing, day)
        await timer(routing).sweep()
        breached_on[day] = sorted(e["program_code"] for e in await emitted(routing, "case.sla_breached"))
        friday = (await detail(routing, cases["due_friday"].id))["sla"]
        if day in (FRI, SAT, SUN):
            # Friday is the last day allowed; the weekend after it costs the office no working day.
            assert (friday["working_days_left"], friday["breached_on"]) == (0, None), day
        if day == NEXT_MON:
            assert (friday["working_days_left"], friday["breached_on"]) == (-1, NEXT_MON.isoformat())
    assert breached_on == {
        TUE: [],
        WED: [],  # due today: still on time
        THU: ["due_wednesday"],  # the next working day
        FRI: ["due_wednesday"],  # due today: still on time
        SAT: ["due_wednesday"],
        SUN: ["due_wednesday"],
        NEXT_MON: ["due_friday", "due_wednesday"],  # the next working day after Friday
        NEXT_TUE: ["due_friday", "due_wednesday"],  # once per due date
    }
    breached = {c.program_code: c for c in (await cases_of(routing, app)).values()}
    assert {code: c.breached_on for code, c in breached.items()} == {"due_wednesday": THU, "due_friday": NEXT_MON}
    events = {e["program_code"]: e for e in await emitted(routing, "case.sla_breached")}
    # The new promise: five working days from the breach.
    assert {code: (e["due_date"], e["expected_by"]) for code, e in events.items()} == {
        "due_wednesday": (WED.isoformat(), NEXT_THU.isoformat()),
        "due_friday": (FRI.isoformat(), dt.date(2025, 11, 17).isoformat()),
    }


async def test_a_decision_is_on_time_through_the_due_date_and_late_from_the_next_working_day(
    routing: RunningService,
) -> None:
    """The capacity report's SLA compliance uses the rule the timer breaches by (no timer pass runs here)."""
    alice = routing.auth("caseworker", subject="caseworker:alice", offices=["JONGNO-CSC"])
    decide = {"decision": "approved", "reason_code": "criteria_met", "note": "checked"}
    for day in (THU, FRI, SAT, NEXT_MON):
        on(routing, MON)
        app = uuid.uuid4()
        await feed(routing, determined(app, [program("review", sla_days=4)], application_date=MON))
        case = (await cases_of(routing, app))["review"]
        assert case.due_date == FRI
        on(routing, day)
        assert (await routing.client.post(f"/v1/cases/{case.id}/claim", headers=alice)).status_code == 200
        response = await routing.client.post(f"/v1/cases/{case.id}/decide", headers=alice, json=decide)
        assert response.status_code == 200, response.text

    supervisor = routing.auth("supervisor", offices=["JONGNO-CSC"])
    report = (await routing.client.get("/v1/capacity", headers=supervisor)).json()
    (jongno,) = report["offices"]
    (review,) = jongno["programs"]
    # Thursday, Friday (the due date) and Saturday are on time; Monday, the next working day, is late.
    assert (review["decided"], review["sla_compliance"]) == (4, 0.75)


# ---------------------------------------------------------------------------------------------- c: a later round


@pytest.mark.parametrize(
    ("evaluated", "due"),
    [
        (seoul(THU, 23, 59, 59), NEXT_THU),  # Thursday in Seoul: five working days from Thursday
        (seoul(FRI, 0), NEXT_FRI),  # Friday in Seoul (still Thursday in UTC): from Friday
        # Dated after routing's today (Monday 10 Nov; eligibility's clock runs ahead): from routing's today.
        (seoul(NEXT_TUE), dt.date(2025, 11, 17)),
    ],
)
async def test_a_case_first_needed_in_a_later_round_counts_its_sla_from_that_round(
    routing: RunningService, evaluated: dt.datetime, due: dt.date
) -> None:
    app = uuid.uuid4()
    # Round 1 (the application of Monday, evaluated on Wednesday): one program needs a caseworker, another needs the
    # resident's answer first, which makes no case.
    first = determined(
        app,
        [program("from_the_start", sla_days=5), program("after_the_answer", "needs_information", missing=["resident"])],
        application_date=MON,
    ).model_copy(update={"evaluated_at": seoul(WED).astimezone(dt.UTC)})
    await feed(routing, first)
    assert set(await cases_of(routing, app)) == {"from_the_start"}

    # Round 2 follows the answer; routing handles it only the Monday after.
    second = determined(
        app,
        [program("from_the_start", sla_days=5), program("after_the_answer", sla_days=5)],
        round=2,
        application_date=MON,
    ).model_copy(update={"evaluated_at": evaluated.astimezone(dt.UTC)})
    on(routing, NEXT_MON)
    await feed(routing, second)

    cases = await cases_of(routing, app)
    # What round 1 found counts from the application date, however late it was evaluated.
    assert cases["from_the_start"].due_date == NEXT_MON
    # What only round 2 found counts from round 2's evaluation (its day in Seoul, at the latest routing's today), not
    # from the application (due 10 Nov) nor from the day routing handled it (due 17 Nov) when that came later.
    assert (cases["after_the_answer"].due_date, cases["after_the_answer"].round) == (due, 2)
    routed = {e["program_code"]: e["due_date"] for e in await emitted(routing, "case.routed")}
    assert routed == {"from_the_start": NEXT_MON.isoformat(), "after_the_answer": due.isoformat()}
