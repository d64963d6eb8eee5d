"""The models and the migration history describe the same schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from services.intake.main import MIGRATIONS
from services.intake.models import Base
from shared.db import create_engine
from shared.migrations import current, upgrade


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_models_match_the_migrations_at_head(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    await upgrade(database_url, MIGRATIONS)  # running it again is harmless
    assert await current(database_url) == "0002"
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []
