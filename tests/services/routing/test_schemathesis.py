"""Schemathesis against the served API (real HTTP, real NATS, a real database): no input makes a server error, and
every answer is as the OpenAPI document declares it (status code, content type, body, headers)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from onestop.registry import BY_NAME
from services.routing.main import create_app
from services.routing.seed import seed
from shared.auth import TokenIssuer
from shared.events import new_event
from shared.migrations import upgrade
from tests.services.routing.support import QUIET_TIMER, determined, program
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.schemathesis import operation_count, phases_for, run_schemathesis
from tests.support.services import service_settings
from tests.support.waiting import wait_until


async def test_every_answer_is_as_documented(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer, tmp_path: Path
) -> None:
    settings = service_settings(
        "routing", database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir,
        sla_check_interval_seconds=QUIET_TIMER,
    )  # fmt: skip
    await upgrade(database_url, BY_NAME["routing"].migrations)
    await seed(settings)
    app = create_app(settings)  # type: ignore[arg-type]
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        await wait_until(lambda: _ready(client))
        # Some cases, so that the queue, capacity and open data have something to show.
        for n in range(3):
            data = determined(uuid.uuid4(), [program(f"program_{n}"), program("grant", "eligible", automatic=True)])
            await app.state.runtime.bus.publish_event(new_event(data, source="/onestop/test"))

        # An administrator may call every operation but a partner's answers to a referral, which only the partner
        # gives: so every operation is exercised past authorization.
        tokens = {
            "^/v1/referrals/.+/(accept|decline|complete)$": issuer.mint("partner", partner_id="saebom-ngo"),
            "^/v1/": issuer.mint("admin"),
        }
        result = await run_schemathesis(
            base_url,
            tokens=tokens,
            max_examples=10,
            phases=phases_for(database_url),
            report_dir=tmp_path / "schemathesis",
        )
    result.assert_conformant(operation_count(app.openapi()))


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
