"""Screening that runs by itself: a full run when the rules change, an incremental run for residents whose facts,
consents or answers changed, a daily run for residents whose dates crossed a boundary; each listed with its
progress; near misses asked one question, whose answer screens the resident again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest

from services.eligibility.context import EligibilityContext
from services.eligibility.models import (
    OpportunityRow,
    ResidentAnswerRow,
    ScreeningQuestionRow,
    ScreeningQueueRow,
    ScreeningReviewRow,
    ScreeningRow,
)
from services.eligibility.scheduler import ScreeningScheduler
from services.eligibility.triggers import next_month_change
from shared.events import ConsentChanged, HouseholdMember, ResidentUpdated, ScreeningQuestionAnswered
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

DAY = dt.date(2026, 3, 10)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def context(service: RunningService) -> EligibilityContext:
    return service.context(EligibilityContext)


def set_today(service: RunningService, day: dt.date) -> None:
    """The city's date as the service sees it (its clock pinned, as ONESTOP_ELIGIBILITY_TODAY pins it)."""
    context(service).eligibility.store.clock.fixed_today = day


async def tick(service: RunningService) -> dict[str, Any] | None:
    """One pass of the scheduler; the run it made, as the API shows it."""
    row = await context(service).scheduler.tick()
    if row is None:
        return None
    response = await service.client.get(f"/v1/screenings/{row.screening_id}", headers=service.auth("admin"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def registered(
    service: RunningService, born: dt.date, *, version: int = 1, household: list[HouseholdMember] | None = None,
    resident_id: uuid.UUID | None = None, **purposes: bool,
) -> uuid.UUID:  # fmt: skip
    resident_id = resident_id or uuid.uuid4()
    await service.publish(
        ResidentUpdated(resident_id=resident_id, version=version, birth_date=born, district_code="11440",
                        household=household or [], updated_at=now()),
    )  # fmt: skip
    if purposes:
        await consent(service, resident_id, 1, **purposes)
    return resident_id


async def consent(service: RunningService, resident_id: uuid.UUID, version: int, **purposes: bool) -> None:
    given = {k.replace("__", ":"): v for k, v in purposes.items()}
    await service.publish(
        ConsentChanged(resident_id=resident_id, version=version, consents=given, changed=list(given), changed_at=now())
    )


async def report(service: RunningService, resident_id: uuid.UUID, partner: str, facts: dict[str, Any]) -> None:
    observed = (now() - dt.timedelta(hours=1)).isoformat()
    body = {"resident_id": str(resident_id),
            "facts": [{"name": n, "value": v, "observed_at": observed} for n, v in facts.items()]}  # fmt: skip
    response = await service.client.post("/v1/facts", json=body, headers=service.auth("partner", partner_id=partner))
    assert response.status_code == 201, response.text


async def found(service: RunningService, resident_id: uuid.UUID) -> set[str]:
    async with service.runtime.db.session() as session:
        from sqlalchemy import select

        rows = await session.scalars(
            select(OpportunityRow.program_code).where(OpportunityRow.resident_id == resident_id)
        )
        return set(rows.all())


async def test_changes_queue_residents_and_only_they_are_screened_again(eligibility: RunningService) -> None:
    set_today(eligibility, DAY)
    senior = await registered(eligibility, dt.date(1950, 5, 1), proactive_screening=True, department_data__welfare=True,
                              department_data__civil_registry=True, department_data__tax=True)  # fmt: skip
    young = await registered(eligibility, dt.date(1992, 7, 20), proactive_screening=True)
    refusing = await registered(eligibility, dt.date(1950, 5, 1), proactive_screening=False)
    await wait_until(lambda: eligibility.settled("events"))

    full = await tick(eligibility)
    assert full is not None
    assert (full["kind"], full["status"]) == ("full", "completed")
    assert full["trigger"].startswith("catalogue revision")
    assert (full["residents_total"], full["residents_screened"], full["progress"]) == (2, 2, 1.0)
    assert await tick(eligibility) is None, "nothing changed: nothing runs (the daily run was the full one today)"
    assert await eligibility.count(ScreeningQueueRow) == 0

    # The senior's pension and assets reported by the departments; a child born to the young resident (registry).
    await report(eligibility, senior, "ssis", {"public_pension_income": 1_000_000, "financial_assets": 0, "debts": 0,
                                               "occupational_pension_recipient": False})  # fmt: skip
    await report(eligibility, senior, "nts", {"earned_income": 0, "business_income": 0, "residence_value": 0,
                                              "other_property_value": 0, "vehicle_value": 0})  # fmt: skip
    await report(eligibility, senior, "moi", {"korean_national": True})
    await registered(eligibility, dt.date(1992, 7, 20), version=2, resident_id=young,
                     household=[HouseholdMember(relation="child", birth_date=DAY - dt.timedelta(days=20))])  # fmt: skip
    await registered(eligibility, dt.date(1950, 5, 1), version=2, resident_id=refusing)
    await wait_until(lambda: eligibility.settled("events"))
    assert await eligibility.count(ScreeningQueueRow) == 2, "the refusing resident's change queues nobody"

    incremental = await tick(eligibility)
    assert incremental is not None
    assert incremental["kind"] == "incremental"
    assert set(incremental["trigger"].split(", ")) == {"facts_reported", "registry_updated"}
    assert (incremental["residents_total"], incremental["residents_screened"]) == (2, 2)
    assert incremental["opportunities"] > 0
    assert {"basic_pension", "senior_transport_card"} <= await found(eligibility, senior)
    assert await found(eligibility, refusing) == set()
    assert await eligibility.count(ScreeningQueueRow) == 0
    assert await tick(eligibility) is None

    # Consent given later queues the resident at once.
    await consent(eligibility, refusing, 2, proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    granted = await tick(eligibility)
    assert granted is not None
    assert (granted["kind"], granted["trigger"], granted["residents_screened"]) == ("incremental", "consent_granted", 1)
    assert "senior_transport_card" in await found(eligibility, refusing)


async def test_a_changed_rule_makes_a_full_run_and_each_run_is_listed(eligibility: RunningService) -> None:
    set_today(eligibility, DAY)
    await registered(eligibility, dt.date(1958, 1, 1), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    first = await tick(eligibility)
    assert first is not None
    assert first["kind"] == "full"

    admin = eligibility.auth("admin")
    program = (await eligibility.client.get("/v1/programs/senior_transport_card", headers=admin)).json()
    body = {k: program[k] for k in ("name", "department", "life_events", "automatic", "sla_days", "overflow_allowed",
                                    "case_weight", "proactive")}  # fmt: skip
    kept = ("version", "status", "origin", "created_at", "effective_to")
    body["version"] = {k: v for k, v in program["versions"][-1].items() if k not in kept and v is not None}
    body["version"]["effective_from"] = (DAY + dt.timedelta(days=400)).isoformat()
    put = await eligibility.client.put("/v1/programs/senior_transport_card", json=body, headers=admin)
    assert put.status_code == 200, put.text
    again = await tick(eligibility)
    assert again is not None
    assert again["kind"] == "full"
    assert revision(again) > revision(first), "a new catalogue revision"

    # The version takes effect on its day: a full run then too, though nobody edited anything that day.
    set_today(eligibility, DAY + dt.timedelta(days=400))
    effective = await tick(eligibility)
    assert effective is not None
    assert effective["kind"] == "full"
    assert effective["trigger"] == f"rules in force on {(DAY + dt.timedelta(days=400)).isoformat()} changed"

    listed = await eligibility.client.get("/v1/screenings", params={"limit": 2}, headers=admin)
    assert listed.status_code == 200
    page = listed.json()
    assert [s["screening_id"] for s in page["items"]] == [effective["screening_id"], again["screening_id"]]
    rest = await eligibility.client.get("/v1/screenings", params={"cursor": page["next_cursor"]}, headers=admin)
    assert [s["screening_id"] for s in rest.json()["items"]] == [first["screening_id"]]
    assert rest.json()["next_cursor"] is None
    fulls = await eligibility.client.get("/v1/screenings", params={"kind": "daily"}, headers=admin)
    assert fulls.json()["items"] == []
    bad = await eligibility.client.get("/v1/screenings", params={"cursor": "not-a-cursor"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.cursor"


# The writer lock is SQLite's (PostgreSQL serialises nothing of the kind): this runs on SQLite only.
@pytest.mark.parametrize("database_backend", ["sqlite"])
async def test_a_run_judges_its_residents_outside_any_write_transaction(
    eligibility: RunningService, database_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's rules are evaluated in a read-only unit of work; only what a page found is written, in a short write
    transaction after it. On SQLite that means the process's writer lock is not held while residents are judged (a
    request or a consumer waiting to write is never held up by a page of evaluations)."""
    from sqlalchemy.engine import make_url

    from services.eligibility import screening_runs
    from shared import sqlite

    set_today(eligibility, DAY)
    await registered(eligibility, dt.date(1950, 5, 1), proactive_screening=True, department_data__welfare=True)
    await registered(eligibility, dt.date(1992, 7, 20), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    writer = sqlite.writer_for(str(make_url(eligibility.runtime.db.url).database))
    assert writer is not None
    holding: list[tuple[int, bool]] = []
    judge_in_thread = screening_runs.judge_in_thread

    async def judging(judge: screening_runs.ProactiveJudge, page: Any, *args: Any, **kwargs: Any) -> Any:
        holding.append((len(page.ids), writer.owner is asyncio.current_task()))
        return await judge_in_thread(judge, page, *args, **kwargs)

    monkeypatch.setattr(screening_runs, "judge_in_thread", judging)
    run = await tick(eligibility)
    assert run is not None
    assert (run["kind"], run["status"], run["residents_screened"]) == ("full", "completed", 2)
    assert holding == [(2, False)], "the page judged in one table, not while this task held a write transaction"
    assert await eligibility.count(ScreeningReviewRow) == 2, "what the page found was written (each next review)"


async def test_a_run_keeps_nothing_of_its_pages_once_done(
    eligibility: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service idles between runs: once a run is done, nothing holds its judge (the catalogue compiled for the day,
    the awaited-fact memo), its pages' columns or what they found — the memory goes back with them."""
    import gc
    import weakref

    from services.eligibility import screening_runs

    set_today(eligibility, DAY)
    await registered(eligibility, dt.date(1950, 5, 1), proactive_screening=True, department_data__welfare=True)
    await registered(eligibility, dt.date(1992, 7, 20), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    held: list[weakref.ref[Any]] = []
    judge_in_thread = screening_runs.judge_in_thread

    async def judging(judge: screening_runs.ProactiveJudge, page: Any, *args: Any, **kwargs: Any) -> Any:
        judged = await judge_in_thread(judge, page, *args, **kwargs)
        held.extend([weakref.ref(judge), weakref.ref(page), weakref.ref(judged)])
        return judged

    monkeypatch.setattr(screening_runs, "judge_in_thread", judging)
    run = await tick(eligibility)
    assert run is not None
    assert (run["kind"], run["status"], run["residents_screened"]) == ("full", "completed", 2)
    assert len(held) == 3, "one page judged"
    gc.collect()
    assert [r() for r in held] == [None, None, None], "the judge, the page and what it found are let go"


async def test_a_run_that_fails_is_recorded_and_counted_as_failed(
    eligibility: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose judging raises ends failed, with the error on its record, and an operator's metrics count it as
    failed, not completed; a run of nobody to screen is counted completed."""
    from services.eligibility import screening_runs

    set_today(eligibility, DAY)
    empty = await tick(eligibility)  # the first full run, of nobody: ended without the runs' module
    assert empty is not None
    assert (empty["status"], empty["residents_screened"]) == ("completed", 0)
    assert eligibility.metric("onestop_eligibility_screenings_total", status="completed") == 1

    async def judging(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the judge broke")

    monkeypatch.setattr(screening_runs, "judge_in_thread", judging)
    await registered(eligibility, dt.date(1950, 5, 1), proactive_screening=True, department_data__welfare=True)
    await wait_until(lambda: eligibility.settled("events"))
    with pytest.raises(RuntimeError, match="the judge broke"):
        await context(eligibility).scheduler.tick()
    rows = (await eligibility.client.get("/v1/screenings", headers=eligibility.auth("admin"))).json()["items"]
    assert [(r["status"], r["error"]) for r in rows][:1] == [("failed", "RuntimeError: the judge broke")]
    assert eligibility.metric("onestop_eligibility_screenings_total", status="failed") == 1
    assert eligibility.metric("onestop_eligibility_screenings_total", status="completed") == 1


def revision(run: dict[str, Any]) -> int:
    assert str(run["trigger"]).startswith("catalogue revision ")
    return int(str(run["trigger"]).rsplit(" ", 1)[-1])


async def test_the_daily_run_screens_the_residents_whose_dates_crossed_a_boundary(eligibility: RunningService) -> None:
    """Turning 65 (a birthday) and turning 65 next month (the basic pension may be applied for from the month before:
    calendar months, which move on the first of a month)."""
    set_today(eligibility, dt.date(2026, 2, 20))
    birthday = await registered(eligibility, dt.date(1961, 2, 24), proactive_screening=True)
    next_month = await registered(eligibility, dt.date(1961, 4, 20), proactive_screening=True,
                                  department_data__welfare=True, department_data__tax=True,
                                  department_data__civil_registry=True)  # fmt: skip
    unmoved = await registered(eligibility, dt.date(1980, 2, 28), proactive_screening=True)
    await report(eligibility, next_month, "ssis", {"public_pension_income": 500_000, "financial_assets": 0,
                                                   "debts": 0, "occupational_pension_recipient": False})  # fmt: skip
    await report(eligibility, next_month, "nts", {"earned_income": 0, "business_income": 0, "residence_value": 0,
                                                  "other_property_value": 0, "vehicle_value": 0})  # fmt: skip
    await report(eligibility, next_month, "moi", {"korean_national": True})
    await wait_until(lambda: eligibility.settled("events"))
    full = await tick(eligibility)
    assert full is not None
    assert full["residents_screened"] == 3
    assert "senior_pneumococcal_vaccination" not in await found(eligibility, birthday), "64 on 20 February"
    assert "basic_pension" not in await found(eligibility, next_month), "778 calendar months in February"

    set_today(eligibility, dt.date(2026, 2, 23))
    quiet = await tick(eligibility)
    assert quiet is not None
    assert quiet["kind"] == "daily"
    assert (quiet["residents_total"], quiet["residents_screened"], quiet["opportunities"]) == (0, 0, 0)

    set_today(eligibility, dt.date(2026, 2, 24))
    daily = await tick(eligibility)
    assert daily is not None
    assert daily["kind"] == "daily"
    assert daily["residents_screened"] == 1, "only the resident whose birthday it is"
    assert "senior_pneumococcal_vaccination" in await found(eligibility, birthday)
    assert await tick(eligibility) is None, "once a day"

    set_today(eligibility, dt.date(2026, 3, 1))
    first_of_month = await tick(eligibility)
    assert first_of_month is not None
    assert first_of_month["kind"] == "daily"
    assert first_of_month["residents_screened"] == 3, "calendar-month ages move for everyone on the first"
    assert "basic_pension" in await found(eligibility, next_month), "from the month before the 65th birthday"
    assert await found(eligibility, unmoved) == set()


def test_the_next_monthly_change_of_a_date() -> None:
    assert next_month_change(dt.date(1961, 2, 24), dt.date(2026, 2, 20)) == dt.date(2026, 2, 24)
    assert next_month_change(dt.date(1961, 2, 24), dt.date(2026, 2, 24)) == dt.date(2026, 3, 24)
    # Born on the 31st: a month without one ends the period on its last day, so the month counts from the 1st after.
    assert next_month_change(dt.date(2025, 1, 31), dt.date(2025, 2, 10)) == dt.date(2025, 3, 1)
    assert next_month_change(dt.date(2025, 1, 31), dt.date(2025, 3, 1)) == dt.date(2025, 3, 31)
    assert next_month_change(dt.date(2024, 2, 29), dt.date(2025, 2, 1)) == dt.date(2025, 3, 1)
    assert next_month_change(dt.date(2026, 5, 1), dt.date(2026, 3, 1)) == dt.date(2026, 5, 1), "a date still ahead"


async def test_a_near_miss_is_asked_one_question_and_the_answer_screens_again(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    set_today(eligibility, DAY)
    resident = await registered(eligibility, dt.date(1990, 5, 1), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    async with event_log(nats_server.url, bus_prefix) as log:
        full = await tick(eligibility)
        assert full is not None
        assert full["questions"] >= 1
        asked = await log.wait_for("screening.question_asked", count=full["questions"])
        by_program = {e.data["program_code"]: e.data for e in asked}
        question = by_program["tomorrow_learning_card"]
        assert question["fact"]["name"] == "civil_servant"
        assert question["fact"]["question"]["en"] == "Are you currently a civil servant or a private-school teacher?"
        assert "국민내일배움카드" in question["why"]["ko"]
        assert "Tomorrow learning card" in question["why"]["en"]
        assert "long_term_care_assessment" not in by_program, "health data is never asked unprompted"
        assert await found(eligibility, resident) == set(), "a question, not an offer"

        again = await tick(eligibility)
        assert again is None
        assert await eligibility.count(ScreeningQuestionRow) == full["questions"], "asked once"

        answered = ScreeningQuestionAnswered(
            question_id=uuid.UUID(question["question_id"]), resident_id=resident, fact="civil_servant", value=False,
            acted_as="resident", answered_at=now(),
        )  # fmt: skip
        await eligibility.publish(answered)
        await wait_until(lambda: eligibility.settled("events"))
        assert await eligibility.count(ResidentAnswerRow, ResidentAnswerRow.resident_id == resident) == 1
        status = ScreeningQuestionRow.question_id == answered.question_id, ScreeningQuestionRow.status == "answered"
        assert await eligibility.count(ScreeningQuestionRow, *status) == 1

        rescreen = await tick(eligibility)
        assert rescreen is not None
        assert (rescreen["kind"], rescreen["trigger"]) == ("incremental", "question_answered")
        assert "tomorrow_learning_card" in await found(eligibility, resident)
        offers = await log.wait_for("eligibility.opportunity", count=rescreen["opportunities"])
        assert {e.data["program_code"] for e in offers} >= {"tomorrow_learning_card"}

    # An answer to a question that was never asked (or of another resident) changes nothing.
    await eligibility.publish(answered.model_copy(update={"question_id": uuid.uuid4()}))
    await wait_until(lambda: eligibility.settled("events"))
    assert await eligibility.count(ResidentAnswerRow) == 1
    assert await eligibility.count(ScreeningQueueRow) == 0


async def test_a_background_run_is_queued_and_followed_to_its_end(
    eligibility: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_today(eligibility, DAY)
    # A page per resident: each page read and judged while the one before is written (on SQLite in memory, one
    # after the other), every page counted once.
    monkeypatch.setattr(context(eligibility).eligibility.settings, "screening_batch_size", 1)
    for year in (1950, 1960, 1970):
        await registered(eligibility, dt.date(year, 6, 1), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    headers = {**eligibility.auth("supervisor", offices=["mapo"]), "Idempotency-Key": "background-1"}
    response = await eligibility.client.post("/v1/screenings", json={"background": True}, headers=headers)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert (queued["status"], queued["kind"], queued["residents_screened"]) == ("queued", "requested", 0)
    replay = await eligibility.client.post("/v1/screenings", json={"background": True}, headers=headers)
    assert (replay.status_code, replay.json()["screening_id"]) == (202, queued["screening_id"])

    ran = await tick(eligibility)
    assert ran is not None
    assert ran["screening_id"] == queued["screening_id"], "what an administrator asked for runs first"
    assert (ran["status"], ran["residents_total"], ran["residents_screened"], ran["progress"]) == (
        "completed", 3, 3, 1.0)  # fmt: skip
    assert ran["judgements"] == 3 * len(ran["programs"])
    assert await eligibility.count(ScreeningReviewRow) == 3
    assert ran["opportunities"] == await eligibility.count(OpportunityRow) > 0
    assert await eligibility.count(ScreeningRow) == 1
    nothing = await eligibility.client.post("/v1/screenings", json={"background": True, "programs": ["nope"]},
                                            headers=eligibility.auth("admin"))  # fmt: skip
    assert nothing.status_code == 422
    assert nothing.json()["errors"][0]["field"] == "programs[0]"
    assert await eligibility.count(ScreeningRow) == 1, "bad input writes nothing"


async def test_only_administrators_and_supervisors_list_screenings(eligibility: RunningService) -> None:
    expected = {
        "admin": 200, "supervisor": 200, "caseworker": 403, "resident": 403, "partner": 403, "service": 403,
    }  # fmt: skip
    claims: dict[str, dict[str, Any]] = {
        "supervisor": {"offices": ["mapo"]}, "caseworker": {"offices": ["mapo"]},
        "resident": {"resident_id": uuid.uuid4()}, "partner": {"partner_id": "nts"}, "service": {"service": "intake"},
    }  # fmt: skip
    for role, status in expected.items():
        response = await eligibility.client.get(
            "/v1/screenings", headers=eligibility.auth(role, **claims.get(role, {}))
        )
        assert response.status_code == status, (role, response.text)
    assert (await eligibility.client.get("/v1/screenings")).status_code == 401
    background = await eligibility.client.post(
        "/v1/screenings", json={"background": True}, headers=eligibility.auth("caseworker", offices=["mapo"])
    )
    assert background.status_code == 403
    assert await eligibility.count(ScreeningRow) == 0


async def test_an_application_from_an_offer_is_judged_for_that_program_with_what_the_resident_answered(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    from shared.events import ApplicationSubmitted, ResidentContext

    set_today(eligibility, DAY)
    resident = await registered(eligibility, dt.date(1990, 5, 1), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    full = await tick(eligibility)
    assert full is not None
    async with eligibility.runtime.db.session() as session:
        from sqlalchemy import select

        question = await session.scalar(
            select(ScreeningQuestionRow).where(
                ScreeningQuestionRow.resident_id == resident, ScreeningQuestionRow.fact == "civil_servant"
            )
        )
    assert question is not None
    await eligibility.publish(
        ScreeningQuestionAnswered(
            question_id=question.question_id,
            resident_id=resident,
            fact="civil_servant",
            value=False,
            acted_as="resident",
            answered_at=now(),
        )
    )
    application_id = uuid.uuid4()
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(
            ApplicationSubmitted(
                application_id=application_id,
                resident_id=resident,
                life_event="job_loss",
                answers={},
                channel="web",
                application_date=DAY,
                submitted_at=now(),
                resident=ResidentContext(district_code="11440"),
                program_codes=["tomorrow_learning_card"],
                opportunity_id=uuid.uuid4(),
            )
        )
        (determined,) = await log.wait_for("eligibility.determined")
    programs = determined.data["programs"]
    assert [p["program_code"] for p in programs] == ["tomorrow_learning_card"], "the offered program alone"
    assert programs[0]["outcome"] == "eligible", "the screening answer counts as declared"
    criterion = next(c for c in programs[0]["criteria"] if "civil_servant" in c["values"])
    assert criterion["sources"]["civil_servant"] == "declared"


async def test_an_erased_resident_s_screening_goes_with_them_and_they_are_screened_no_more(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    from sqlalchemy import select

    from services.eligibility import resident_data
    from services.eligibility.models import ScreeningReviewRow
    from services.eligibility.population import read_page
    from services.eligibility.repository import Repository
    from services.eligibility.screening_records import proactive_codes
    from services.eligibility.screening_runs import ProactiveJudge, screen_page
    from services.eligibility.triggers import ReviewCalendar
    from shared.clock import Clock
    from shared.events import ResidentErasureRequested

    set_today(eligibility, DAY)
    resident = await registered(eligibility, dt.date(1990, 5, 1), proactive_screening=True)
    await wait_until(lambda: eligibility.settled("events"))
    assert await tick(eligibility) is not None
    async with eligibility.runtime.db.session() as session:
        asked = ScreeningQuestionRow.resident_id == resident, ScreeningQuestionRow.fact == "civil_servant"
        question = await session.scalar(select(ScreeningQuestionRow).where(*asked))
        stale = await read_page(Repository(session), None, 10, [resident])  # a page read before the erasure
    assert question is not None
    assert stale.ids == [resident.hex]
    answered = ScreeningQuestionAnswered(
        question_id=question.question_id, resident_id=resident, fact="civil_servant", value=False,
        acted_as="resident", answered_at=now(),
    )  # fmt: skip
    await eligibility.publish(answered)
    await wait_until(lambda: eligibility.settled("events"))
    assert await tick(eligibility) is not None  # screened again with the answer: an offer
    await registered(eligibility, dt.date(1990, 5, 1), version=2, resident_id=resident)  # queued once more
    await wait_until(lambda: eligibility.settled("events"))

    # Their part shows what screening holds of them.
    own = eligibility.auth("resident", resident_id=resident)
    records = (await eligibility.client.get(f"/v1/residents/{resident}/data", headers=own)).json()["records"]
    for record_type in ("opportunities", "screening_questions", "screening_answers", "screening_reviews",
                        "screening_queue"):  # fmt: skip
        assert records[record_type], record_type

    request = ResidentErasureRequested(erasure_id=uuid.uuid4(), resident_id=resident, requested_at=now(),
                                       decision_files=[])  # fmt: skip
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(request, source="/onestop/intake")
        (answer,) = await log.wait_for("resident.erased")
    erased = answer.data["erased"]
    assert erased["opportunities"] >= 1
    assert erased["screening_questions"] >= 1
    assert erased["screening_answers"] == 1
    assert erased["screening_schedule"] == 2, "the review date and the pending re-screening"
    for model in (OpportunityRow, ScreeningQuestionRow, ResidentAnswerRow, ScreeningQueueRow, ScreeningReviewRow):
        assert await eligibility.count(model, model.resident_id == resident) == 0, model.__tablename__
    after = (await eligibility.client.get(f"/v1/residents/{resident}/data", headers=own)).json()["records"]
    assert after["screening_reviews"] == after["screening_questions"] == after["opportunities"] == []

    # Nothing queues them again, and a screening of everyone passes them by (no review date is written for them).
    await consent(eligibility, resident, 2, proactive_screening=True)
    await eligibility.publish(request.model_copy(update={"requested_at": now()}), source="/onestop/intake")
    await wait_until(lambda: eligibility.settled("events"))
    assert await eligibility.count(ScreeningQueueRow, ScreeningQueueRow.resident_id == resident) == 0
    headers = {**eligibility.auth("admin"), "Idempotency-Key": f"after-{resident}"}
    run = await eligibility.client.post("/v1/screenings", json={}, headers=headers)
    assert run.status_code == 201, run.text
    assert await eligibility.count(ScreeningReviewRow, ScreeningReviewRow.resident_id == resident) == 0

    # A page read just before the erasure finds and asks them nothing when it writes.
    ctx = context(eligibility)
    async with eligibility.runtime.db.session() as session:
        repo = Repository(session)
        catalogue = await ctx.eligibility.store.get(repo)
        judge = ProactiveJudge(catalogue, proactive_codes(catalogue, DAY), DAY, now())
        counts = await screen_page(repo, ctx.eligibility, judge, ReviewCalendar(catalogue, DAY, judge.read),
                                   uuid.UUID(run.json()["screening_id"]), stale, now())  # fmt: skip
    assert (counts.opportunities, counts.questions) == (0, 0)
    assert await eligibility.count(ScreeningReviewRow, ScreeningReviewRow.resident_id == resident) == 0

    # Were one written all the same (a race with the erasure), the housekeeping pass takes it away.
    async with eligibility.runtime.db.session() as session:
        session.add(ScreeningReviewRow(resident_id=resident, review_on=DAY, screened_on=DAY))
    purged = await resident_data.purge(eligibility.runtime.db, Clock.from_settings(ctx.settings), now())
    assert purged["screening_leftovers"] == 1
    assert await eligibility.count(ScreeningReviewRow, ScreeningReviewRow.resident_id == resident) == 0


async def test_a_wake_or_a_stop_that_comes_during_a_pass_is_not_lost(eligibility: RunningService) -> None:
    """Both are acted on when the pass ends, not after the check interval (minutes): a stop during the service's
    first pass once held its shutdown for the full ten seconds it allows."""
    passes: list[str] = []

    class Scheduler(ScreeningScheduler):
        async def tick(self) -> ScreeningRow | None:
            passes.append("pass")
            if len(passes) == 1:
                self.wake()  # an administrator asks for a run while this pass is going
            else:
                self.stop()  # the service shuts down while this pass is going
            return None

    scheduler = Scheduler(eligibility.runtime.db, context(eligibility).eligibility)
    assert scheduler.settings.screening_check_interval_seconds >= 30
    await asyncio.wait_for(scheduler.run(), timeout=5)
    assert passes == ["pass", "pass"]


def _day_near(anchor: dt.date) -> Any:
    """Dates on the boundaries a review day turns on: month ends, 29 February, the day before and after the anchor,
    and days within and past the day counts' horizon."""
    from hypothesis import strategies as st

    special = st.sampled_from([dt.date(2024, 2, 29), dt.date(2025, 1, 31), dt.date(2023, 3, 31), dt.date(2020, 8, 31),
                               anchor, anchor - dt.timedelta(days=1), anchor + dt.timedelta(days=1),
                               anchor - dt.timedelta(days=400), anchor - dt.timedelta(days=401)])  # fmt: skip
    return st.one_of(special, st.dates(dt.date(1930, 1, 1), anchor + dt.timedelta(days=60)))


def test_review_days_in_columns_are_the_per_record_ones() -> None:
    """``ReviewCalendar.next_reviews`` (a page at once, in columns) gives every resident the day ``next_review`` gives
    them one at a time: every date fact of the catalogue, lists of dates among them, on days around month ends."""
    import polars as pl
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from services.eligibility.catalogue import load_files
    from services.eligibility.fact_table import base_schema
    from services.eligibility.triggers import ReviewCalendar

    catalogue = load_files().catalogue()
    names = [t.name for t in catalogue.facts.types.values()
             if not t.derived and (t.type == "date" or (t.type == "list" and t.items == "date"))]  # fmt: skip
    schema = base_schema(catalogue.facts, names)
    assert any(isinstance(t, pl.List) for t in schema.values())
    assert pl.Date() in schema.values()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from([dt.date(2026, 2, 28), dt.date(2024, 2, 29), dt.date(2025, 12, 31), dt.date(2026, 3, 10)]),
           st.data())  # fmt: skip
    def check(today: dt.date, data: Any) -> None:
        rows = []
        for _ in range(data.draw(st.integers(1, 8))):
            row: dict[str, Any] = {}
            for name, dtype in schema.items():
                if data.draw(st.booleans()):
                    continue
                day = _day_near(today)
                row[name] = data.draw(st.lists(day, max_size=3)) if isinstance(dtype, pl.List) else data.draw(day)
            rows.append(row)
        for read in (None, frozenset({"child_age_days"}), frozenset()):
            calendar = ReviewCalendar(catalogue, today, read)
            table = pl.DataFrame([{n: r.get(n) for n in schema} for r in rows], schema=schema, orient="row")
            assert calendar.next_reviews(table).to_list() == [calendar.next_review(r) for r in rows], (today, rows)

    check()
