"""Concurrent claims of one case over real HTTP: exactly one caseworker wins, every other one gets 409."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from onestop.registry import BY_NAME
from services.routing.main import create_app
from services.routing.seed import seed
from services.routing.settings import RoutingSettings
from shared.auth import TokenIssuer
from shared.events import new_event
from shared.migrations import upgrade
from tests.services.routing.support import QUIET_TIMER, determined, program
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import service_settings
from tests.support.waiting import wait_until

CLAIMANTS = 8


async def test_exactly_one_of_concurrent_claims_wins(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer
) -> None:
    settings = service_settings(
        "routing", database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir,
        sla_check_interval_seconds=QUIET_TIMER, today="2025-10-02",
    )  # fmt: skip
    assert isinstance(settings, RoutingSettings)
    await upgrade(database_url, BY_NAME["routing"].migrations)
    await seed(settings)
    app = create_app(settings)
    limits = httpx.Limits(max_connections=CLAIMANTS * 2)
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        await wait_until(lambda: _ready(client))
        application = uuid.uuid4()
        await app.state.runtime.bus.publish_event(
            new_event(determined(application, [program("emergency_welfare")]), source="/onestop/test")
        )
        admin = {"Authorization": f"Bearer {issuer.mint('admin')}"}
        case_id = await _first_case(client, admin)

        tokens = [
            {"Authorization": f"Bearer {issuer.mint('caseworker', subject=f'caseworker:{n}', offices=['JONGNO-CSC'])}"}
            for n in range(CLAIMANTS)
        ]
        responses = await asyncio.gather(*(client.post(f"/v1/cases/{case_id}/claim", headers=h) for h in tokens))

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [409] * (CLAIMANTS - 1), [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()["assignee"]
        for lost in (r for r in responses if r.status_code == 409):
            assert lost.headers["content-type"].startswith("application/problem+json")
        case = (await client.get(f"/v1/cases/{case_id}", headers=admin)).json()
        assert case["assignee"] == winner
        assert [h["action"] for h in case["history"]] == ["routed", "claimed"]
        assert case["version"] == 2


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _first_case(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    found: list[str] = []

    async def routed() -> bool:
        items = (await client.get("/v1/queues/JONGNO-CSC", headers=admin)).json()["items"]
        found[:] = [i["id"] for i in items]
        return bool(found)

    await wait_until(routed)
    return found[0]
