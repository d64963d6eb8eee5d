"""Cases from eligibility.determined, application.withdrawn and application.info_provided, over the real NATS and
database: which programs make a case, exactly one case per program whatever the redeliveries and the order, later
rounds updating the cases, and withdrawal closing them."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter

from shared.bus import MSG_ID_HEADER
from shared.events import ApplicationWithdrawn, EventData, subject_for
from tests.services.routing.support import cases_of, determined, emitted, feed, program
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.round_trips import objects_added, one_batch
from tests.support.services import RunningService
from tests.support.waiting import wait_until


def by_program(events: list[dict[str, object]]) -> Counter[tuple[object, object]]:
    return Counter((e["_type"], e["program_code"]) for e in events)


async def test_one_case_per_program_that_needs_a_person_whatever_the_redeliveries_and_the_order(
    routing: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    app = uuid.uuid4()
    round_1 = determined(
        app,
        [
            program("child_allowance", "eligible", automatic=True, amount=100_000),
            program("parent_benefit", "eligible"),  # eligible, but a caseworker confirms
            program("emergency_welfare", "needs_review"),
            program("basic_pension", "ineligible"),
            program("housing_benefit", "needs_information", department="housing", missing=["resident"]),
            program("infant_checkup", "needs_information", department="health", missing=["resident", "staff"]),
        ],
    )
    async with event_log(nats_server.url, bus_prefix) as log:
        first = await routing.publish(round_1)
        # The same event again beyond the broker's de-duplication (another message id): the inbox catches it.
        await routing.runtime.bus.js.publish(
            subject_for(bus_prefix, first.event_type), first.to_json(), headers={MSG_ID_HEADER: f"{first.id}-again"}
        )
        # The same round re-sent as a new event: already applied, so ignored.
        await routing.publish(round_1)
        await wait_until(routing.settled)

        cases = await cases_of(routing, app)
        assert set(cases) == {"child_allowance", "parent_benefit", "emergency_welfare", "infant_checkup"}
        assert cases["child_allowance"].status == "decided"
        assert cases["child_allowance"].automatic
        assert (cases["child_allowance"].decision, cases["child_allowance"].reason_code) == (
            "approved",
            "automatic_grant",
        )
        assert {c.status for code, c in cases.items() if code != "child_allowance"} == {"open"}
        assert cases["infant_checkup"].office_code == "JONGNO-HC"
        assert cases["emergency_welfare"].office_code == "JONGNO-CSC"
        assert by_program(await emitted(routing)) == {
            ("case.routed", "child_allowance"): 1,
            ("case.decided", "child_allowance"): 1,
            ("case.routed", "parent_benefit"): 1,
            ("case.routed", "emergency_welfare"): 1,
            ("case.routed", "infant_checkup"): 1,
        }
        grant = next(e for e in await emitted(routing, "case.routed") if e["program_code"] == "child_allowance")
        assert (grant["status"], grant["automatic"], grant["due_date"]) == ("closed", True, None)
        decided = (await emitted(routing, "case.decided"))[0]
        assert (decided["automatic"], decided["amount"], decided["decision"]) == (True, 100_000, "approved")

        # Round 2 re-evaluates; round 1 then arrives late, as a new event.
        round_2 = determined(
            app,
            [
                program("parent_benefit", "eligible"),
                program("emergency_welfare", "ineligible"),  # no longer applicable: its open case closes
                program("basic_pension", "needs_review"),  # now needs a person: its case is created now
                program("infant_checkup", "eligible", department="health", automatic=True, amount=50_000),
            ],
            round=2,
        )
        await feed(routing, round_2, round_1)

        cases = await cases_of(routing, app)
        assert {code: c.status for code, c in cases.items()} == {
            "child_allowance": "decided",
            "parent_benefit": "open",
            "emergency_welfare": "closed",
            "basic_pension": "open",
            "infant_checkup": "decided",
        }
        assert cases["emergency_welfare"].closed_reason == "no_longer_applicable"
        assert cases["infant_checkup"].decided_by == "system:eligibility"
        assert {c.round for c in cases.values()} == {1, 2}
        assert cases["parent_benefit"].round == 2
        events = await emitted(routing)
        assert by_program(events) == {
            ("case.routed", "child_allowance"): 1,
            ("case.decided", "child_allowance"): 1,
            ("case.routed", "parent_benefit"): 1,
            ("case.routed", "emergency_welfare"): 1,
            ("case.routed", "infant_checkup"): 1,
            ("case.closed", "emergency_welfare"): 1,
            ("case.routed", "basic_pension"): 1,
            ("case.decided", "infant_checkup"): 1,
        }
        closed = (await emitted(routing, "case.closed"))[0]
        assert closed["reason"] == "no_longer_applicable"
        # Every one of them reached the stream.
        for event_type, n in Counter(e["_type"] for e in events).items():
            await log.wait_for(event_type, lambda e: e.data["application_id"] == str(app), count=n)

        # Round 3: the program closed as no longer applicable needs a person again; its own case re-opens.
        closed_id = cases["emergency_welfare"].id
        await feed(routing, determined(app, [program("emergency_welfare", "needs_review")], round=3))
        reopened = (await cases_of(routing, app))["emergency_welfare"]
        assert (reopened.id, reopened.status, reopened.closed_reason, reopened.round) == (closed_id, "open", None, 3)
        rerouted = [e for e in await emitted(routing, "case.routed") if e["program_code"] == "emergency_welfare"]
        assert [(e["case_id"], e["status"]) for e in rerouted] == [(str(closed_id), "open")] * 2
        assert len(await cases_of(routing, app)) == 5


async def test_withdrawal_closes_the_open_cases_and_nothing_is_created_after_it(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(
        routing,
        determined(
            app,
            [
                program("emergency_welfare"),
                program("job_seeker_allowance", department="labour"),
                program("child_allowance", "eligible", automatic=True),
            ],
        ),
    )
    withdrawn = ApplicationWithdrawn(
        application_id=app, resident_id=uuid.uuid4(), reason="moved away", withdrawn_at=dt.datetime.now(dt.UTC)
    )
    await feed(routing, withdrawn, withdrawn)  # a redelivery closes nothing twice
    # A re-evaluation after the withdrawal creates nothing.
    await feed(routing, determined(app, [program("basic_pension")], round=2))

    cases = await cases_of(routing, app)
    assert {code: (c.status, c.closed_reason) for code, c in cases.items()} == {
        "emergency_welfare": ("closed", "withdrawn"),
        "job_seeker_allowance": ("closed", "withdrawn"),
        "child_allowance": ("decided", None),  # a decision already made stands
    }
    closed = await emitted(routing, "case.closed")
    assert sorted((e["program_code"], e["reason"]) for e in closed) == [
        ("emergency_welfare", "withdrawn"),
        ("job_seeker_allowance", "withdrawn"),
    ]

    # A withdrawal that overtakes the application's first determination leaves it with no case at all.
    early = uuid.uuid4()
    await feed(
        routing,
        ApplicationWithdrawn(application_id=early, resident_id=uuid.uuid4(), withdrawn_at=dt.datetime.now(dt.UTC)),
        determined(early, [program("emergency_welfare")]),
    )
    assert await cases_of(routing, early) == {}
    assert not [e for e in await emitted(routing) if e.get("application_id") == str(early)]


async def test_a_determinations_new_cases_their_history_and_events_are_written_together(
    routing: RunningService,
) -> None:
    """The cases a determination opens and grants are new in the consumer's transaction: no one else can have changed
    them, so they are not written one by one to check their version. Their rows, their history and the events that
    announce them go out in one INSERT per table, and a case granted at once is written decided, not written open
    and then updated. What is stored and announced is the same."""
    from typing import Any

    from sqlalchemy import event

    app = uuid.uuid4()
    programs = [
        program("child_allowance", "eligible", automatic=True, amount=100_000),
        program("first_meeting_voucher", "eligible", automatic=True, amount=2_000_000),
        program("parent_benefit", "eligible"),
        program("emergency_welfare", "needs_review"),
        program("infant_checkup", "needs_information", department="health", missing=["resident", "staff"]),
    ]
    statements: list[str] = []
    durable = routing.runtime.consumers["cases"].durable

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith(durable):
            statements.append(" ".join(statement.split()))

    engine = routing.runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await routing.publish(determined(app, programs))
        await wait_until(routing.settled)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    def count(prefix: str) -> int:
        return len([s for s in statements if s.startswith(prefix)])

    assert count("INSERT INTO cases ") == 1, statements
    assert count("INSERT INTO case_history ") == 1, statements
    assert count("INSERT INTO outbox ") == 1, statements
    assert count("UPDATE cases ") == 0, statements
    cases = await cases_of(routing, app)
    assert {code: c.status for code, c in cases.items()} == {
        "child_allowance": "decided",
        "first_meeting_voucher": "decided",
        "parent_benefit": "open",
        "emergency_welfare": "open",
        "infant_checkup": "open",
    }
    assert by_program(await emitted(routing)) == {
        **{("case.routed", code): 1 for code in cases},
        ("case.decided", "child_allowance"): 1,
        ("case.decided", "first_meeting_voucher"): 1,
    }


async def test_a_batch_looks_up_what_its_events_name_once_and_considers_each_household_once(
    routing: RunningService,
) -> None:
    """A batch of applications' events in one transaction: the applications they name, their cases and the
    residents' households are read once for the transaction (a query per kind at its start, Subscription.load), and
    the offices and their loads once as its cases are routed, not once per event; its new cases are written
    together; a resident's household is considered once for the transaction, after its events, though both the
    submission and the determination changed their cases; and every application gets its cases."""
    from tests.services.routing.support import submitted

    applications = [uuid.uuid4() for _ in range(4)]
    known, new = applications[:2], applications[2:]
    for application_id in known:  # submitted in an earlier batch: their records are in the database
        await routing.publish(submitted(application_id))
    await wait_until(routing.settled)
    batch: list[EventData] = [determined(uuid.uuid4(), [program("child_allowance", "eligible")])]
    for application_id in applications:
        if application_id in new:
            batch.append(submitted(application_id))
        batch.append(determined(application_id, [program("parent_benefit"), program("housing_voucher")]))
    work = await one_batch(routing, "cases", batch)

    for statements in work.transactions():
        reads = {
            "applications": [s for s in statements if s.startswith("SELECT applications.application_id")],
            "cases of applications": [s for s in statements if "FROM cases WHERE cases.application_id" in s],
            "households": [
                s for s in statements if s.startswith("SELECT resident_households.resident_id, resident_households.")
            ],
            "offices": [s for s in statements if s.startswith("SELECT offices.")],
            "offices' loads": [s for s in statements if "FROM cases WHERE cases.status" in s],
        }
        for kind, found in reads.items():
            assert len(found) <= 1, f"{kind} read {len(found)} times in one transaction: {statements}"
        new_cases = [s for s in statements if s.startswith("INSERT INTO cases")]
        assert len(new_cases) <= 1, f"a transaction's new cases are written together: {statements}"
    considered = [s for s in work.statements if "household_members.open_resident_id IN" in s]
    # Each resident's household once per transaction (the lead's, and the others' unless a batch was cut between a
    # submission and its determination), not once per event.
    assert len(considered) <= len(applications) + work.commits - 1, work.statements
    for application_id in applications:
        assert set(await cases_of(routing, application_id)) == {"parent_benefit", "housing_voucher"}


async def _history(routing: RunningService) -> tuple[Counter[tuple[uuid.UUID, str]], int]:
    """The history entries of each application's cases, by action; and how many entries have no case."""
    from sqlalchemy import select

    from services.routing.models import Case, CaseEntry

    async with routing.runtime.db.session() as session:
        rows = (await session.execute(select(Case.application_id, CaseEntry.action).join(Case))).all()
        orphans = len(
            (await session.scalars(select(CaseEntry.id).where(CaseEntry.case_id.not_in(select(Case.id))))).all()
        )
    return Counter((r.application_id, r.action) for r in rows), orphans


