"""``onestop screen``: a background screening asked for over HTTP and followed with a progress bar to its end."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest

from onestop.cli import main
from services.eligibility.main import MIGRATIONS, create_app
from services.eligibility.models import ResidentRow, ScreeningRow
from services.eligibility.seed import seed
from services.eligibility.settings import EligibilitySettings
from shared.auth import TokenIssuer
from shared.db import Database
from shared.migrations import upgrade
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import service_settings


async def test_screen_queues_a_run_and_follows_it_to_its_end(
    nats_server: NatsServer, bus_prefix: str, keys_dir: Path, issuer: TokenIssuer, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = service_settings(
        "eligibility", database_url=f"sqlite+aiosqlite:///{tmp_path / 'eligibility.db'}", nats_url=nats_server.url,
        prefix=bus_prefix, keys_dir=keys_dir, screening_check_interval_seconds=0.1, screening_batch_size=2,
    )  # fmt: skip
    assert isinstance(settings, EligibilitySettings)
    await upgrade(settings.database_url, MIGRATIONS)
    await seed(settings)
    db = Database(settings.database_url)
    async with db.session() as session:
        for year in (1948, 1955, 1962, 1979, 1991):
            session.add(
                ResidentRow(
                    resident_id=uuid.uuid4(),
                    registry_version=1,
                    birth_date=dt.date(year, 3, 3),
                    district_code="11440",
                    household=[],
                    vulnerability=[],
                    preferred_language="ko",
                    proactive_screening=True,
                    consents={"proactive_screening": True},
                )
            )
    async with serve(create_app(settings)) as url:
        admin = issuer.mint("admin")
        code = await asyncio.to_thread(main, ["screen", "--url", url, "--token", admin, "--interval", "0.05"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "5/5" in out, "the bar ends with every resident screened"
        assert "completed" in out
        assert "new opportunities" in out

        caseworker = issuer.mint("caseworker", offices=["MAPO-CSC"])
        refused = await asyncio.to_thread(main, ["screen", "--url", url, "--token", caseworker])
        assert refused == 1
        assert "403" in capsys.readouterr().out
        queued = await asyncio.to_thread(main, ["screen", "--url", url, "--token", admin, "--no-wait",
                                                "--program", "senior_transport_card"])  # fmt: skip
        assert queued == 0
        assert "queued (1 programs)" in capsys.readouterr().out
    async with db.session() as session:
        from sqlalchemy import func, select

        requested = await session.scalar(select(func.count()).where(ScreeningRow.kind == "requested"))
    await db.dispose()
    assert requested == 2
