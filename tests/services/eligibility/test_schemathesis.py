"""Schemathesis against the served app (real uvicorn, real NATS, SQLite): no input makes a server error, and every
answer is as the OpenAPI document declares it (status code, content type, body, headers)."""

from __future__ import annotations

from pathlib import Path

from services.eligibility.main import MIGRATIONS, create_app
from services.eligibility.seed import seed
from services.eligibility.settings import EligibilitySettings
from shared.auth import TokenIssuer
from shared.migrations import upgrade
from tests.services.eligibility.support import PARTNERS
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.schemathesis import operation_count, run_schemathesis
from tests.support.services import service_settings


async def test_every_answer_is_as_documented(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, issuer: TokenIssuer, tmp_path: Path
) -> None:
    settings = service_settings(
        "eligibility",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'eligibility.db'}",
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        partner_departments=PARTNERS,
    )
    assert isinstance(settings, EligibilitySettings)
    await upgrade(settings.database_url, MIGRATIONS)
    await seed(settings)
    app = create_app(settings)
    async with serve(app) as base_url:
        # An administrator may call every operation, so every operation is exercised past authorization.
        result = await run_schemathesis(
            base_url, tokens={"^/v1/": issuer.mint("admin")}, max_examples=10, report_dir=tmp_path / "schemathesis"
        )
    result.assert_conformant(operation_count(app.openapi()))