async def test_a_batchs_history_and_events_are_kept_aside_and_written_at_its_end(routing: RunningService) -> None:
    """The cases, history entries and events a batch adds are written in one core INSERT per table, not added to the
    session one object each (the unit of work cost more than the statement, with the writer lock held). An erasure
    later in the batch still finds and deletes the resident's cases before it and their history; what is stored and
    announced is the same."""
    from shared.events import ResidentErasureRequested

    applications = [uuid.uuid4() for _ in range(3)]
    erased = applications[1]
    erased_resident = uuid.uuid5(uuid.NAMESPACE_URL, str(erased))
    batch: list[EventData] = [determined(uuid.uuid4(), [program("child_allowance")])]  # taken alone
    for application_id in applications:
        batch.append(
            determined(
                application_id,
                [program("parent_benefit"), program("child_allowance", "eligible", automatic=True, amount=100_000)],
                resident_id=uuid.uuid5(uuid.NAMESPACE_URL, str(application_id)),
            )
        )
    batch.append(
        ResidentErasureRequested(
            erasure_id=uuid.uuid4(), resident_id=erased_resident, requested_at=dt.datetime.now(dt.UTC)
        )
    )
    durable = routing.runtime.consumers["cases"].durable
    with objects_added(durable) as added:
        work = await one_batch(routing, "cases", batch)

    assert not [a for a in added if a in ("Case", "CaseEntry", "OutboxRow")], added
    for statements in work.transactions():
        assert sum(s.startswith("INSERT INTO case_history") for s in statements) <= 1, statements
        assert sum(s.startswith("INSERT INTO outbox") for s in statements) <= 1, statements
    history, orphans = await _history(routing)
    assert orphans == 0
    for application_id in applications:
        # The erased resident's open case is gone with its history; their decided one is kept, with its history.
        routed = 1 if application_id == erased else 2
        expected = {(application_id, "routed"): routed, (application_id, "decided"): 1}
        assert {k: v for k, v in history.items() if k[0] == application_id} == expected, application_id
    events = await emitted(routing)
    assert [e["_type"] for e in events if e.get("application_id") == str(applications[0])] == [
        "case.routed",
        "case.routed",
        "case.decided",
    ]
    assert [e["_type"] for e in events if e.get("resident_id") == str(erased_resident)][-1] == "resident.erased"


