"""A program whose department no office handles (not even a city-wide fallback), over the real NATS and database.

No case is lost: it is held at the city-wide desk (rule ``unserved``) with the reason in its routing record and
history, announced to the resident like any other case, counted for operators, and transferred once an office takes
the department. Only with no city-wide desk at all is there nowhere to hold it: the determination then waits as a
dead letter whose error names the gap, and a replay once an administrator fixed the offices loses nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.services.routing.support import (
    cases_of,
    determined,
    emitted,
    feed,
    office_body,
    program,
    timer,
)
from tests.support.services import RunningService

MONDAY = dt.date(2025, 11, 3)
BUSAN_JUNG_GU = "26110"  # a district outside the city: no local office of the seed serves it
DESK = "SEOUL-CITYHALL"


@pytest.fixture
def routing_today() -> dt.date:
    return MONDAY


async def put_office(service: RunningService, code: str, body: dict[str, Any], status: int = 200) -> None:
    response = await service.client.put(f"/v1/offices/{code}", headers=service.auth("admin"), json=body)
    assert response.status_code == status, response.text


async def unserved_gauge(service: RunningService, department: str) -> str:
    """The operators' gauge of held cases of a department, as of a fresh pass of the SLA timer."""
    await timer(service).sweep()
    metrics = (await service.client.get("/metrics")).text
    prefix = f'onestop_routing_unserved_cases{{department="{department}"}} '
    return next(line.removeprefix(prefix) for line in metrics.splitlines() if line.startswith(prefix))


async def test_a_program_no_office_handles_is_held_at_the_city_wide_desk_until_an_office_takes_it(
    routing: RunningService,
) -> None:
    # City Hall stops being the fallback for tax: no office handles tax for a resident of Busan.
    city_hall = await office_body(routing, DESK)
    await put_office(routing, DESK, {**city_hall, "departments": [d for d in city_hall["departments"] if d != "tax"]})

    app = uuid.uuid4()
    programs = [
        program("local_welfare"),  # City Hall is still the fallback for welfare
        program("tax_refund", department="tax"),  # nobody handles tax
        program("tax_credit", "eligible", department="tax", automatic=True, amount=30_000),
    ]
    await feed(routing, determined(app, programs, district=BUSAN_JUNG_GU, application_date=MONDAY))

    cases = await cases_of(routing, app)
    assert {code: (c.office_code, c.status, c.routing["rule"]) for code, c in cases.items()} == {
        "local_welfare": (DESK, "open", "fallback"),
        "tax_refund": (DESK, "open", "unserved"),
        "tax_credit": (DESK, "decided", "unserved"),
    }
    held = cases["tax_refund"]
    why = held.routing["explanation"]
    assert ("no office handles tax" in why.lower(), BUSAN_JUNG_GU in why, DESK in why) == (True, True, True), why
    assert held.due_date == dt.date(2025, 11, 10)  # its SLA runs as any case's: the resident is owed an answer

    # The resident's status hears where the case is and why, as for any case.
    routed = {e["program_code"]: e for e in await emitted(routing, "case.routed")}
    assert (routed["tax_refund"]["office_code"], routed["tax_refund"]["status"]) == (DESK, "open")
    assert (routed["tax_refund"]["reason"], routed["tax_refund"]["due_date"]) == (why, "2025-11-10")
    grant = routed["tax_credit"]
    assert (grant["office_code"], grant["status"]) == (DESK, "closed")
    assert "no office handles tax" in grant["reason"].lower(), grant["reason"]

    # The desk finds it in its queue, with the reason in the case's history; operators see it counted.
    desk = routing.auth("supervisor", subject="staff:cityhall-lead", offices=[DESK])
    queue = (await routing.client.get(f"/v1/queues/{DESK}", headers=desk)).json()
    assert {i["program_code"] for i in queue["items"]} == {"local_welfare", "tax_refund"}
    detail = (await routing.client.get(f"/v1/cases/{held.id}", headers=desk)).json()
    assert [(h["action"], h["details"]["routing"]["rule"]) for h in detail["history"]] == [("routed", "unserved")]
    assert detail["routing"]["explanation"] == why
    assert (await unserved_gauge(routing, "tax"), await unserved_gauge(routing, "welfare")) == ("1.0", "0.0")

    # An office takes tax for Busan: the desk hands the held case over, and new cases go there directly.
    busan_tax = {
        **city_hall,
        "name": {"ko": "부산중부세무서", "en": "Busan Jungbu Tax Office"},
        "kind": "tax_office",
        "departments": ["tax"],
        "districts": [BUSAN_JUNG_GU],
        "languages": ["ko"],
        "supervisors": ["staff:busan-tax-lead"],
        "fallback": False,
    }
    await put_office(routing, "BUSAN-TAX", busan_tax, status=201)
    response = await routing.client.post(
        f"/v1/cases/{held.id}/transfer", headers=desk, json={"office_code": "BUSAN-TAX", "reason": "now served"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["office_code"] == "BUSAN-TAX"
    assert await unserved_gauge(routing, "tax") == "0.0"
    later = uuid.uuid4()
    await feed(routing, determined(later, [program("tax_refund", department="tax")], district=BUSAN_JUNG_GU))
    case = (await cases_of(routing, later))["tax_refund"]
    assert (case.office_code, case.routing["rule"]) == ("BUSAN-TAX", "jurisdiction")


async def test_with_no_city_wide_desk_the_determination_waits_as_a_dead_letter_naming_the_gap(
    routing: RunningService,
) -> None:
    admin = routing.auth("admin")
    city_hall = await office_body(routing, DESK)
    await put_office(routing, DESK, {**city_hall, "fallback": False})

    app = uuid.uuid4()
    programs = [program("local_welfare"), program("tax_refund", department="tax")]
    await feed(routing, determined(app, programs, district=BUSAN_JUNG_GU, application_date=MONDAY))
    assert await cases_of(routing, app) == {}
    assert not [e for e in await emitted(routing) if e.get("application_id") == str(app)]
    (letter,) = (await routing.client.get("/v1/admin/dead-letters", headers=admin)).json()
    error = letter["error"]
    for words in ("welfare", BUSAN_JUNG_GU, "local_welfare", str(app), "no city-wide", "replay"):
        assert words in error, (words, error)

    # The administrator restores the desk and replays: every program of the determination gets its case.
    await put_office(routing, DESK, city_hall)
    response = await routing.client.post(f"/v1/admin/dead-letters/{letter['id']}/replay", headers=admin)
    assert response.json() == {"id": letter["id"], "handled": True}, response.text
    cases = await cases_of(routing, app)
    assert {code: (c.office_code, c.routing["rule"]) for code, c in cases.items()} == {
        "local_welfare": (DESK, "fallback"),
        "tax_refund": (DESK, "fallback"),
    }
