"""Every timestamp the API returns is timezone-aware UTC and the instant that was stored, whichever path reads it
(the row just written, or read back from the database), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from shared.events import ApplicationInfoProvided, ApplicationSubmitted, ResidentContext
from tests.services.eligibility.support import today
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService


def utc(text: Any) -> dt.datetime:
    """The instant of an API timestamp, which must carry the UTC offset (a naive time's zone is anyone's guess)."""
    assert isinstance(text, str), text
    value = dt.datetime.fromisoformat(text)
    assert value.tzinfo is not None, f"{text} has no offset"
    assert value.utcoffset() == dt.timedelta(0), f"{text} is not UTC"
    return value


async def test_determination_round_screening_and_version_times_are_utc(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    client = eligibility.client
    admin = eligibility.auth("admin")
    started = dt.datetime.now(dt.UTC)
    resident, app = uuid.uuid4(), uuid.uuid4()
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(
            ApplicationSubmitted(
                application_id=app, resident_id=resident, life_event="turning_65", answers={}, channel="web",
                application_date=today(), submitted_at=started, resident=ResidentContext(district_code="11440"),
            ),
        )  # fmt: skip
        await eligibility.publish(
            ApplicationInfoProvided(
                application_id=app, resident_id=resident, answers={"birth_date": "1950-05-01"},
                provided_at=dt.datetime.now(dt.UTC),
            ),
        )  # fmt: skip
        rounds = await log.wait_for(
            "eligibility.determined", lambda e: e.data["application_id"] == str(app), count=2, timeout=20
        )
    emitted = {e.data["round"]: utc(e.data["evaluated_at"]) for e in rounds}
    assert sorted(emitted) == [1, 2]

    # The determinations (latest round) and the list of rounds, read back from the database.
    path = f"/v1/applications/{app}/determinations"
    body = (await client.get(path, headers=admin)).json()
    assert body["round"] == 2
    assert utc(body["evaluated_at"]) == emitted[2]
    assert {r["round"]: utc(r["evaluated_at"]) for r in body["rounds"]} == emitted
    earlier = (await client.get(path, params={"round": 1}, headers=admin)).json()
    assert utc(earlier["evaluated_at"]) == emitted[1]

    # A screening: the row just written (POST), then read back (GET).
    created = await client.post("/v1/screenings", json={"programs": ["senior_transport_card"]}, headers=admin)
    assert created.status_code == 201, created.text
    screening = created.json()
    assert started <= utc(screening["started_at"]) <= utc(screening["finished_at"]) <= dt.datetime.now(dt.UTC)
    read = (await client.get(f"/v1/screenings/{screening['screening_id']}", headers=admin)).json()
    assert utc(read["started_at"]) == utc(screening["started_at"])
    assert utc(read["finished_at"]) == utc(screening["finished_at"])

    # Rule versions: seeded ones, and one added through the API (the PUT answers from the database too).
    seeded = (await client.get("/v1/programs/basic_pension", headers=admin)).json()
    assert all(utc(v["created_at"]) <= started for v in seeded["versions"])
    program = {k: seeded[k] for k in ("name", "department", "life_events", "automatic", "sla_days", "case_weight")}
    latest = {k: v for k, v in seeded["versions"][-1].items() if k not in ("version", "status", "origin", "created_at")}
    latest["effective_from"] = (today() + dt.timedelta(days=30)).isoformat()
    put = await client.put("/v1/programs/basic_pension", json={**program, "version": latest}, headers=admin)
    assert put.status_code == 200, put.text
    added = put.json()["versions"][-1]
    assert added["origin"] == "api"
    assert started <= utc(added["created_at"]) <= dt.datetime.now(dt.UTC)
    again = (await client.get("/v1/programs/basic_pension", headers=admin)).json()
    assert [utc(v["created_at"]) for v in again["versions"]] == [
        *(utc(v["created_at"]) for v in seeded["versions"]),
        utc(added["created_at"]),
    ]