async def test_later_events_of_a_batch_find_and_change_its_new_cases(routing: RunningService) -> None:
    """A batch's new cases are kept out of the session until they are written; its later events find them all the
    same — before they are written (a re-evaluation, a withdrawal), and after something in the batch made them be
    written early (a flush for a case changed, the offices' loads read again after a case closed) — and what they
    change is stored. The batch is applied in one transaction: no event of it finds an application without the case
    it was given a moment before, to make it again and fail on the unique key (then the batch went again, event by
    event, each retried alone)."""
    earlier = uuid.uuid4()
    await feed(routing, determined(earlier, [program("emergency_welfare")]))
    apps = {name: uuid.uuid4() for name in ("a", "b", "c", "d")}
    now = dt.datetime.now(dt.UTC)

    def withdrawn(name: str) -> ApplicationWithdrawn:
        resident_id = uuid.uuid5(uuid.NAMESPACE_URL, str(apps[name]))
        return ApplicationWithdrawn(application_id=apps[name], resident_id=resident_id, withdrawn_at=now)

    batch: list[EventData] = [
        determined(uuid.uuid4(), [program("child_allowance")]),  # taken alone
        determined(apps["a"], [program("parent_benefit"), program("child_allowance", "eligible", automatic=True)]),
        determined(apps["b"], [program("emergency_welfare")]),
        # A case of the batch re-evaluated before anything was written.
        determined(apps["b"], [program("emergency_welfare", "eligible")], round=2),
        # A case from before the batch re-evaluated: its flush writes the batch's new cases with it.
        determined(earlier, [program("emergency_welfare", "eligible")], round=2),
        # Cases written early, changed: a round that closes one, a withdrawal.
        determined(apps["b"], [program("emergency_welfare", "ineligible")], round=3),
        withdrawn("a"),
        determined(apps["c"], [program("parent_benefit")]),  # the offices' loads read again (a case closed)
        determined(apps["d"], [program("parent_benefit")]),
        withdrawn("d"),
        determined(apps["c"], [program("parent_benefit", "eligible", automatic=True)], round=2),
    ]
    durable = routing.runtime.consumers["cases"].durable
    with objects_added(durable) as added:
        work = await one_batch(routing, "cases", batch)

    assert "Case" not in added, added
    assert work.commits == 2, work.statements  # the event taken alone, then the batch at once
    states = {
        name: {code: (c.status, c.closed_reason, c.round) for code, c in (await cases_of(routing, app)).items()}
        for name, app in apps.items()
    }
    assert states == {
        "a": {"parent_benefit": ("closed", "withdrawn", 1), "child_allowance": ("decided", None, 1)},
        "b": {"emergency_welfare": ("closed", "no_longer_applicable", 2)},
        "c": {"parent_benefit": ("decided", None, 2)},
        "d": {"parent_benefit": ("closed", "withdrawn", 1)},
    }
    assert {(c.status, c.round) for c in (await cases_of(routing, earlier)).values()} == {("open", 2)}
    history, orphans = await _history(routing)
    assert orphans == 0
    assert {k[1]: v for k, v in history.items() if k[0] == apps["b"]} == {"routed": 1, "reevaluated": 1, "closed": 1}
    assert {k[1]: v for k, v in history.items() if k[0] == apps["c"]} == {"routed": 1, "reevaluated": 1, "decided": 1}
    events = await emitted(routing)
    assert [e["_type"] for e in events if e.get("application_id") == str(apps["d"])] == ["case.routed", "case.closed"]
    assert [e["_type"] for e in events if e.get("application_id") == str(apps["c"])] == [
        "case.routed",
        "case.decided",
    ]


