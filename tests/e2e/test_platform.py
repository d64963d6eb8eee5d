"""What `make run` does: NATS and the four services start, are ready, are seeded once however often, and stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, func, select

from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig
from shared.db import create_engine

pytestmark = pytest.mark.e2e


def test_every_service_is_ready_and_nats_is_healthy(platform: Platform) -> None:
    for entry in SERVICES:
        response = httpx.get(f"{platform.url(entry.name)}/readyz", timeout=5)
        assert response.status_code == 200, (entry.name, response.text)
        assert response.json()["checks"] == {"database": "ok", "nats": "ok", "consumers": "ok"}
    monitor = httpx.get(f"http://127.0.0.1:{platform.config.nats_http_port}/healthz?js-enabled-only=true", timeout=5)
    assert monitor.status_code == 200
    assert not platform.exited()


async def _row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            metadata = MetaData()
            await conn.run_sync(metadata.reflect)
            counts = {}
            for table in metadata.sorted_tables:
                if table.name in ("inbox", "outbox", "alembic_version"):
                    continue  # bus traffic, not seed data
                counts[table.name] = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            return counts
    finally:
        await engine.dispose()


def test_seeding_again_duplicates_nothing(tmp_path: Path) -> None:
    """What a second `make run` does to the data: migrate and seed again. On databases of their own, since the
    running platform's change as events are handled."""
    fresh = Platform(PlatformConfig(var_dir=tmp_path))
    fresh.migrate()
    fresh.seed()
    urls = {e.name: fresh.settings_values(e)["database_url"] for e in SERVICES}
    before = {name: asyncio.run(_row_counts(url)) for name, url in urls.items()}
    assert before["eligibility"]["programs"] >= 30
    assert before["routing"]["offices"] >= 10
    fresh.migrate()
    fresh.seed()
    after = {name: asyncio.run(_row_counts(url)) for name, url in urls.items()}
    assert after == before
