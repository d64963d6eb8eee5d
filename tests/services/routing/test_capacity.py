"""Capacity: an administrator's change applies to new cases, a full office overflows to its neighbour when the program
allows it, load counts case weights, and the funnel shows in GET /v1/capacity. Open data hides small counts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

from services.routing.models import Office
from tests.services.routing.support import (
    JONGNO,
    MAPO,
    YONGSAN,
    cases_of,
    determined,
    emitted,
    feed,
    office_body,
    problem,
    program,
)
from tests.support.services import RunningService

TODAY = dt.date(2025, 10, 2)


async def test_a_full_office_overflows_to_its_neighbour_and_the_funnel_shows(routing: RunningService) -> None:
    client, admin = routing.client, routing.auth("admin")
    jongno = await office_body(routing, "JONGNO-CSC")

    # Only an admin changes an office; a bad change is refused whole.
    body = {**jongno, "capacity": {"caseworker_hours_week": 40, "active_case_ceiling": 3}}
    problem(await client.put("/v1/offices/JONGNO-CSC", headers=routing.auth("supervisor", offices=["JONGNO-CSC"]),
                             json=body), 403)  # fmt: skip
    bad = await client.put("/v1/offices/JONGNO-CSC", headers=admin, json={**body, "neighbours": ["NOWHERE"]})
    assert problem(bad, 422)["errors"][0]["field"] == "neighbours[0]"
    assert (await office_body(routing, "JONGNO-CSC"))["capacity"]["active_case_ceiling"] == 60

    # Before the change: a welfare case in Jongno stays in Jongno.
    first = uuid.uuid4()
    await feed(routing, determined(first, [program("emergency_welfare", overflow=True, weight=2.0)]))
    assert (await cases_of(routing, first))["emergency_welfare"].office_code == "JONGNO-CSC"

    response = await client.put("/v1/offices/JONGNO-CSC", headers=admin, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["load"] == {"open_cases": 1, "weighted_load": 2.0, "utilisation": 0.667, "has_room": True}

    # One more weighs in (2.0 + 1.5 = 3.5 >= 3): Jongno is now full.
    second = uuid.uuid4()
    await feed(routing, determined(second, [program("emergency_welfare", overflow=True, weight=1.5)]))
    assert (await cases_of(routing, second))["emergency_welfare"].office_code == "JONGNO-CSC"

    # Full: the program that allows overflow goes to the neighbour; the one that does not stays, over capacity.
    third = uuid.uuid4()
    await feed(
        routing,
        determined(third, [program("emergency_welfare", overflow=True), program("senior_care", overflow=False)]),
    )
    cases = await cases_of(routing, third)
    overflowed, stayed = cases["emergency_welfare"], cases["senior_care"]
    assert (overflowed.office_code, overflowed.routing["rule"]) == ("JUNG-CSC", "overflow_capacity")
    assert (stayed.office_code, stayed.routing["rule"]) == ("JONGNO-CSC", "over_capacity")
    detail = (await client.get(f"/v1/cases/{overflowed.id}", headers=admin)).json()
    assert [
        (c["office_code"], c["role"], c["load"], c["ceiling"], c["has_room"]) for c in detail["routing"]["candidates"]
    ] == [("JONGNO-CSC", "responsible", 3.5, 3.0, False), ("JUNG-CSC", "neighbour", 0.0, 45.0, True)]
    routed = {(e["application_id"], e["program_code"]): e for e in await emitted(routing, "case.routed")}
    assert routed[(str(third), "emergency_welfare")]["office_code"] == "JUNG-CSC"

    # Decide one of Jongno's cases, to have a time to decision.
    case_id = (await cases_of(routing, first))["emergency_welfare"].id
    boss = routing.auth("supervisor", offices=["JONGNO-CSC"])
    response = await client.post(
        f"/v1/cases/{case_id}/decide",
        headers=boss,
        json={"decision": "denied", "reason_code": "income_above_threshold", "note": "Over the threshold."},
    )
    assert response.status_code == 200, response.text

    # The funnel: the supervisor sees Jongno over capacity; the admin sees every office.
    report = (await client.get("/v1/capacity", headers=boss)).json()
    assert [o["office_code"] for o in report["offices"]] == ["JONGNO-CSC"]
    office = report["offices"][0]
    assert (office["open_cases"], office["weighted_load"], office["over_capacity"]) == (2, 2.5, False)
    programs = {p["program_code"]: p for p in office["programs"]}
    welfare = programs["emergency_welfare"]
    assert (welfare["open_cases"], welfare["arrivals"], welfare["decided"]) == (1, 2, 1)
    assert welfare["median_working_days_to_decision"] == 0.0
    assert welfare["sla_compliance"] == 1.0
    assert (report["window_days"], welfare["arrivals_per_day"]) == (28, 0.071)  # 2 arrivals in 28 days
    assert programs["senior_care"]["open_cases"] == 1

    everything = (await client.get("/v1/capacity", headers=admin)).json()
    by_code = {o["office_code"]: o for o in everything["offices"]}
    assert len(by_code) == await routing.count(Office)
    assert by_code["JUNG-CSC"]["open_cases"] == 1
    assert by_code["MAPO-CSC"]["programs"] == []
    problem(await client.get("/v1/capacity", headers=boss, params={"office": "MAPO-CSC"}), 403)
    problem(await client.get("/v1/capacity", headers=routing.auth("caseworker", offices=["JONGNO-CSC"])), 403)


async def test_open_data_hides_small_counts_and_what_would_reveal_them(routing: RunningService) -> None:
    # Welfare cases this month: Yongsan 7, Jongno 6, Mapo 2.
    for district, n in ((YONGSAN, 7), (JONGNO, 6), (MAPO, 2)):
        for _ in range(n):
            await feed(routing, determined(uuid.uuid4(), [program("emergency_welfare")], district=district))
    resident = routing.auth("resident", resident_id=uuid.uuid4())

    catalogue = (await routing.client.get("/v1/open-data", headers=resident)).json()
    assert {d["dataset"] for d in catalogue} == {"cases", "sla", "referrals", "feedback", "take_up", "household_cases"}
    response = await routing.client.get("/v1/open-data/cases", headers=resident)
    assert response.status_code == 200, response.text
    rows = {r["district_code"]: r for r in response.json()["rows"]}
    assert rows[YONGSAN]["cases"] == 7
    assert rows[MAPO]["cases"] is None  # 2 < 5
    # Jongno's 6 is hidden too: with Mapo alone hidden, a monthly total for welfare would give Mapo's 2 away.
    assert rows[JONGNO]["cases"] is None
    assert {r["approved"] for r in rows.values()} == {0}
    assert {r["month"] for r in rows.values()} == {"2025-10"}

    as_csv = await routing.client.get("/v1/open-data/cases", headers=resident, params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {(r["district_code"], r["cases"]) for r in table} == {(YONGSAN, "7"), (JONGNO, ""), (MAPO, "")}
    problem(await routing.client.get("/v1/open-data/residents", headers=resident), 404)