async def test_an_event_that_fails_in_its_savepoint_takes_its_history_and_events_back(
    routing: RunningService,
) -> None:
    """A batch that fails is applied again with a savepoint each: what an event added before it failed (a case
    granted, its history, its events) goes with its savepoint's rollback, and the others' are written."""
    from tests.services.routing.support import office_body

    admin = routing.auth("admin")
    desk = await office_body(routing, "SEOUL-CITYHALL")
    csc = await office_body(routing, "JONGNO-CSC")
    for code, body in (
        ("SEOUL-CITYHALL", {**desk, "fallback": False}),
        ("JONGNO-CSC", {**csc, "departments": ["welfare"]}),
    ):
        response = await routing.client.put(f"/v1/offices/{code}", headers=admin, json=body)
        assert response.status_code == 200, response.text

    good, bad, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    granted_then_fails = [
        program("child_allowance", "eligible", automatic=True, amount=100_000),  # granted: a case, history, events
        program("registry_check", department="civil_registry"),  # then: no office serves it, and no desk
    ]
    fine = [program("parent_benefit"), program("child_allowance", "eligible", automatic=True, amount=100_000)]
    work = await one_batch(
        routing,
        "cases",
        [
            determined(uuid.uuid4(), [program("child_allowance")]),  # taken alone
            determined(good, fine),
            determined(bad, granted_then_fails),
            determined(after, fine),
        ],
    )
    # The lead's cases, then the others' in the transaction with savepoints, which commits (the last may be left to
    # the next transaction when writers wait): not written again one event at a time, as they would be had that
    # transaction failed on what the failed event left behind.
    assert work.count("INSERT INTO cases") == 3, work.statements
    [apart] = [t for t in work.transactions() if any(s.startswith("RELEASE SAVEPOINT") for s in t)]
    assert any(s.startswith("INSERT INTO cases") for s in apart), apart
    assert await cases_of(routing, bad) == {}
    assert not [e for e in await emitted(routing) if e.get("application_id") == str(bad)]
    history, orphans = await _history(routing)
    assert orphans == 0
    for application_id in (good, after):
        assert set(await cases_of(routing, application_id)) == {"parent_benefit", "child_allowance"}
        assert {k: v for k, v in history.items() if k[0] == application_id} == {
            (application_id, "routed"): 2,
            (application_id, "decided"): 1,
        }
        assert by_program([e for e in await emitted(routing) if e.get("application_id") == str(application_id)]) == {
            ("case.routed", "parent_benefit"): 1,
            ("case.routed", "child_allowance"): 1,
            ("case.decided", "child_allowance"): 1,
        }
    (letter,) = (await routing.client.get("/v1/admin/dead-letters", headers=admin)).json()
    assert str(bad) in letter["error"]
