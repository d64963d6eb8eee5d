"""Partners as providers: a partner publishes an offering, a caseworker refers a resident to it with the resident's
consent (learnt from intake's consent.changed on the real bus), the partner accepts, declines and reports the
outcome, and the places the offering has follow. What reaches the partner is the pseudonymous id and its own
offering, nothing else about the resident."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from services.routing.models import CaseEntry, Offering, Referral, ResidentConsents, platform
from shared.events import CATALOGUE
from tests.services.routing.support import (
    MAPO,
    cases_of,
    consents,
    determined,
    emitted,
    feed,
    offering_body,
    problem,
    program,
    put_offering,
)
from tests.support.services import RunningService

NGO, OTHER = "saebom-ngo", "haneul-care"
CASEWORKER = {"subject": "caseworker:alice", "offices": ["JONGNO-CSC"]}


async def offering_state(routing: RunningService, offering_id: str) -> tuple[int, int]:
    async with routing.runtime.db.session() as session:
        offering = await session.get(Offering, uuid.UUID(offering_id))
        assert offering is not None
        return offering.places_taken, offering.available


async def test_a_referral_holds_a_place_until_the_partner_declines_or_reports_the_outcome(
    routing: RunningService,
) -> None:
    client = routing.client
    caseworker = routing.auth("caseworker", **CASEWORKER)
    ngo, other = routing.auth("partner", partner_id=NGO), routing.auth("partner", partner_id=OTHER)

    resident, app = uuid.uuid4(), uuid.uuid4()
    await feed(routing, determined(app, [program("emergency_welfare"), program("senior_care")], resident_id=resident))
    cases = await cases_of(routing, app)
    first, second = str(cases["emergency_welfare"].id), str(cases["senior_care"].id)

    # Partners publish offerings; only the one for the resident's district and language, with room, is offered.
    childcare = await put_offering(routing, NGO, "childcare-jongno", offering_body(capacity=2))
    assert (childcare["capacity"], childcare["places_taken"], childcare["available"]) == (2, 0, 2)
    await put_offering(routing, NGO, "childcare-mapo", offering_body(districts=[MAPO]))
    await put_offering(routing, NGO, "childcare-en", offering_body(languages=["en"]))
    await put_offering(routing, OTHER, "food-jongno", offering_body(service_type="food_support", capacity=0))
    offered = await client.get(f"/v1/cases/{first}/offerings", headers=caseworker)
    assert offered.status_code == 200, offered.text
    assert [(o["code"], o["resident_consented"]) for o in offered.json()] == [("childcare-jongno", False)]
    only_food = await client.get(
        f"/v1/cases/{first}/offerings", headers=caseworker, params={"service_type": "legal_aid"}
    )
    assert only_food.json() == []

    # Without the resident's consent to the partner: a problem, and nothing written, nothing emitted.
    refused = await client.post(
        f"/v1/cases/{first}/referrals", headers=caseworker, json={"offering_id": childcare["id"]}
    )
    assert problem(refused, 409)["type"] == "urn:onestop:problem:consent-required"
    assert refused.json()["purpose"] == f"partner:{NGO}"
    assert await routing.count(Referral) == 0
    assert await offering_state(routing, childcare["id"]) == (0, 2)
    assert await emitted(routing, "referral.created") == []

    # The resident consents in intake; routing hears it on the bus. A consent to another partner does not count.
    await feed(routing, consents(resident, 1, haneul_care=True))
    problem(await client.post(f"/v1/cases/{first}/referrals", headers=caseworker,
                              json={"offering_id": childcare["id"]}), 409)  # fmt: skip
    await feed(routing, consents(resident, 2, saebom_ngo=True))
    offered = await client.get(f"/v1/cases/{first}/offerings", headers=caseworker)
    assert [(o["code"], o["resident_consented"]) for o in offered.json()] == [("childcare-jongno", True)]

    # Bad input is a 422 naming the field, and writes nothing.
    for body, message in (
        ({"offering_id": "not-a-uuid"}, None),
        ({"offering_id": str(uuid.uuid4())}, "no such offering"),
        ({"offering_id": (await put_offering(routing, NGO, "far", offering_body(districts=[MAPO])))["id"]}, "does not"),
        ({"offering_id": childcare["id"], "note": "extra"}, None),
    ):
        bad = problem(await client.post(f"/v1/cases/{first}/referrals", headers=caseworker, json=body), 422)
        assert bad["errors"][0]["field"] in ("offering_id", "note"), bad
        if message:
            assert message in bad["errors"][0]["message"]
    assert await routing.count(Referral) == 0

    # Referred: a place is held; a retry with the same key gets the first answer and holds no second place.
    key = {"Idempotency-Key": "refer-1"}
    created = await client.post(
        f"/v1/cases/{first}/referrals", headers={**caseworker, **key}, json={"offering_id": childcare["id"]}
    )
    assert created.status_code == 201, created.text
    referral = created.json()
    assert created.headers["location"] == f"/v1/referrals/{referral['id']}"
    assert (referral["status"], referral["case_id"], referral["resident_id"]) == ("referred", first, str(resident))
    again = await client.post(
        f"/v1/cases/{first}/referrals", headers={**caseworker, **key}, json={"offering_id": childcare["id"]}
    )
    assert (again.status_code, again.json()["id"]) == (201, referral["id"])
    assert await offering_state(routing, childcare["id"]) == (1, 1)
    duplicate = await client.post(
        f"/v1/cases/{first}/referrals", headers=caseworker, json={"offering_id": childcare["id"]}
    )
    assert problem(duplicate, 409)["type"] == "urn:onestop:problem:already-referred"

    # The second case takes the last place; then the offering is full and no longer offered.
    response = await client.post(
        f"/v1/cases/{second}/referrals", headers=caseworker, json={"offering_id": childcare["id"]}
    )
    assert response.status_code == 201, response.text
    other_referral = response.json()
    assert await offering_state(routing, childcare["id"]) == (2, 0)
    assert (await client.get(f"/v1/cases/{first}/offerings", headers=caseworker)).json() == []

    # The partner sees the referrals to it, with the pseudonymous id and nothing of the case.
    mine = await client.get("/v1/referrals", headers=ngo, params={"status": "referred"})
    assert mine.status_code == 200, mine.text
    assert {r["id"] for r in mine.json()} == {referral["id"], other_referral["id"]}
    assert {(r["case_id"], r["program_code"], r["office_code"], r["referred_by"]) for r in mine.json()} == {
        (None, None, None, None)
    }
    assert (await client.get("/v1/referrals", headers=other)).json() == []
    problem(await client.get(f"/v1/referrals/{referral['id']}", headers=other), 404)
    problem(await client.post(f"/v1/referrals/{referral['id']}/accept", headers=other), 404)

    # The partner declines the first (its place comes free) and accepts the second.
    problem(await client.post(f"/v1/referrals/{referral['id']}/complete", headers=ngo, json={"outcome": "served"}), 409)
    bad = problem(
        await client.post(f"/v1/referrals/{referral['id']}/decline", headers=ngo, json={"reason": "busy"}), 422
    )
    assert bad["errors"][0]["field"] == "reason"
    declined = await client.post(f"/v1/referrals/{referral['id']}/decline", headers=ngo, json={"reason": "no_capacity"})
    assert declined.status_code == 200, declined.text
    assert (declined.json()["status"], declined.json()["decline_reason"]) == ("declined", "no_capacity")
    assert await offering_state(routing, childcare["id"]) == (1, 1)
    problem(await client.post(f"/v1/referrals/{referral['id']}/accept", headers=ngo), 409)

    accepted = await client.post(f"/v1/referrals/{other_referral['id']}/accept", headers=ngo)
    assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")
    assert await offering_state(routing, childcare["id"]) == (1, 1), "an accepted referral keeps its place"
    completed = await client.post(
        f"/v1/referrals/{other_referral['id']}/complete", headers=ngo, json={"outcome": "served"}
    )
    assert (completed.status_code, completed.json()["outcome"]) == (200, "served")
    assert await offering_state(routing, childcare["id"]) == (0, 2)

    # A lower capacity stops new referrals without touching those held; a higher one makes room again.
    response = await client.post(
        f"/v1/cases/{first}/referrals", headers=caseworker, json={"offering_id": childcare["id"]}
    )
    assert response.status_code == 201, response.text
    await put_offering(routing, NGO, "childcare-jongno", offering_body(capacity=1))
    full = await client.post(f"/v1/cases/{second}/referrals", headers=caseworker, json={"offering_id": childcare["id"]})
    assert problem(full, 409)["type"] == "urn:onestop:problem:offering-full"
    assert await offering_state(routing, childcare["id"]) == (1, 0)
    await put_offering(routing, NGO, "childcare-jongno", offering_body(capacity=3))
    assert await offering_state(routing, childcare["id"]) == (1, 2)

    # Every step is an event; what a partner may see of it is its offering and the pseudonymous id.
    events = await emitted(routing)
    referral_events = [e for e in events if e["_type"].startswith("referral.")]
    assert [e["_type"] for e in referral_events] == [
        "referral.created", "referral.created", "referral.declined", "referral.accepted", "referral.completed",
        "referral.created",
    ]  # fmt: skip
    for event in referral_events:
        assert event["partner_id"] == NGO
        view = partner_view_of(event)
        assert {"referral_id", "offering_code", "service_type", "resident_id"} <= set(view)
        assert set(view) - {"referral_id", "offering_code", "service_type", "resident_id"} <= {
            "created_at", "accepted_at", "declined_at", "completed_at", "reason", "outcome",
        }  # fmt: skip
        assert view["resident_id"] == str(resident)
    created_event = referral_events[0]
    assert (created_event["case_id"], created_event["district_code"], created_event["language"]) == (
        first,
        "11110",
        "ko",
    )

    # The caseworker sees the partner's answers in the case's history; the disclosure is in the audit log.
    async with routing.runtime.db.session() as session:
        actions = (
            await session.scalars(
                select(CaseEntry.action).where(CaseEntry.case_id == uuid.UUID(second)).order_by(CaseEntry.id)
            )
        ).all()
        audit = (
            await session.execute(
                select(platform.audit_log.c.action, platform.audit_log.c.resident_id, platform.audit_log.c.actor)
            )
        ).all()
    assert [a for a in actions if "referr" in a] == ["referred", "referral_accepted", "referral_completed"]
    assert [(a, r, actor) for a, r, actor in audit if a == "referral.created"] == [
        ("referral.created", resident, "caseworker:alice")
    ] * 3
    listed = await client.get(f"/v1/cases/{first}/referrals", headers=caseworker, params={"purpose": "follow-up"})
    assert [r["status"] for r in listed.json()] == ["declined", "referred"]
    # Staff reading a case's offerings (with the resident's consents) and referrals is in the audit log too.
    async with routing.runtime.db.session() as session:
        reads = (
            await session.execute(
                select(platform.audit_log.c.action, platform.audit_log.c.purpose).where(
                    platform.audit_log.c.record_id == first, platform.audit_log.c.resident_id == resident
                )
            )
        ).all()
    assert ("case.offerings", "referral") in reads
    assert ("case.referrals", "follow-up") in reads


async def test_a_withdrawn_consent_stops_new_referrals_and_a_late_older_one_changes_nothing(
    routing: RunningService,
) -> None:
    client, caseworker = routing.client, routing.auth("caseworker", **CASEWORKER)
    resident, app = uuid.uuid4(), uuid.uuid4()
    await feed(routing, determined(app, [program("emergency_welfare")], resident_id=resident))
    case_id = str((await cases_of(routing, app))["emergency_welfare"].id)
    offering = await put_offering(routing, NGO, "counselling", offering_body(service_type="counselling", capacity=5))

    given, withdrawn = consents(resident, 1, saebom_ngo=True), consents(resident, 2, saebom_ngo=False)
    await feed(routing, given, withdrawn)
    # The older set arrives again (another event id, as after a replay): the newer version stands.
    await feed(routing, consents(resident, 1, saebom_ngo=True))
    async with routing.runtime.db.session() as session:
        state = await session.get(ResidentConsents, resident)
        assert state is not None
        assert (state.version, state.consents[f"partner:{NGO}"]) == (2, False)
    refused = await client.post(
        f"/v1/cases/{case_id}/referrals", headers=caseworker, json={"offering_id": offering["id"]}
    )
    assert problem(refused, 409)["type"] == "urn:onestop:problem:consent-required"
    assert await offering_state(routing, offering["id"]) == (0, 5)


async def test_a_partner_manages_only_its_own_offerings_and_bad_ones_write_nothing(routing: RunningService) -> None:
    client = routing.client
    ngo = routing.auth("partner", partner_id=NGO)
    created = await client.put(f"/v1/partners/{NGO}/offerings/meals", headers=ngo, json=offering_body())
    assert created.status_code == 201, created.text
    replaced = await client.put(
        f"/v1/partners/{NGO}/offerings/meals", headers=ngo, json=offering_body(service_type="food_support")
    )
    assert (replaced.status_code, replaced.json()["id"], replaced.json()["service_type"]) == (
        200, created.json()["id"], "food_support",
    )  # fmt: skip

    # Another partner's offerings do not exist for a partner; an administrator may look after any.
    other = routing.auth("partner", partner_id=OTHER)
    problem(await client.get(f"/v1/partners/{NGO}/offerings", headers=other), 404)
    problem(await client.put(f"/v1/partners/{NGO}/offerings/meals", headers=other, json=offering_body()), 404)
    assert [o["code"] for o in (await client.get(f"/v1/partners/{NGO}/offerings", headers=ngo)).json()] == ["meals"]
    assert (await client.get(f"/v1/partners/{NGO}/offerings/meals", headers=routing.auth("admin"))).status_code == 200

    for body, field in (
        ({**offering_body(), "capacity": -1}, "capacity"),
        ({**offering_body(), "districts": []}, "districts"),
        ({**offering_body(), "districts": ["11110", "11110"]}, "districts"),
        ({**offering_body(), "service_type": "haircuts"}, "service_type"),
        ({**offering_body(), "languages": ["korean"]}, "languages[0]"),
        ({k: v for k, v in offering_body().items() if k != "conditions"}, "conditions"),
    ):
        bad = problem(await client.put(f"/v1/partners/{NGO}/offerings/other", headers=ngo, json=body), 422)
        assert bad["errors"][0]["field"] == field, bad
    problem(await client.put(f"/v1/partners/{NGO}/offerings/Bad Code", headers=ngo, json=offering_body()), 422)
    assert await routing.count(Offering) == 1


def partner_view_of(event: dict[str, Any]) -> dict[str, Any]:
    """The event's partner view, as notify would hand it to the partner."""
    spec = CATALOGUE[event["_type"]]
    assert spec.partner_view is not None
    assert spec.addressed
    data = {k: v for k, v in event.items() if k != "_type"}
    result: dict[str, Any] = spec.partner_view.model_validate(data).model_dump(mode="json")
    return result


async def test_of_referrals_racing_for_the_last_place_exactly_one_gets_it(routing: RunningService) -> None:
    racers = 6
    offering = await put_offering(routing, NGO, "last-place", offering_body(capacity=1))
    case_ids = []
    for _ in range(racers):
        resident, app = uuid.uuid4(), uuid.uuid4()
        await feed(
            routing, consents(resident, 1, saebom_ngo=True), determined(app, [program("p")], resident_id=resident)
        )
        case_ids.append((await cases_of(routing, app))["p"].id)
    caseworker = routing.auth("caseworker", **CASEWORKER)
    responses = await asyncio.gather(
        *(
            routing.client.post(f"/v1/cases/{c}/referrals", headers=caseworker, json={"offering_id": offering["id"]})
            for c in case_ids
        )
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (racers - 1), [r.text for r in responses]
    assert {r.json()["type"] for r in responses if r.status_code == 409} == {"urn:onestop:problem:offering-full"}
    assert await offering_state(routing, offering["id"]) == (1, 0)
    assert await routing.count(Referral) == 1
    assert len(await emitted(routing, "referral.created")) == 1
