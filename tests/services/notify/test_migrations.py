"""notify's Alembic history builds exactly its models, on SQLite and PostgreSQL, and can be walked back."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from services.notify.main import MIGRATIONS
from services.notify.models import Base
from shared.db import create_engine
from shared.migrations import alembic_config, current, upgrade


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
            )
    finally:
        await engine.dispose()


async def _downgrade(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(MIGRATIONS, url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_the_migrations_build_the_models_and_walk_back(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    assert await current(database_url) == "0002"
    assert await _diff(database_url) == []

    await _downgrade(database_url, "0001")
    assert await current(database_url) == "0001"
    assert "notifications" not in await _tables(database_url)
    assert "outbox" in await _tables(database_url)

    await upgrade(database_url, MIGRATIONS)
    assert await _diff(database_url) == []
