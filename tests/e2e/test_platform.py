"""What `make run` does: NATS and the four services start, are ready, are seeded once however often, and stop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, func, select

from bench.probes import events_handled
from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, background_name
from shared.db import create_engine
from tests.e2e.support import Api, eventually, settled_round
from tests.e2e.test_journeys import JOB_LOSS

pytestmark = pytest.mark.e2e


def test_every_service_is_ready_and_nats_is_healthy(platform: Platform) -> None:
    for entry in SERVICES:
        response = httpx.get(f"{platform.url(entry.name)}/readyz", timeout=5)
        assert response.status_code == 200, (entry.name, response.text)
        assert response.json()["checks"] == {"database": "ok", "nats": "ok", "consumers": "ok"}
    monitor = httpx.get(f"http://127.0.0.1:{platform.config.nats_http_port}/healthz?js-enabled-only=true", timeout=5)
    assert monitor.status_code == 200
    assert not platform.exited()


def test_each_service_s_events_are_consumed_apart_from_its_api_at_a_lower_os_priority(
    platform: Platform, api: Api
) -> None:
    """`make run`'s set-up: the processes serving a service's API consume no events; a process of its own, at a
    lower OS priority, does, and answers its health checks and /metrics on its own port."""
    resident = api.register(district="11440", birth_date="1984-02-02")
    application = api.apply(resident, "job_loss", JOB_LOSS)
    api.view_when(application, resident.auth, settled_round, what="the application determined")
    for entry in SERVICES:
        serving = platform.processes[entry.name].pid
        working = platform.processes[background_name(entry.name)].pid
        expected = min(os.getpriority(os.PRIO_PROCESS, serving) + platform.config.background_niceness, 19)
        assert os.getpriority(os.PRIO_PROCESS, working) == expected, entry.name
        ready = httpx.get(f"{platform.background_url(entry.name)}/readyz", timeout=5)
        assert ready.status_code == 200, (entry.name, ready.text)
        assert ready.json()["checks"] == {"database": "ok", "nats": "ok", "consumers": "ok"}
        assert platform.background_url(entry.name) != platform.url(entry.name)
        assert not events_handled(httpx.get(f"{platform.url(entry.name)}/metrics", timeout=5).text), entry.name
    # Every service consumes something of a job-loss application (intake its status view, eligibility the
    # application, routing the determinations, notify what residents are told), each in its background process.
    for entry in SERVICES:
        url = f"{platform.background_url(entry.name)}/metrics"
        eventually(lambda url=url: sum(events_handled(httpx.get(url, timeout=5).text).values()) > 0,  # type: ignore[misc]
                   what=f"{entry.name}'s background process handled events")  # fmt: skip


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
