"""Settings come from ONESTOP_<SERVICE>_ variables and .env; each service's migrations match its models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData

from onestop.registry import SERVICES
from shared.db import create_engine
from shared.migrations import current, upgrade


def test_each_service_reads_its_own_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESTOP_ROUTING_NATS_URL", "nats://routing-only:4222")
    monkeypatch.setenv("ONESTOP_INTAKE_STREAM_REPLICAS", "3")
    routing = next(s for s in SERVICES if s.name == "routing").settings()
    intake = next(s for s in SERVICES if s.name == "intake").settings()
    assert routing.nats_url == "nats://routing-only:4222"
    assert intake.nats_url == "nats://127.0.0.1:4222"
    assert intake.stream_replicas == 3
    assert routing.stream_replicas == 1


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ONESTOP_NOTIFY_DATABASE_URL=sqlite+aiosqlite:///elsewhere.db\n")
    monkeypatch.chdir(tmp_path)
    notify = next(s for s in SERVICES if s.name == "notify").settings()
    assert notify.database_url == "sqlite+aiosqlite:///elsewhere.db"


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONESTOP_INTAKE_STREAM_REPLICAS", "0")
    with pytest.raises(ValueError, match="stream_replicas"):
        next(s for s in SERVICES if s.name == "intake").settings()


def _metadata(service: str) -> MetaData:
    module = __import__(f"services.{service}.models", fromlist=["Base"])
    metadata: MetaData = module.Base.metadata
    return metadata


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
async def test_migrations_build_exactly_the_models(service: str, database_url: str) -> None:
    entry = next(s for s in SERVICES if s.name == service)
    await upgrade(database_url, entry.migrations)
    assert await current(database_url) is not None
    await upgrade(database_url, entry.migrations)  # a second run is a no-op, not an error
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), _metadata(service)
                )
            )
    finally:
        await engine.dispose()
    assert diff == [], f"{service}: models and migrations differ: {diff}"
