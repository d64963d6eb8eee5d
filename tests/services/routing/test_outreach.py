"""Outreach to the vulnerable, take-up and expected demand: an offer a vulnerable resident leaves unanswered for the
set working days becomes an outreach case in their district office's queue, closed by a visit's final outcome (or
when they answer, or withdraw their consent); take-up per program and district in open data with small counts
withheld; standing offers on the supervisors' capacity view as expected demand."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select

from services.routing.context import RoutingContext
from services.routing.models import Case, CaseEntry
from shared.events import (
    Department,
    Language,
    Localized,
    OpportunityAccepted,
    OpportunityDeclined,
    OpportunityExpired,
    OpportunityOffered,
    ResidentContext,
    Vulnerability,
)
from tests.services.routing.support import (
    JONGNO,
    MAPO,
    context,
    determined,
    emitted,
    feed,
    offering_body,
    problem,
    program,
    put_offering,
)
from tests.support.services import RunningService

OFFERED = dt.date(2025, 10, 2)


def offered(
    *, district: str = MAPO, vulnerability: tuple[str, ...] = (), program_code: str = "basic_pension",
    resident_id: uuid.UUID | None = None, department: str = "welfare",
) -> OpportunityOffered:  # fmt: skip
    return OpportunityOffered(
        opportunity_id=uuid.uuid4(), resident_id=resident_id or uuid.uuid4(), program_code=program_code,
        program_name=Localized(ko="기초연금", en="Basic pension"), department=Department(department), amount=342_510,
        amount_period="monthly", offered_at=dt.datetime.combine(OFFERED, dt.time(9), dt.UTC),
        expires_on=OFFERED + dt.timedelta(days=90),
        resident=ResidentContext(district_code=district, preferred_language=Language.KO,
                                 vulnerability=[Vulnerability(v) for v in vulnerability]),
    )  # fmt: skip


def accepted(offer: OpportunityOffered, application_id: uuid.UUID | None = None) -> OpportunityAccepted:
    return OpportunityAccepted(
        opportunity_id=offer.opportunity_id, resident_id=offer.resident_id, program_code=offer.program_code,
        department=offer.department, application_id=application_id or uuid.uuid4(), acted_as="resident",
        accepted_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def declined(offer: OpportunityOffered) -> OpportunityDeclined:
    return OpportunityDeclined(
        opportunity_id=offer.opportunity_id, resident_id=offer.resident_id, program_code=offer.program_code,
        department=offer.department, reason="not_interested", acted_as="resident", declined_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def expired(offer: OpportunityOffered, reason: str) -> OpportunityExpired:
    return OpportunityExpired(
        opportunity_id=offer.opportunity_id, resident_id=offer.resident_id, program_code=offer.program_code,
        department=offer.department, reason=reason, expired_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


async def sweep(routing: RunningService, day: dt.date) -> int:
    ctx = context(routing)
    ctx.clock.fixed_today = day
    assert ctx.outreach is not None
    return await ctx.outreach.sweep()


async def outreach_cases(routing: RunningService) -> dict[uuid.UUID, Case]:
    async with routing.runtime.db.session() as session:
        rows = (await session.execute(select(Case).where(Case.kind == "outreach"))).scalars().all()
    return {c.opportunity_id: c for c in rows if c.opportunity_id is not None}


async def test_an_unanswered_offer_to_a_vulnerable_resident_is_visited(routing: RunningService) -> None:
    ctx: RoutingContext = context(routing)
    alone = offered(vulnerability=("elderly_alone",))
    unflagged = offered()
    answering = offered(vulnerability=("disability",))
    withdrawing = offered(vulnerability=("single_parent", "crisis"))
    await feed(routing, alone, unflagged, answering, withdrawing, accepted(answering))

    last_day = ctx.calendar.add_working_days(OFFERED, ctx.settings.outreach_after_working_days)
    assert await sweep(routing, last_day) == 0, "the last working day to answer is the resident's"
    after = ctx.calendar.add_working_days(last_day, 1)
    assert await sweep(routing, after) == 2
    assert await sweep(routing, after) == 0, "one outreach case per offer"
    cases = await outreach_cases(routing)
    assert set(cases) == {alone.opportunity_id, withdrawing.opportunity_id}
    case = cases[alone.opportunity_id]
    assert (case.office_code, case.department, case.status, case.application_id) == ("MAPO-CSC", "welfare", "open",
                                                                                      None)  # fmt: skip
    assert case.due_date == ctx.calendar.add_working_days(after, ctx.settings.outreach_sla_working_days)
    assert case.priority == 3, "a severe flag (an older person living alone) raises it two levels"

    supervisor = routing.auth("supervisor", offices=["MAPO-CSC"], subject="staff:mapo-csc-lead")
    queue = (await routing.client.get("/v1/queues/MAPO-CSC", headers=supervisor)).json()["items"]
    listed = next(item for item in queue if item["id"] == str(case.id))
    assert (listed["kind"], listed["application_id"], listed["opportunity_id"]) == (
        "outreach", None, str(alone.opportunity_id))  # fmt: skip
    opened = await emitted(routing, "outreach.opened")
    assert {e["opportunity_id"] for e in opened} == {str(alone.opportunity_id), str(withdrawing.opportunity_id)}
    assert next(e for e in opened if e["case_id"] == str(case.id))["vulnerability"] == ["elderly_alone"]

    # Consent withdrawn: the standing offer expires, the visit is off.
    await feed(routing, expired(withdrawing, "consent_withdrawn"))
    gone = (await outreach_cases(routing))[withdrawing.opportunity_id]
    assert (gone.status, gone.closed_reason) == ("closed", "consent_withdrawn")
    assert [e["reason"] for e in await emitted(routing, "outreach.closed")] == ["consent_withdrawn"]

    # The caseworker claims the case and records the visits; an outreach case is never decided or asked for info.
    worker = routing.auth("caseworker", offices=["MAPO-CSC"], subject="cw-mapo")
    other = routing.auth("caseworker", offices=["MAPO-CSC"], subject="cw-other")
    path = f"/v1/cases/{case.id}"
    assert (await routing.client.post(f"{path}/claim", headers=worker)).status_code == 200
    refused = await routing.client.post(f"{path}/decide", json={"decision": "approved", "reason_code": "criteria_met",
                                                                "note": "n"}, headers=worker)  # fmt: skip
    assert problem(refused, 409)["case_status"] == "assigned"
    asked = await routing.client.post(f"{path}/request-info", json={"questions": [{"text": "?"}]}, headers=worker)
    problem(asked, 409)
    visit = {"outcome": "not_at_home", "note": "초인종에 응답 없음. 메모를 남김."}
    problem(await routing.client.post(f"{path}/visit", json=visit, headers=other), 409)
    for bad, field in (({**visit, "outcome": "gone_fishing"}, "outcome"),
                       ({**visit, "visited_on": (after + dt.timedelta(days=1)).isoformat()}, "visited_on"),
                       ({**visit, "visited_on": (after - dt.timedelta(days=1)).isoformat()}, "visited_on"),
                       ({"outcome": "declined"}, "note")):  # fmt: skip
        response = await routing.client.post(f"{path}/visit", json=bad, headers=worker)
        assert field in problem(response, 422)["errors"][0]["field"], response.text
    async with routing.runtime.db.session() as session:
        history = (await session.execute(select(CaseEntry).where(CaseEntry.case_id == case.id))).scalars().all()
    assert [e.action for e in history] == ["outreach_opened", "claimed"], "refused requests wrote nothing"

    first = await routing.client.post(f"{path}/visit", json=visit, headers=worker)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "assigned", "nobody at home: another visit is due"
    keyed = {**worker, "Idempotency-Key": "visit-2"}
    done = {"outcome": "applied_with_help", "note": "Helped her accept the offer at the door."}
    second = await routing.client.post(f"{path}/visit", json=done, headers=keyed)
    assert second.status_code == 200, second.text
    assert (second.json()["status"], second.json()["closed_reason"]) == ("closed", "visited")
    assert [h["action"] for h in second.json()["history"]][-2:] == ["visited", "visited"]
    replay = await routing.client.post(f"{path}/visit", json=done, headers=keyed)
    assert replay.json() == second.json()
    problem(await routing.client.post(f"{path}/visit", json=done, headers=worker), 409)
    visits = await emitted(routing, "outreach.visited")
    assert [(v["outcome"], v["final"]) for v in visits] == [("not_at_home", False), ("applied_with_help", True)]
    assert all(not e["_type"].startswith("case.") for e in await emitted(routing)), "no case.* for outreach cases"

    outcomes = await routing.client.get("/v1/outreach-outcomes", headers=worker)
    assert {o["code"]: o["final"] for o in outcomes.json()}["not_at_home"] is False
    cases_data = (await routing.client.get("/v1/open-data/cases", headers=worker)).json()["rows"]
    assert cases_data == [], "an outreach visit is no case a resident brought"


async def test_take_up_in_open_data_and_expected_demand_on_the_capacity_view(routing: RunningService) -> None:
    """Mapo: twelve residents found eligible for the child allowance — nine accepted, one declined, one applied by
    themselves, one has not answered yet; Jongno: three found, one accepted (too few to show). Of the eleven answered
    offers city-wide, ten were accepted: the take-up the standing offers are expected at."""
    mapo = [offered(program_code="child_allowance") for _ in range(12)]
    jongno = [offered(program_code="child_allowance", district=JONGNO) for _ in range(3)]
    await feed(routing, *mapo, *jongno)
    answers: list[Any] = [accepted(o) for o in mapo[:9]] + [declined(mapo[9]), accepted(jongno[0])]
    await feed(routing, *answers)
    grant = program("child_allowance", "eligible", automatic=True, weight=0.3, amount=100_000)
    applications = [(a.application_id, a.resident_id) for a in answers if isinstance(a, OpportunityAccepted)]
    applications.append((uuid.uuid4(), mapo[10].resident_id))  # applied by themselves, no offer accepted
    await feed(routing, *(determined(app, [grant], resident_id=who, district=MAPO if who != jongno[0].resident_id
                                     else JONGNO) for app, who in applications))  # fmt: skip

    take_up = await routing.client.get("/v1/open-data/take_up", headers=routing.auth("partner", partner_id="press"))
    assert take_up.status_code == 200, take_up.text
    body = take_up.json()
    assert body["suppression"] == "counts from 1 to 9, complementary cells and rates over them are null"
    rows = {r["district_code"]: r for r in body["rows"]}
    assert rows[MAPO] == {"program_code": "child_allowance", "department": "welfare", "district_code": MAPO,
                          "found_eligible": 12, "applied": 10, "granted": 10, "take_up_rate": 0.833}  # fmt: skip
    assert (rows[JONGNO]["found_eligible"], rows[JONGNO]["applied"], rows[JONGNO]["granted"]) == (None, None, None)
    assert rows[JONGNO]["take_up_rate"] is None, "a rate of withheld counts is withheld"
    csv = await routing.client.get("/v1/open-data/take_up", params={"format": "csv"},
                                   headers=routing.auth("partner", partner_id="press"))  # fmt: skip
    assert (
        csv.text.splitlines()[0] == "program_code,department,district_code,found_eligible,applied,granted,take_up_rate"
    )

    capacity = await routing.client.get("/v1/capacity", params={"office": "MAPO-CSC"},
                                        headers=routing.auth("supervisor", offices=["MAPO-CSC"]))  # fmt: skip
    assert capacity.status_code == 200, capacity.text
    (office,) = capacity.json()["offices"]
    (expected,) = office["expected_demand"]
    assert expected == {"program_code": "child_allowance", "department": "welfare", "standing_offers": 2,
                        "take_up_rate": 0.909, "expected_applications": 1.82,
                        "expected_weighted_load": 0.546}  # fmt: skip
    jongno_view = await routing.client.get("/v1/capacity", params={"office": "JONGNO-CSC"},
                                           headers=routing.auth("admin"))  # fmt: skip
    (jongno_office,) = jongno_view.json()["offices"]
    (few,) = jongno_office["expected_demand"]
    assert (few["standing_offers"], few["take_up_rate"], few["expected_applications"]) == (2, 0.909, 1.82), (
        "the rate is the program's city-wide")  # fmt: skip


async def test_an_erased_resident_s_offers_and_outreach_go_with_them_and_no_visit_is_opened_again(
    routing: RunningService,
) -> None:
    from services.routing.models import Offer, Referral
    from shared.events import ResidentErasureRequested

    ctx: RoutingContext = context(routing)
    resident_id = uuid.uuid4()
    visited = offered(vulnerability=("elderly_alone",), resident_id=resident_id)
    waiting = offered(vulnerability=("elderly_alone",), resident_id=resident_id, program_code="senior_transport_card")
    await feed(routing, visited)
    after = ctx.calendar.add_working_days(OFFERED, ctx.settings.outreach_after_working_days + 1)
    assert await sweep(routing, after) == 1
    case = (await outreach_cases(routing))[visited.opportunity_id]
    # A referral follows an application: an outreach case has none, so it is refused (the visit's outcome says
    # "referred to other support"), and writes nothing.
    offering = await put_offering(routing, "saebom-ngo", "care", offering_body(service_type="elder_care",
                                                                              districts=(MAPO,)))  # fmt: skip
    refer = await routing.client.post(
        f"/v1/cases/{case.id}/referrals", json={"offering_id": offering["id"]},
        headers=routing.auth("caseworker", offices=["MAPO-CSC"], subject="cw-mapo"),
    )  # fmt: skip
    assert problem(refer, 409)["type"] == "urn:onestop:problem:outreach-case"

    # Their part shows the offer and the outreach case; then the erasure takes both.
    own = routing.auth("resident", resident_id=resident_id)
    part = (await routing.client.get(f"/v1/residents/{resident_id}/data", headers=own)).json()["records"]
    assert [o["opportunity_id"] for o in part["offers"]] == [str(visited.opportunity_id)]
    assert [c["kind"] for c in part["cases"]] == ["outreach"]
    request = ResidentErasureRequested(erasure_id=uuid.uuid4(), resident_id=resident_id, decision_files=[],
                                       requested_at=dt.datetime.now(dt.UTC))  # fmt: skip
    await feed(routing, request)
    (answer,) = await emitted(routing, "resident.erased")
    assert (answer["erased"]["offers"], answer["erased"]["outreach_cases"]) == (1, 1)
    assert answer["erased"]["cases_without_decision"] == 0
    async with routing.runtime.db.session() as session:
        assert (await session.scalars(select(Offer).where(Offer.resident_id == resident_id))).all() == []
        assert (await session.scalars(select(Case).where(Case.resident_id == resident_id))).all() == []
        assert (await session.scalars(select(CaseEntry).where(CaseEntry.case_id == case.id))).all() == []
        assert (await session.scalars(select(Referral).where(Referral.resident_id == resident_id))).all() == []

    # An offer about them arriving late is not stored, and no visit is opened for it.
    await feed(routing, waiting)
    assert await sweep(routing, ctx.calendar.add_working_days(after, 30)) == 0
    assert await outreach_cases(routing) == {}
    after_part = (await routing.client.get(f"/v1/residents/{resident_id}/data", headers=own)).json()["records"]
    assert (after_part["offers"], after_part["cases"]) == ([], [])
