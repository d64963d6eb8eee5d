"""Schemathesis against the served app (real uvicorn, real NATS, SQLite): no input makes a server error."""

from __future__ import annotations

from pathlib import Path

from services.eligibility.main import MIGRATIONS, create_app
from services.eligibility.seed import seed
from services.eligibility.settings import EligibilitySettings
from shared.auth import TokenIssuer
from shared.migrations import upgrade
from tests.services.eligibility.conftest import PARTNERS
from tests.support.http import run_schemathesis, serve
from tests.support.nats import NatsServer
from tests.support.services import service_settings


async def test_no_request_makes_a_server_error(
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
    async with serve(create_app(settings)) as base_url:
        # An administrator may call every operation, so every operation is exercised past authorization.
        result = await run_schemathesis(
            base_url, headers={"Authorization": f"Bearer {issuer.mint('admin')}"}, max_examples=20
        )
    assert result.returncode == 0, result.output[-6000:]
    assert " passed" in result.output
    assert "failed" not in result.output.split("Seed:")[0].lower()
