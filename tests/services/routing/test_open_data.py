"""Open data: what residents said (feedback.given, counted per office, program and channel, with take-up) shown only
for groups of ten or more; referrals per service type; and every dataset's metadata, in the catalogue and with its
rows."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from tests.services.routing.support import (
    YONGSAN,
    cases_of,
    consents,
    determined,
    feed,
    offering_body,
    problem,
    program,
    put_offering,
    rated,
    submitted,
)
from tests.support.services import RunningService

DATASETS = {"cases", "sla", "referrals", "feedback", "take_up", "household_cases"}


async def dataset(routing: RunningService, name: str) -> dict[str, Any]:
    response = await routing.client.get(
        f"/v1/open-data/{name}", headers=routing.auth("resident", resident_id=uuid.uuid4())
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_every_open_dataset_says_what_it_is_and_what_each_field_means(routing: RunningService) -> None:
    anyone = routing.auth("partner", partner_id="saebom-ngo")
    response = await routing.client.get("/v1/open-data", headers=anyone)
    assert response.status_code == 200, response.text
    catalogue = {d["dataset"]: d for d in response.json()}
    assert set(catalogue) == DATASETS

    for name, info in catalogue.items():
        assert info["title"]["ko"], name
        assert info["title"]["en"], name
        assert info["description"], name
        assert info["licence"]["name"].startswith("Korea Open Government Licence Type 1")
        assert info["licence"]["url"].startswith("https://")
        assert info["update_frequency"].startswith("continuous")
        assert info["update_frequency_uri"].endswith("/frequency/UPDATE_CONT")
        assert info["publisher"]
        assert info["keywords"]
        assert [f["name"] for f in info["fields"]] == info["columns"], name
        assert all(
            f["title"] and f["description"] and f["type"] in ("string", "integer", "number") for f in info["fields"]
        )
        assert {d["media_type"] for d in info["distributions"]} == {"application/json", "text/csv"}
        assert info["min_group_size"] == (10 if name in ("feedback", "take_up") else 5)

        # The dataset itself carries the same metadata, and its rows exactly its fields.
        served = await dataset(routing, name)
        assert {k: served[k] for k in info} == info
        assert all(list(row) == info["columns"] for row in served["rows"])
        as_csv = await routing.client.get(f"/v1/open-data/{name}", headers=anyone, params={"format": "csv"})
        assert next(csv.reader(io.StringIO(as_csv.text))) == info["columns"]


async def test_what_residents_said_is_counted_per_office_program_and_channel_from_ten(routing: RunningService) -> None:
    events: list[Any] = []

    def applications(code: str, n: int, *, channel: str = "web", rated_n: int | None = None, granted: int = 0) -> None:
        """n applications with one program each, in Jongno: ``granted`` of them granted automatically, the others
        for a caseworker; ``rated_n`` of them rated (all by default), scores 5, 4, 3, 2, 1 in turn."""
        for i in range(n):
            app = uuid.uuid4()
            automatic = i < granted
            outcome = "eligible" if automatic else "needs_review"
            events.extend([submitted(app, channel), determined(app, [program(code, outcome, automatic=automatic)])])
            if i < (n if rated_n is None else rated_n):
                events.append(rated(app, 5 - i % 5, channel=channel))

    applications("ten_rated", 10, granted=7)  # exactly ten: shown
    applications("nine_rated", 9, granted=9)  # nine: nothing of them shown
    applications("ten_cases_nine_ratings", 10, rated_n=9)  # the cases show, their ratings do not
    applications("two_channels", 12, channel="web")  # 12 by web beside 3 by kiosk: both hidden, or 3 = total - 12
    applications("two_channels", 3, channel="kiosk")
    await feed(routing, *events)

    # Routing takes the channel from application.submitted; a rating says it too, for an application made before
    # routing recorded channels.
    visited, rated_only = uuid.uuid4(), uuid.uuid4()
    await feed(
        routing,
        submitted(visited, "visit", district=YONGSAN),
        determined(visited, [program("visited", "eligible", automatic=True)], district=YONGSAN),
        determined(rated_only, [program("visited", "eligible", automatic=True)], district=YONGSAN),
        rated(rated_only, 5, channel="phone"),
    )

    rows = {(r["program_code"], r["channel"]): r for r in (await dataset(routing, "feedback"))["rows"]}
    ten = rows[("ten_rated", "web")]
    assert ten == {
        "office_code": "JONGNO-CSC", "program_code": "ten_rated", "channel": "web", "cases": 10,
        "take_up_share": 0.7, "ratings": 10, "mean_score": 3.0, "satisfied_share": 0.4,
    }  # fmt: skip
    nine = rows[("nine_rated", "web")]
    assert (nine["cases"], nine["take_up_share"], nine["ratings"], nine["mean_score"], nine["satisfied_share"]) == (
        None, None, None, None, None,
    )  # fmt: skip
    partly = rows[("ten_cases_nine_ratings", "web")]
    assert (partly["cases"], partly["take_up_share"]) == (10, 0.0)
    assert (partly["ratings"], partly["mean_score"], partly["satisfied_share"]) == (None, None, None)
    assert rows[("two_channels", "kiosk")]["cases"] is None
    assert rows[("two_channels", "web")]["cases"] is None, "else the program's total at the office would give 3 away"
    assert (rows[("visited", "visit")]["office_code"], rows[("visited", "visit")]["ratings"]) == ("YONGSAN-CSC", 0)
    assert rows[("visited", "phone")]["ratings"] is None  # 1 < 10
    assert not any(channel == "unknown" for _, channel in rows)


async def test_referrals_are_counted_per_service_type(routing: RunningService) -> None:
    caseworker = routing.auth("caseworker", offices=["JONGNO-CSC"])
    partner = routing.auth("partner", partner_id="saebom-ngo")
    offerings = {
        kind: (
            await put_offering(
                routing, "saebom-ngo", kind.replace("_", "-"), offering_body(service_type=kind, capacity=10)
            )
        )["id"]
        for kind in ("childcare", "food_support", "counselling")
    }
    made: dict[str, list[str]] = {kind: [] for kind in offerings}
    for kind, n in (("childcare", 5), ("food_support", 6), ("counselling", 2)):
        for _ in range(n):
            resident, app = uuid.uuid4(), uuid.uuid4()
            await feed(
                routing, consents(resident, 1, saebom_ngo=True), determined(app, [program("p")], resident_id=resident)
            )
            case_id = (await cases_of(routing, app))["p"].id
            response = await routing.client.post(
                f"/v1/cases/{case_id}/referrals", headers=caseworker, json={"offering_id": offerings[kind]}
            )
            assert response.status_code == 201, response.text
            made[kind].append(response.json()["id"])
    for referral in made["food_support"]:
        assert (await routing.client.post(f"/v1/referrals/{referral}/accept", headers=partner)).status_code == 200

    rows = {r["service_type"]: r for r in (await dataset(routing, "referrals"))["rows"]}
    assert rows["food_support"] == {
        "month": "2025-10", "service_type": "food_support", "referrals": 6, "accepted": 6, "declined": 0, "completed": 0
    }  # fmt: skip
    assert rows["counselling"]["referrals"] is None  # 2 < 5
    # Childcare's 5 is hidden too: with counselling's alone hidden, a month's total would give its 2 away.
    assert rows["childcare"]["referrals"] is None
    problem(await routing.client.get("/v1/open-data/residents", headers=partner), 404)
