"""A caseworker's day over the HTTP API: claim, request information (the SLA pauses), the resident's answer (it
resumes), decide; supervisors assigning, transferring, escalating; notes; the queue's orders, filters and pages;
and bad input refused with nothing written and no event."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from sqlalchemy import func, select

from services.routing.models import Case, CaseEntry, platform
from shared.events import ApplicationInfoProvided
from tests.services.routing.support import (
    JONGNO,
    MAPO,
    cases_of,
    context,
    determined,
    emitted,
    feed,
    problem,
    program,
)
from tests.support.services import RunningService

THURSDAY = dt.date(2025, 10, 2)  # the day before the long Chuseok weekend of 2025


def caseworker(service: RunningService, name: str, office: str = "JONGNO-CSC") -> dict[str, str]:
    return service.auth("caseworker", subject=f"caseworker:{name}", offices=[office])


def supervisor(service: RunningService, office: str = "JONGNO-CSC") -> dict[str, str]:
    return service.auth("supervisor", subject=f"supervisor:{office.lower()}", offices=[office])


async def unchanged(service: RunningService, case_id: uuid.UUID, version: int, outbox_rows: int) -> None:
    """Nothing was written: the case kept its version and no event was added to the outbox."""
    async with service.runtime.db.session() as session:
        case = await session.get(Case, case_id)
        assert case is not None
        assert case.version == version
    assert len(await emitted(service)) == outbox_rows


async def test_a_case_from_claim_through_a_pause_for_the_resident_to_a_decision(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(routing, determined(app, [program("emergency_welfare", sla_days=3)], application_date=THURSDAY))
    case_id = (await cases_of(routing, app))["emergency_welfare"].id
    alice, bob = caseworker(routing, "alice"), caseworker(routing, "bob")
    client = routing.client

    response = await client.get(f"/v1/cases/{case_id}", headers=alice)
    assert response.status_code == 200, response.text
    case = response.json()
    # Due three working days after Thursday 2 Oct 2025: the 3rd and the Chuseok days (6-9 Oct) are holidays.
    assert case["sla"]["due_date"] == "2025-10-14"
    assert case["office_code"] == "JONGNO-CSC"
    assert case["routing"]["rule"] == "jurisdiction"
    assert case["routing"]["candidates"][0]["office_code"] == "JONGNO-CSC"
    assert [h["action"] for h in case["history"]] == ["routed"]
    reads = select(func.count()).select_from(platform.audit_log).where(platform.audit_log.c.record_id == str(case_id))
    async with routing.runtime.db.session() as session:
        assert await session.scalar(reads) == 1  # the read of personal data is audited

    response = await client.post(f"/v1/cases/{case_id}/claim", headers=alice)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["assignee"]) == ("assigned", "caseworker:alice")
    assert problem(await client.post(f"/v1/cases/{case_id}/claim", headers=bob), 409)["case_status"] == "assigned"
    problem(await client.post(f"/v1/cases/{case_id}/release", headers=bob), 409)
    version, outbox_rows = response.json()["version"], len(await emitted(routing))

    # Bad input: 422 naming the field, nothing written, no event.
    bad = await client.post(
        f"/v1/cases/{case_id}/decide",
        headers=alice,
        json={"decision": "approved", "reason_code": "income_above_threshold", "note": "ok"},
    )
    assert problem(bad, 422)["errors"][0]["field"] == "reason_code"
    bad = await client.post(f"/v1/cases/{case_id}/request-info", headers=alice, json={"questions": []})
    assert problem(bad, 422)["errors"][0]["field"] == "questions"
    bad = await client.post(
        f"/v1/cases/{case_id}/decide",
        headers=alice,
        json={"decision": "denied", "reason_code": "income_above_threshold", "note": "x", "amount": 5},
    )
    assert problem(bad, 422)["errors"][0]["field"] == "amount"
    await unchanged(routing, case_id, version, outbox_rows)

    # Friday 10 Oct: Alice asks the resident; the clock stops.
    context(routing).clock.fixed_today = dt.date(2025, 10, 10)
    response = await client.post(
        f"/v1/cases/{case_id}/request-info",
        headers=alice,
        json={"questions": [{"fact": "monthly_income", "text": "What was your income last month?"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "waiting_on_resident"
    assert response.json()["sla"]["paused_since"] == "2025-10-10"
    assert response.json()["sla"]["working_days_left"] is None
    asked = (await emitted(routing, "case.info_requested"))[0]
    assert asked["questions"] == [{"fact": "monthly_income", "text": "What was your income last month?"}]
    problem(await client.post(f"/v1/cases/{case_id}/request-info", headers=alice, json=asked), 422)
    problem(
        await client.post(f"/v1/cases/{case_id}/request-info", headers=alice, json={"questions": [{"text": "Again?"}]}),
        409,
    )

    # Wednesday 15 Oct: the answer arrives through intake; Mon 13, Tue 14 and Wed 15 were paused.
    context(routing).clock.fixed_today = dt.date(2025, 10, 15)
    await feed(
        routing,
        ApplicationInfoProvided(
            application_id=app,
            resident_id=uuid.uuid4(),
            answers={"monthly_income": 1_200_000},
            case_ids=[case_id],
            provided_at=dt.datetime.now(dt.UTC),
        ),
    )
    case = (await client.get(f"/v1/cases/{case_id}", headers=alice)).json()
    assert case["status"] == "assigned"
    assert case["sla"]["paused_since"] is None
    assert case["sla"]["paused_working_days"] == 3
    assert case["sla"]["due_date"] == "2025-10-17"
    assert case["sla"]["working_days_left"] == 2
    resumed = (await emitted(routing, "case.resumed"))[0]
    assert (resumed["case_id"], resumed["due_date"], resumed["paused_working_days"]) == (str(case_id), "2025-10-17", 3)

    response = await client.post(
        f"/v1/cases/{case_id}/decide",
        headers=alice,
        json={"decision": "approved", "reason_code": "criteria_met_after_information", "note": "Income confirmed."},
    )
    assert response.status_code == 200, response.text
    case = response.json()
    assert case["status"] == "decided"
    assert case["decision"]["reason_code"] == "criteria_met_after_information"
    assert case["decision"]["decided_by"] == "caseworker:alice"
    assert [h["action"] for h in case["history"]] == ["routed", "claimed", "info_requested", "info_provided", "decided"]
    decided = (await emitted(routing, "case.decided"))[0]
    assert (decided["decision"], decided["automatic"], decided["reason"]["en"]) == (
        "approved",
        False,
        "Criteria met once the requested information arrived",
    )
    problem(await client.post(f"/v1/cases/{case_id}/release", headers=alice), 409)
    problem(
        await client.post(
            f"/v1/cases/{case_id}/decide",
            headers=alice,
            json={"decision": "denied", "reason_code": "duplicate_benefit", "note": "changed my mind"},
        ),
        409,
    )
    assert [e["_type"] for e in await emitted(routing)] == [
        "case.routed",
        "case.assigned",
        "case.info_requested",
        "case.resumed",
        "case.decided",
    ]

    # Notes, with an idempotency key: the retry gets the first answer and writes nothing.
    key = {"Idempotency-Key": "note-1"}
    first = await client.post(f"/v1/cases/{case_id}/notes", headers=alice | key, json={"text": "Called the resident."})
    again = await client.post(f"/v1/cases/{case_id}/notes", headers=alice | key, json={"text": "Called the resident."})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    problem(await client.post(f"/v1/cases/{case_id}/notes", headers=alice | key, json={"text": "Other"}), 422)
    async with routing.runtime.db.session() as session:
        notes = await session.scalar(
            select(func.count()).where(CaseEntry.case_id == case_id, CaseEntry.action == "note")
        )
    assert notes == 1


async def test_supervisors_assign_transfer_and_escalate(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(routing, determined(app, [program("emergency_welfare"), program("senior_care", sla_days=10)]))
    cases = await cases_of(routing, app)
    case_id, other_id = cases["emergency_welfare"].id, cases["senior_care"].id
    client, boss, alice = routing.client, supervisor(routing), caseworker(routing, "alice")

    problem(await client.post(f"/v1/cases/{case_id}/assign", headers=alice, json={"assignee": "caseworker:alice"}), 403)
    response = await client.post(f"/v1/cases/{case_id}/assign", headers=boss, json={"assignee": "caseworker:carol"})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["assignee"]) == ("assigned", "caseworker:carol")
    assigned = (await emitted(routing, "case.assigned"))[-1]
    assert (assigned["assignee"], assigned["assigned_by"]) == ("caseworker:carol", "supervisor:jongno-csc")
    # Alice cannot decide Carol's case.
    body = {"decision": "denied", "reason_code": "duplicate_benefit", "note": "n"}
    problem(await client.post(f"/v1/cases/{case_id}/decide", headers=alice, json=body), 409)

    version, outbox_rows = response.json()["version"], len(await emitted(routing))
    for target, field_message in (("MAPO-TAX", "does not handle welfare"), ("NOPE-OFFICE", "no office")):
        bad = await client.post(
            f"/v1/cases/{case_id}/transfer", headers=boss, json={"office_code": target, "reason": "wrong office"}
        )
        error = problem(bad, 422)["errors"][0]
        assert error["field"] == "office_code"
        assert field_message in error["message"]
    await unchanged(routing, case_id, version, outbox_rows)

    response = await client.post(
        f"/v1/cases/{case_id}/transfer",
        headers=boss,
        json={"office_code": "MAPO-CSC", "reason": "The resident moved to Mapo-gu"},
    )
    assert response.status_code == 200, response.text
    moved = response.json()
    assert (moved["office_code"], moved["status"], moved["assignee"]) == ("MAPO-CSC", "open", None)
    assert moved["routing"]["rule"] == "transfer"
    assert moved["history"][0]["details"]["routing"]["office_code"] == "JONGNO-CSC"  # the original decision stays
    transferred = (await emitted(routing, "case.transferred"))[0]
    assert (transferred["from_office_code"], transferred["office_code"]) == ("JONGNO-CSC", "MAPO-CSC")
    assert transferred["office_name"]["en"] == "Seogyo-dong Community Service Centre"
    # It has left Jongno's queue: Jongno no longer sees it, Mapo does.
    problem(await client.get(f"/v1/cases/{case_id}", headers=alice), 404)
    mapo = caseworker(routing, "dan", "MAPO-CSC")
    assert (await client.get(f"/v1/cases/{case_id}", headers=mapo)).status_code == 200

    response = await client.post(f"/v1/cases/{case_id}/escalate", headers=mapo, json={"reason": "Resident in crisis"})
    assert response.status_code == 200, response.text
    assert (response.json()["escalated"], response.json()["priority"]) == (True, 4)
    escalated = (await emitted(routing, "case.escalated"))[0]
    assert (escalated["escalated_by"], escalated["reason"]) == ("caseworker:dan", "Resident in crisis")
    assert response.json()["history"][-1]["details"]["to"] == ["staff:mapo-csc-lead"]
    problem(await client.post(f"/v1/cases/{case_id}/escalate", headers=mapo, json={"reason": "again"}), 409)

    # Release by the supervisor returns a case to the queue.
    await client.post(f"/v1/cases/{other_id}/claim", headers=alice)
    response = await client.post(f"/v1/cases/{other_id}/release", headers=boss)
    assert (response.json()["status"], response.json()["assignee"]) == ("open", None)
    assert (await emitted(routing, "case.assigned"))[-1]["assignee"] is None


async def test_a_retried_claim_or_release_gets_the_first_answer_and_changes_nothing(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(routing, determined(app, [program("emergency_welfare")]))
    case_id = (await cases_of(routing, app))["emergency_welfare"].id
    client, alice = routing.client, caseworker(routing, "alice")
    claim_key, release_key = {"Idempotency-Key": "claim-1"}, {"Idempotency-Key": "release-1"}

    claimed = await client.post(f"/v1/cases/{case_id}/claim", headers=alice | claim_key)
    assert claimed.status_code == 200, claimed.text
    assert "Idempotent-Replayed" not in claimed.headers
    released = await client.post(f"/v1/cases/{case_id}/release", headers=alice | release_key)
    assert (released.status_code, released.json()["status"]) == (200, "open")

    # Without its key the release would now be a 409 (nobody holds the case); with it, the first answer comes back.
    again = await client.post(f"/v1/cases/{case_id}/release", headers=alice | release_key)
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (200, "true")
    assert again.json() == released.json()
    # The claim's retry answers what the claim answered then, and does not claim the case again.
    again = await client.post(f"/v1/cases/{case_id}/claim", headers=alice | claim_key)
    assert (again.status_code, again.headers.get("Idempotent-Replayed")) == (200, "true")
    assert again.json() == claimed.json()
    assert (again.json()["status"], again.json()["assignee"]) == ("assigned", "caseworker:alice")
    now = await client.get(f"/v1/cases/{case_id}", headers=alice)
    assert (now.json()["status"], now.json()["assignee"]) == ("open", None)
    assert [e["assignee"] for e in await emitted(routing, "case.assigned")] == ["caseworker:alice", None]
    problem(await client.post(f"/v1/cases/{case_id}/release", headers=alice), 409)


async def test_the_queue_puts_the_most_urgent_first_and_pages_through_everything(routing: RunningService) -> None:
    # Six cases: vulnerability flags and due dates decide the order.
    specs = [
        ("routine_late", [], 10),
        ("routine_early", [], 5),
        ("low_income", ["low_income"], 10),
        ("elderly_alone", ["elderly_alone"], 10),
        ("due_tomorrow", [], 1),  # Thursday + 1 working day = Friday 10 Oct: due soon
        ("two_flags_due_soon", ["single_parent", "disability"], 1),
    ]
    for code, flags, sla_days in specs:
        await feed(routing, determined(uuid.uuid4(), [program(code, sla_days=sla_days)], vulnerability=flags))
    # And one for another office, which never shows in Jongno's queue.
    await feed(routing, determined(uuid.uuid4(), [program("elsewhere")], district=MAPO))
    client, alice = routing.client, caseworker(routing, "alice")

    response = await client.get("/v1/queues/JONGNO-CSC", headers=alice)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["program_code"], i["priority"]) for i in items] == [
        ("two_flags_due_soon", 4),
        ("elderly_alone", 3),
        ("due_tomorrow", 2),  # priority 2, due 10 Oct
        ("low_income", 2),  # priority 2, due 23 Oct
        ("routine_early", 1),  # due 16 Oct
        ("routine_late", 1),  # due 23 Oct
    ]
    assert response.json()["next_cursor"] is None

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 4} if cursor is None else {"limit": 4, "cursor": cursor}
        page = (await client.get("/v1/queues/JONGNO-CSC", headers=alice, params=params)).json()
        seen += [i["program_code"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["program_code"] for i in items]

    async def codes(**params: str | int | list[str] | list[int]) -> list[str]:
        response = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params=params)
        assert response.status_code == 200, response.text
        return [i["program_code"] for i in response.json()["items"]]

    assert await codes(priority=2) == ["due_tomorrow", "low_income"]
    assert await codes(priority=[3, 4]) == ["two_flags_due_soon", "elderly_alone"]
    assert await codes(program=["routine_late", "elderly_alone"]) == ["elderly_alone", "routine_late"]
    assert await codes(due_before="2025-10-16") == ["two_flags_due_soon", "due_tomorrow"]
    await client.post(f"/v1/cases/{(await cases_of_code(routing, 'low_income'))}/claim", headers=alice)
    assert await codes(status="assigned") == ["low_income"]
    assert await codes(assignee="caseworker:alice") == ["low_income"]
    assert "low_income" not in await codes(unassigned=True)
    assert await codes(status="decided") == []

    bad = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"cursor": "not-a-cursor"})
    assert problem(bad, 422)["errors"][0]["field"] == "query.cursor"
    bad = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"priority": 9})
    assert problem(bad, 422)["errors"][0]["field"].startswith("query.priority")


async def test_each_order_of_the_queue_pages_through_every_case_once(routing: RunningService) -> None:
    # Cases that share their sort keys: the programs of one determination are created together (one created_at), the
    # same flags and SLA days give the same priority and due date, so only the id tells them apart.
    batches = [([], [5, 5, 10]), (["low_income"], [5, 1, 5, 10]), (["elderly_alone"], [10, 5]), ([], [1, 5, 10])]
    codes = iter(f"program_{n}" for n in range(100))
    for flags, days in batches:
        programs = [program(next(codes), sla_days=sla) for sla in days]
        await feed(routing, determined(uuid.uuid4(), programs, vulnerability=flags))
    client, alice = routing.client, caseworker(routing, "alice")
    everything = (await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"limit": 200})).json()["items"]
    assert len(everything) == sum(len(days) for _, days in batches)

    def created(case: dict[str, Any]) -> dt.datetime:
        return dt.datetime.fromisoformat(case["created_at"])

    expected = {
        "urgency": sorted(everything, key=lambda c: (-c["priority"], c["due_date"], uuid.UUID(c["id"]))),
        "due": sorted(everything, key=lambda c: (c["due_date"], -c["priority"], uuid.UUID(c["id"]))),
        "newest": sorted(everything, key=lambda c: (created(c), uuid.UUID(c["id"])), reverse=True),
    }
    # The data has what each order must get right: cases tied on every key but the id (in every order), cases due
    # the same day with another priority (the due order's second key), and the three orders differ.
    pairs = {sort: list(itertools.pairwise(cases)) for sort, cases in expected.items()}
    assert any((a["priority"], a["due_date"]) == (b["priority"], b["due_date"]) for a, b in pairs["urgency"])
    assert any(a["due_date"] == b["due_date"] and a["priority"] != b["priority"] for a, b in pairs["due"])
    assert any(created(a) == created(b) for a, b in pairs["newest"])
    assert len({tuple(c["id"] for c in cases) for cases in expected.values()}) == 3

    cursors: dict[str, str] = {}
    for sort, cases in expected.items():
        for limit in (1, 2, 3):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                params: dict[str, str | int] = {"sort": sort, "limit": limit}
                if cursor is not None:
                    params["cursor"] = cursor
                response = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params=params)
                assert response.status_code == 200, response.text
                page = response.json()
                assert page["sort"] == sort
                assert len(page["items"]) <= limit
                seen += [i["id"] for i in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                cursors[sort] = cursor
            assert seen == [c["id"] for c in cases], (sort, limit)

    # A cursor marks a place in the order it was made for only; an unknown order is refused.
    for made_for, used_with in (("urgency", "due"), ("due", "newest"), ("newest", "urgency")):
        params = {"sort": used_with, "cursor": cursors[made_for]}
        bad = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params=params)
        assert problem(bad, 422)["errors"][0]["field"] == "query.cursor"
    bad = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"cursor": cursors["urgency"]})
    assert bad.status_code == 200  # urgency is the default order
    bad = await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"sort": "oldest"})
    assert problem(bad, 422)["errors"][0]["field"] == "query.sort"


async def cases_of_code(service: RunningService, code: str) -> uuid.UUID:
    async with service.runtime.db.session() as session:
        found = await session.scalar(select(Case.id).where(Case.program_code == code))
    assert found is not None
    return found


async def test_a_resident_who_needs_english_is_routed_to_an_office_that_speaks_it(routing: RunningService) -> None:
    app = uuid.uuid4()
    await feed(
        routing,
        determined(
            app,
            [program("emergency_welfare", overflow=True), program("senior_care", overflow=False)],
            district=JONGNO,
            language="en",
        ),
    )
    cases = await cases_of(routing, app)
    assert (cases["emergency_welfare"].office_code, cases["emergency_welfare"].routing["rule"]) == (
        "JUNG-CSC",
        "overflow_language",
    )
    assert not cases["emergency_welfare"].interpreter_needed
    assert (cases["senior_care"].office_code, cases["senior_care"].interpreter_needed) == ("JONGNO-CSC", True)
    routed = {e["program_code"]: e for e in await emitted(routing, "case.routed")}
    assert "speaks 'en'" in routed["emergency_welfare"]["reason"]


async def test_a_queue_page_reads_the_office_and_its_cases_in_one_statement(routing: RunningService) -> None:
    """A page of a queue is one statement (the office, outer-joined to its cases: an office that does not exist is
    still a 404, one without a case an empty page), then its audit entry in a write transaction of its own."""
    from tests.support.round_trips import round_trips

    for code in ("first", "second"):
        await feed(routing, determined(uuid.uuid4(), [program(code)]))
    client, alice = routing.client, caseworker(routing, "alice")
    with round_trips(routing.runtime.db) as sent:
        response = await client.get("/v1/queues/JONGNO-CSC", headers=alice)
    assert response.status_code == 200, response.text
    assert sorted(i["program_code"] for i in response.json()["items"]) == ["first", "second"]
    reads = [s for s in sent if s.startswith("SELECT")]
    assert len(reads) == 1, reads
    assert [s.split(" (")[0] for s in sent if s.startswith("INSERT")] == ["INSERT INTO audit_log"]
    if routing.runtime.db.dialect == "postgresql":
        assert len(sent) == 4, sent  # BEGIN, the page, COMMIT; the audit entry, a transaction of its own
    else:
        assert len(sent) == 6, sent  # BEGIN, the page, COMMIT; BEGIN, the audit entry, COMMIT (the writer lock's)

    mapo = caseworker(routing, "mia", office="MAPO-CSC")
    empty = await client.get("/v1/queues/MAPO-CSC", headers=mapo)
    assert (empty.status_code, empty.json()["items"], empty.json()["next_cursor"]) == (200, [], None)
    problem(await client.get("/v1/queues/NOWHERE-CSC", headers=routing.auth("admin")), 404)
    problem(await client.get("/v1/queues/NOWHERE-CSC", headers=alice), 404)
    problem(await client.get("/v1/queues/MAPO-CSC", headers=alice), 403)
    problem(await client.get("/v1/queues/NOWHERE-CSC", headers=alice, params={"cursor": "x"}), 404)
    problem(await client.get("/v1/queues/JONGNO-CSC", headers=alice, params={"cursor": "x"}), 422)
