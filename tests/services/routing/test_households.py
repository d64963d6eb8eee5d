"""Integrated case management (통합사례관리): a household driven through opening (by the rule), a lead, consent-gated
reads of the members' department cases, a shared plan, a missed follow-up escalated, a conference and closure with
its later check — against the real bus and databases. And what does not open one, and bad input that writes
nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select

from services.routing.models import HouseholdCase, HouseholdEntry, platform
from shared.events import ApplicationSubmitted, Channel, ConsentChanged, EligibilityDetermined, ResidentContext
from tests.services.routing.support import (
    JONGNO,
    context,
    determined,
    emitted,
    feed,
    problem,
    program,
    timer,
)
from tests.support.services import RunningService

LEAD = {"subject": "caseworker:mina", "offices": ["JONGNO-HOPE"]}
OTHER_HOPE = {"subject": "caseworker:joon", "offices": ["JONGNO-HOPE"]}
HOPE_SUPERVISOR = {"subject": "staff:jongno-hope-lead", "offices": ["JONGNO-HOPE"]}
WELFARE = {"subject": "caseworker:alice", "offices": ["JONGNO-CSC"]}
CRISIS = ("crisis",)


def crisis_household(
    resident_id: uuid.UUID, application_id: uuid.UUID, *, vulnerability: tuple[str, ...] = ("crisis",)
) -> EligibilityDetermined:
    return determined(
        application_id,
        [
            program("livelihood_emergency", department="welfare"),
            program("medical_aid", department="health"),
            program("rent_support", department="housing"),
        ],
        resident_id=resident_id,
        vulnerability=vulnerability,
    )


def consent(resident_id: uuid.UUID, version: int, given: bool) -> ConsentChanged:
    return ConsentChanged(
        resident_id=resident_id,
        version=version,
        consents={"case_management": given},
        changed=["case_management"],
        changed_at=dt.datetime.now(dt.UTC),
    )


async def households_of(service: RunningService) -> list[HouseholdCase]:
    async with service.runtime.db.session() as session:
        return list((await session.execute(select(HouseholdCase))).scalars().all())


async def history_count(service: RunningService, household_case_id: uuid.UUID) -> int:
    async with service.runtime.db.session() as session:
        query = select(func.count()).where(HouseholdEntry.household_case_id == household_case_id)
        return int(await session.scalar(query) or 0)


async def call(service: RunningService, method: str, url: str, who: dict[str, Any], role: str = "caseworker",
               body: Any = None) -> Any:  # fmt: skip
    return await service.client.request(method, url, json=body, headers=service.auth(role, **who))


async def test_a_household_from_opening_to_closure(routing: RunningService) -> None:
    resident, partner_of_resident = uuid.uuid4(), uuid.uuid4()
    app, other_app = uuid.uuid4(), uuid.uuid4()
    # 1. Open cases in three departments with a crisis flag: the household case opens by itself, at the district's
    #    integrated case-management office, referencing the resident.
    await feed(routing, crisis_household(resident, app))
    [household] = await households_of(routing)
    hid = household.id
    assert (household.office_code, household.status, household.trigger) == ("JONGNO-HOPE", "open", "automatic")
    assert household.routing["department"] == "case_management"
    [opened] = await emitted(routing, "household_case.opened")
    assert opened["member_ids"] == [str(resident)]
    assert set(opened["departments"]) == {"welfare", "health", "housing"}
    assert set(opened) - {"_type"} == {"household_case_id", "member_ids", "district_code", "office_code",
                                         "office_name", "trigger", "departments", "opened_at"}  # fmt: skip
    # The household case weighs on its office's load like any case.
    office = (await call(routing, "GET", "/v1/offices/JONGNO-HOPE", {}, "admin")).json()
    assert office["load"]["open_cases"] == 1
    assert office["load"]["weighted_load"] == 3.0
    # The capacity view counts it per district; open data too, a count under the minimum group withheld.
    report = await call(routing, "GET", "/v1/capacity?office=JONGNO-HOPE", HOPE_SUPERVISOR, "supervisor")
    [hope] = report.json()["offices"]
    assert hope["household_cases"] == [{"district_code": JONGNO, "open": 1, "active": 0, "closed": 0}]
    assert (hope["open_cases"], hope["weighted_load"]) == (1, 3.0)
    rows = (await call(routing, "GET", "/v1/open-data/household_cases", {"partner_id": "bank"}, "partner")).json()[
        "rows"
    ]
    assert [(r["district_code"], r["opened"]) for r in rows] == [(JONGNO, None)]
    # A second determination of the same resident opens no second household case.
    await feed(routing, crisis_household(resident, other_app))
    assert len(await households_of(routing)) == 1

    # 2. A department caseworker sees that a household case exists and who leads it, never the case itself.
    welfare_case = (await call(routing, "GET", "/v1/queues/JONGNO-CSC", WELFARE)).json()["items"][0]["id"]
    seen = (await call(routing, "GET", f"/v1/cases/{welfare_case}", WELFARE)).json()
    assert seen["household"] == {"id": str(hid), "status": "open", "office_code": "JONGNO-HOPE",
                                 "office_name": opened["office_name"], "lead": None}  # fmt: skip
    problem(await call(routing, "GET", f"/v1/household-cases/{hid}", WELFARE), 404)

    # A caseworker of the office claims it; a second claim by someone else is refused; the supervisor reassigns.
    claimed = await call(routing, "POST", f"/v1/household-cases/{hid}/claim", OTHER_HOPE)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["lead"] == "caseworker:joon"
    assert claimed.json()["status"] == "active"
    problem(await call(routing, "POST", f"/v1/household-cases/{hid}/claim", LEAD), 409)
    problem(await call(routing, "POST", f"/v1/household-cases/{hid}/assign", OTHER_HOPE, body={"lead": "x"}), 403)
    reassigned = await call(routing, "POST", f"/v1/household-cases/{hid}/assign", HOPE_SUPERVISOR, "supervisor",
                            {"lead": "caseworker:mina"})  # fmt: skip
    assert reassigned.json()["lead"] == "caseworker:mina"
    seen = (await call(routing, "GET", f"/v1/cases/{welfare_case}", WELFARE)).json()
    assert seen["household"]["lead"] == "caseworker:mina"

    # Another member of the household (known to routing by a case of their own) is added by the lead.
    await feed(routing, determined(uuid.uuid4(), [program("job_seeker", department="labour")],
                                   resident_id=partner_of_resident))  # fmt: skip
    added = await call(routing, "POST", f"/v1/household-cases/{hid}/members", LEAD,
                       body={"resident_id": str(partner_of_resident)})  # fmt: skip
    assert added.status_code == 200, added.text
    assert {m["resident_id"] for m in added.json()["members"]} == {str(resident), str(partner_of_resident)}

    # 3. Without consent the lead sees the members, not their department cases; with it, each case (status, due
    #    date, decision), every such read in the access log naming the member.
    body = (await call(routing, "GET", f"/v1/household-cases/{hid}", LEAD)).json()
    assert [m["cases"] for m in body["members"]] == [None, None]
    await feed(routing, consent(resident, 1, True))
    body = (await call(routing, "GET", f"/v1/household-cases/{hid}", LEAD)).json()
    first, second = body["members"]
    assert first["consented"] is True
    assert second["consented"] is False
    assert second["cases"] is None
    assert {c["department"] for c in first["cases"]} == {"welfare", "health", "housing"}
    assert all(c["status"] == "open" and c["due_date"] for c in first["cases"])
    # A caseworker of the office who is not the lead sees the household case, not the department cases.
    other = (await call(routing, "GET", f"/v1/household-cases/{hid}", OTHER_HOPE)).json()
    assert other["members"][0]["cases"] is None
    async with routing.runtime.db.session() as session:
        reads = (
            await session.execute(
                select(platform.audit_log.c.resident_id, platform.audit_log.c.purpose).where(
                    platform.audit_log.c.action == "household_case.read"
                )
            )
        ).all()
    assert reads
    assert all(tuple(r) == (resident, "case_management") for r in reads)

    # 4. The plan: needs by domain, goals, services linked to a member's case, an offer-less referral to make.
    medical = next(c for c in first["cases"] if c["department"] == "health")
    plan = {
        "needs": [
            {"domain": "income", "assessment": "Main earner lost his job in September"},
            {"domain": "health", "assessment": "Untreated diabetes", "member_id": str(resident)},
        ],
        "goals": [
            {"key": "income", "domain": "income", "text": "Stable income within 3 months", "owner": "caseworker:mina",
             "target_date": "2026-01-15"},
            {"key": "care", "domain": "health", "text": "Regular treatment", "owner": "caseworker:mina",
             "target_date": "2025-12-01"},
        ],
        "services": [
            {"goal": "care", "kind": "program", "description": "Medical aid", "owner": "caseworker:alice",
             "due_on": "2025-10-20", "case_id": medical["case_id"]},
            {"goal": "income", "kind": "referral", "description": "Debt counselling", "owner": "caseworker:mina",
             "due_on": "2025-10-31", "service_type": "financial_counselling"},
        ],
    }  # fmt: skip
    changed = await call(routing, "PUT", f"/v1/household-cases/{hid}/plan", LEAD, body=plan)
    assert changed.status_code == 200, changed.text
    assert changed.json()["plan_version"] == 1
    [plan_event] = await emitted(routing, "household_case.plan_changed")
    assert plan_event["plan_version"] == 1
    assert plan_event["domains"] == ["income", "health"]
    assert set(plan_event["member_ids"]) == {str(resident), str(partner_of_resident)}
    # Only the lead (or a supervisor) changes the plan.
    problem(await call(routing, "PUT", f"/v1/household-cases/{hid}/plan", OTHER_HOPE, body=plan), 403)

    # 5. A follow-up due in 2 working days (Fri 10 Oct, Mon 13 Oct after Chuseok) is missed: the timer records it
    #    once, escalates the household case to the office's supervisors and announces it.
    created = await call(routing, "POST", f"/v1/household-cases/{hid}/follow-ups", LEAD,
                         body={"purpose": "Visit after the first payment", "due_in_working_days": 2})  # fmt: skip
    assert created.status_code == 201, created.text
    follow_up = created.json()
    assert follow_up["due_date"] == "2025-10-13"
    assert follow_up["owner"] == "caseworker:mina"
    clock = context(routing).clock
    clock.fixed_today = dt.date(2025, 10, 10)  # the working day before it falls due: nothing yet
    await timer(routing).sweep()
    assert await emitted(routing, "household_case.follow_up_due") == []
    clock.fixed_today = dt.date(2025, 10, 13)  # the due date itself: on time all day, and the lead is reminded once
    await timer(routing).sweep()
    await timer(routing).sweep()
    [reminder] = await emitted(routing, "household_case.follow_up_due")
    assert (reminder["follow_up_id"], reminder["overdue"], reminder["escalated"], reminder["due_date"]) == (
        follow_up["id"], False, False, "2025-10-13")  # fmt: skip
    body = (await call(routing, "GET", f"/v1/household-cases/{hid}", LEAD)).json()
    assert body["escalated"] is False
    assert body["history"][-1]["action"] == "follow_up_due"
    clock.fixed_today = dt.date(2025, 10, 14)
    await timer(routing).sweep()
    await timer(routing).sweep()  # a second pass records nothing more
    [_reminder, due] = await emitted(routing, "household_case.follow_up_due")
    assert (due["follow_up_id"], due["overdue"], due["escalated"], due["kind"]) == (
        follow_up["id"], True, True, "follow_up")  # fmt: skip
    body = (await call(routing, "GET", f"/v1/household-cases/{hid}", LEAD)).json()
    assert body["escalated"] is True
    assert body["follow_ups"][0]["missed_on"] == "2025-10-14"
    escalation = next(e for e in body["history"] if e["action"] == "escalated")
    assert escalation["details"] == {"reason": "follow_up_missed", "to": ["staff:jongno-hope-lead"]}
    done = await call(routing, "POST", f"/v1/household-cases/{hid}/follow-ups/{follow_up['id']}/done", LEAD,
                      body={"result": "Visited; payment arrived"})  # fmt: skip
    assert done.status_code == 200
    assert done.json()["done_by"] == "caseworker:mina"

    # A case conference with the departments: participants, decisions, actions.
    conference = await call(routing, "POST", f"/v1/household-cases/{hid}/conferences", LEAD, body={
        "held_on": "2025-10-14",
        "participants": [{"name": "Mina Kim", "role": "lead", "office_code": "JONGNO-HOPE"},
                         {"name": "Alice Park", "role": "welfare caseworker", "office_code": "JONGNO-CSC"}],
        "decisions": ["Prioritise the rent arrears"],
        "actions": [{"text": "Apply for emergency housing", "owner": "caseworker:alice", "due_on": "2025-10-20"}],
    })  # fmt: skip
    assert conference.status_code == 201, conference.text

    # Closure with an outcome; the members are free again; the check after three months becomes a follow-up.
    entries_before = await history_count(routing, hid)
    closed = await call(routing, "POST", f"/v1/household-cases/{hid}/close", LEAD,
                        body={"outcome": "goals_met", "note": "Income restored, treatment regular"})  # fmt: skip
    assert closed.status_code == 200, closed.text
    assert closed.json()["follow_up_check_on"] == "2026-01-14"
    assert closed.json()["status"] == "closed"
    [closed_event] = await emitted(routing, "household_case.closed")
    assert closed_event["outcome"] == "goals_met"
    problem(await call(routing, "PUT", f"/v1/household-cases/{hid}/plan", LEAD, body=plan), 409)
    clock.fixed_today = dt.date(2026, 1, 14)
    await timer(routing).sweep()
    dues = await emitted(routing, "household_case.follow_up_due")
    assert [(d["kind"], d["overdue"]) for d in dues] == [
        ("follow_up", False), ("follow_up", True), ("closure_check", False)]  # fmt: skip
    body = (await call(routing, "GET", f"/v1/household-cases/{hid}", LEAD)).json()
    assert [f["kind"] for f in body["follow_ups"]][-1] == "closure_check"
    # The history only grew: every step is in it, in order.
    actions = [e["action"] for e in body["history"]]
    assert actions[:4] == ["opened", "claimed", "lead_assigned", "member_added"]
    assert actions[-2:] == ["closed", "closure_check_due"]
    assert await history_count(routing, hid) == entries_before + 2


async def test_what_does_not_open_a_household_case_and_what_does(routing: RunningService) -> None:
    # Two departments without any flag; one department with a flag: no household case.
    await feed(routing, crisis_household(uuid.uuid4(), uuid.uuid4(), vulnerability=()))
    await feed(routing, determined(uuid.uuid4(), [program("a", department="welfare"), program("b")],
                                   resident_id=uuid.uuid4(), vulnerability=("crisis",)))  # fmt: skip
    assert await households_of(routing) == []
    # Two departments and an application for a crisis life event (a job lost): one opens.
    resident, app = uuid.uuid4(), uuid.uuid4()
    await feed(
        routing,
        ApplicationSubmitted(
            application_id=app,
            resident_id=resident,
            life_event="job_loss",
            answers={},
            channel=Channel.WEB,
            application_date=dt.date(2025, 10, 2),
            submitted_at=dt.datetime.now(dt.UTC),
            resident=ResidentContext(district_code=JONGNO),
        ),
        crisis_household(resident, app, vulnerability=()),
    )
    [household] = await households_of(routing)
    assert household.opened_reason["life_events"] == ["job_loss"]


async def test_a_caseworker_opens_one_and_bad_input_writes_nothing(routing: RunningService) -> None:
    resident, app = uuid.uuid4(), uuid.uuid4()
    await feed(routing, determined(app, [program("livelihood")], resident_id=resident))
    stranger = uuid.uuid4()
    # Bad input: a problem naming the field, nothing written.
    body = problem(await call(routing, "POST", "/v1/household-cases", WELFARE,
                              body={"members": [str(resident), str(stranger)], "reason": "r"}), 422)  # fmt: skip
    assert body["errors"][0]["field"] == "members[1]"
    body = problem(
        await call(routing, "POST", "/v1/household-cases", WELFARE, body={"members": [], "reason": "r"}), 422
    )
    assert "members" in str(body["errors"])
    # A caseworker of another office does not work any of the residents' cases.
    problem(await call(routing, "POST", "/v1/household-cases", {"subject": "caseworker:dan", "offices": ["MAPO-CSC"]},
                       body={"members": [str(resident)], "reason": "r"}), 422)  # fmt: skip
    assert await households_of(routing) == []
    assert await emitted(routing, "household_case.opened") == []

    reason = "Rent arrears and a child out of school"
    opened = await call(routing, "POST", "/v1/household-cases", WELFARE,
                        body={"members": [str(resident)], "reason": reason})  # fmt: skip
    assert opened.status_code == 201, opened.text
    hid = opened.json()["id"]
    assert opened.json()["trigger"] == "caseworker"
    assert opened.json()["office_code"] == "JONGNO-HOPE"
    # One per household: a second is a conflict naming the running one.
    conflict = problem(await call(routing, "POST", "/v1/household-cases", WELFARE,
                                  body={"members": [str(resident)], "reason": "again"}), 409)  # fmt: skip
    assert conflict["household_case_id"] == hid
    await call(routing, "POST", f"/v1/household-cases/{hid}/claim", LEAD)
    version = (await households_of(routing))[0].plan_version
    bad_plans = {
        "services[0].goal": {"needs": [{"domain": "income", "assessment": "a"}],
                             "services": [{"goal": "nope", "kind": "referral", "description": "d", "owner": "o",
                                           "due_on": "2025-10-20", "service_type": "legal_aid"}]},
        "services[0].case_id": {"needs": [{"domain": "income", "assessment": "a"}],
                                "goals": [{"key": "g", "domain": "income", "text": "t", "owner": "o",
                                           "target_date": "2025-12-01"}],
                                "services": [{"goal": "g", "kind": "program", "description": "d", "owner": "o",
                                              "due_on": "2025-10-20", "case_id": str(uuid.uuid4())}]},
        "goals[0].target_date": {"needs": [{"domain": "income", "assessment": "a"}],
                                 "goals": [{"key": "g", "domain": "income", "text": "t", "owner": "o",
                                            "target_date": "2024-12-01"}]},
        "needs[0].domain": {"needs": [{"domain": "leisure", "assessment": "a"}]},
    }  # fmt: skip
    for field, plan in bad_plans.items():
        body = problem(await call(routing, "PUT", f"/v1/household-cases/{hid}/plan", LEAD, body=plan), 422)
        assert field in {e["field"] for e in body["errors"]}, body
    problem(await call(routing, "POST", f"/v1/household-cases/{hid}/close", LEAD,
                       body={"outcome": "vanished", "note": "n"}), 422)  # fmt: skip
    alone = {"held_on": "2025-10-02", "participants": [{"name": "a", "role": "lead"}], "decisions": ["d"]}
    problem(await call(routing, "POST", f"/v1/household-cases/{hid}/conferences", LEAD, body=alone), 422)
    [household] = await households_of(routing)
    assert (household.plan_version, household.status) == (version, "active")
    assert await emitted(routing, "household_case.plan_changed") == []


async def test_the_registered_household_is_taken_on_together(routing: RunningService) -> None:
    """Who lives together comes with the events (the registered household's pseudonymous id): the rule is judged over
    the household's cases, the case opened holds every member with an active case, and a member who comes to have a
    case later joins it by themselves — never a resident of another household."""
    household_id, elsewhere = uuid.uuid4(), uuid.uuid4()
    father, mother, daughter, neighbour = (uuid.uuid4() for _ in range(4))
    # The father lost his job (welfare, a crisis flag); nothing opens for one department.
    await feed(routing, determined(uuid.uuid4(), [program("livelihood_emergency", department="welfare")],
                                   resident_id=father, vulnerability=CRISIS, household_id=household_id))  # fmt: skip
    # A neighbour with a case in another department lives elsewhere: still nothing.
    await feed(routing, determined(uuid.uuid4(), [program("medical_aid", department="health")],
                                   resident_id=neighbour, household_id=elsewhere))  # fmt: skip
    assert await households_of(routing) == []
    # The mother applies to another department's program: the household now has cases in two departments and a
    # crisis flag — one household case opens, holding both.
    await feed(routing, determined(uuid.uuid4(), [program("job_seeker", department="labour")],
                                   resident_id=mother, household_id=household_id))  # fmt: skip
    [household] = await households_of(routing)
    [opened] = await emitted(routing, "household_case.opened")
    assert opened["member_ids"] == [str(mother), str(father)]
    assert set(opened["departments"]) == {"welfare", "labour"}
    assert household.opened_reason["flags"] == ["crisis"]
    # The daughter applies later: she joins the running case and is announced (to be told, and shown in her status).
    await feed(routing, determined(uuid.uuid4(), [program("rent_support", department="housing")],
                                   resident_id=daughter, household_id=household_id))  # fmt: skip
    assert len(await households_of(routing)) == 1
    [joined] = await emitted(routing, "household_case.member_added")
    assert (joined["resident_id"], joined["how"], joined["household_case_id"]) == (
        str(daughter), "household", str(household.id))  # fmt: skip
    assert set(joined["member_ids"]) == {str(mother), str(father), str(daughter)}
    # No personal data travels: pseudonymous ids, the district and the office only.
    assert set(joined) - {"_type"} == {"household_case_id", "member_ids", "district_code", "office_code",
                                       "resident_id", "office_name", "how", "opened_at", "added_at"}  # fmt: skip
    # Another determination of a member changes nothing; the neighbour is in no household case.
    await feed(routing, determined(uuid.uuid4(), [program("medical_aid", department="health")],
                                   resident_id=daughter, household_id=household_id))  # fmt: skip
    await feed(routing, determined(uuid.uuid4(), [program("medical_aid", department="health")],
                                   resident_id=neighbour, household_id=elsewhere, vulnerability=CRISIS))  # fmt: skip
    assert len(await emitted(routing, "household_case.member_added")) == 1
    [household] = await households_of(routing)
    body = (await call(routing, "GET", f"/v1/household-cases/{household.id}", HOPE_SUPERVISOR, "supervisor")).json()
    assert [m["resident_id"] for m in body["members"]] == [str(mother), str(father), str(daughter)]
    assert [m["added_by"] for m in body["members"]] == ["system:routing"] * 3
    assert body["history"][-1]["details"] == {"resident_id": str(daughter), "how": "household"}
    # The daughter's export holds the household she is registered in and her membership.
    own = routing.auth("resident", resident_id=daughter)
    part = (await routing.client.get(f"/v1/residents/{daughter}/data", headers=own)).json()["records"]
    assert [r["household_id"] for r in part["registered_household"]] == [str(household_id)]
    assert [r["household_case_id"] for r in part["household_memberships"]] == [str(household.id)]
    # The registry no longer lists her in a household (a newer event without one): routing forgets it.
    await feed(routing, determined(uuid.uuid4(), [program("medical_aid", department="health")], resident_id=daughter))
    part = (await routing.client.get(f"/v1/residents/{daughter}/data", headers=own)).json()["records"]
    assert part["registered_household"] == []


async def test_a_batch_reads_its_residents_households_once_and_considers_apart_after_a_change(
    routing: RunningService,
) -> None:
    """The residents whose cases a transaction changed are considered at its end: what the rule reads of them (their
    households, who is in a running household case, their active cases) is read once for all of them, not once for
    each. Once one of them joins (or opens) a household case, those after are considered on reads of their own, so
    that each housemate joins the case the one before joined, as when considered in transactions of their own."""
    from tests.support.round_trips import one_batch

    household_id = uuid.uuid4()
    father, mother, daughter, son = (uuid.uuid4() for _ in range(4))
    await feed(routing, determined(uuid.uuid4(), [program("livelihood_emergency", department="welfare")],
                                   resident_id=father, vulnerability=CRISIS, household_id=household_id))  # fmt: skip
    await feed(routing, determined(uuid.uuid4(), [program("job_seeker", department="labour")],
                                   resident_id=mother, household_id=household_id))  # fmt: skip
    [household] = await households_of(routing)
    alone = [uuid.uuid4() for _ in range(4)]  # each in a household of their own, with one department's case
    health = [program("medical_aid", department="health")]
    batch = [determined(uuid.uuid4(), health, resident_id=r, household_id=uuid.uuid4()) for r in alone]
    batch.append(determined(uuid.uuid4(), [program("rent_support", department="housing")],
                            resident_id=daughter, household_id=household_id))  # fmt: skip
    batch.append(determined(uuid.uuid4(), health, resident_id=son, household_id=household_id))
    # Led by an event of no interest: an idle consumer takes the first message alone.
    lead = determined(uuid.uuid4(), [program("child_allowance", "eligible")])
    work = await one_batch(routing, "cases", [lead, *batch])

    assert [h.id for h in await households_of(routing)] == [household.id]
    joined = await emitted(routing, "household_case.member_added")
    assert sorted(j["resident_id"] for j in joined) == sorted([str(daughter), str(son)])
    assert {j["household_case_id"] for j in joined} == {str(household.id)}
    body = (await call(routing, "GET", f"/v1/household-cases/{household.id}", HOPE_SUPERVISOR, "supervisor")).json()
    assert {m["resident_id"] for m in body["members"]} == {str(r) for r in (father, mother, daughter, son)}
    for statements in work.transactions():
        considered = [s for s in statements if s.startswith("SELECT ") and "FROM cases WHERE cases.resident_id IN" in s]
        # Once for all the transaction's residents, once for the daughter, who joins, and once for the son, considered
        # apart after her; not once for each of the six.
        assert len(considered) <= 3, statements


async def test_a_transactions_residents_are_judged_on_their_own_cases_going_through_the_active_cases_once() -> None:
    """At a batch's end each resident noted is judged on their household's active cases, out of those read for all
    of them at once: found by resident, not by going through every active case of the batch for each resident
    (quadratic in the batch). The judgement is the same: alone with one department, left alone; a household whose
    cases span departments with a flag, not."""
    from types import SimpleNamespace
    from typing import cast

    from services.routing.context import RoutingContext
    from services.routing.households import _Reads
    from services.routing.repository import ActiveCaseBrief as Case
    from services.routing.repository import Repository

    class Counted(list[Case]):
        gone_through = 0

        def __iter__(self) -> Any:
            Counted.gone_through += 1
            return super().__iter__()

    alone = [uuid.uuid4() for _ in range(20)]
    parent, child = uuid.uuid4(), uuid.uuid4()
    cases = Counted(
        [Case(resident_id=r, department="health", vulnerability=[], application_id=None) for r in alone]
        + [
            Case(resident_id=parent, department="welfare", vulnerability=["single_parent"], application_id=None),
            Case(resident_id=child, department="health", vulnerability=[], application_id=None),
        ]
    )
    housemates = {r: [r] for r in alone} | {parent: [parent, child], child: [child, parent]}
    settings = SimpleNamespace(household_min_departments=2, household_flags=[SimpleNamespace(value="single_parent")],
                               household_crisis_life_events=set())  # fmt: skip
    ctx = cast(RoutingContext, SimpleNamespace(settings=settings))

    async def life_events_of(application_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        return {}

    reads = _Reads(cast(Repository, SimpleNamespace(life_events_of=life_events_of)), housemates, set(), cases)
    judged = [await reads.left_alone(ctx, r) for r in [*alone, parent, child]]
    assert judged == [True] * len(alone) + [False, False]
    # Once to find each resident's, once for the applications' life events (read once, when the rule first asks):
    # not once per resident.
    assert Counted.gone_through == 2


async def test_what_the_rule_reads_of_active_cases_is_found_by_resident_and_only_what_it_needs(
    routing: RunningService,
) -> None:
    """What the household rule reads of the active cases of a batch's residents (every batch of the cases consumer
    asks it) is, for the residents named and only their active cases, the department, flags and application of each:
    not whole cases. The database finds them by resident and status (``ix_cases_resident_status``): with an index of
    the resident alone, SQLite's planner took the status index and went through every active case there is, each
    batch, with the event loop held — routing's longest stalls under bench/api.py's load."""
    from sqlalchemy import event, text, update

    from services.routing.models import Case
    from services.routing.repository import ActiveCaseBrief, Repository

    her, him, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    await feed(
        routing,
        determined(first, [program("medical_aid", department="health"), program("rent_support", department="housing")],
                   resident_id=her, vulnerability=("single_parent",)),
        determined(second, [program("job_seeker", department="labour")], resident_id=him),
        determined(uuid.uuid4(), [program("job_seeker", department="labour")], resident_id=other),
    )  # fmt: skip
    async with routing.runtime.db.session() as session:
        decided = update(Case).where(Case.application_id == first, Case.program_code == "rent_support")
        await session.execute(decided.values(status="decided"))

    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append((statement, parameters))

    engine = routing.runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with routing.runtime.db.session() as session:
            brief = await Repository(session).active_cases_in_brief([her, him])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sorted(brief, key=lambda c: c.department) == [
        ActiveCaseBrief(resident_id=her, department="health", vulnerability=["single_parent"], application_id=first),
        ActiveCaseBrief(resident_id=him, department="labour", vulnerability=[], application_id=second),
    ]

    [(statement, parameters)] = [s for s in statements if "FROM cases" in s[0]]
    async with routing.runtime.db.session() as session:
        connection = await session.connection()
        if connection.dialect.name == "sqlite":
            sqlite: Any = (await connection.get_raw_connection()).driver_connection
            plan = " ".join(r[3] for r in await sqlite.execute_fetchall(f"EXPLAIN QUERY PLAN {statement}", parameters))
        else:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            driver: Any = (await connection.get_raw_connection()).driver_connection
            plan = " ".join(r[0] for r in await driver.fetch(f"EXPLAIN {statement}", *parameters))
    assert "ix_cases_resident_status" in plan, plan
