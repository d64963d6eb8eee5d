"""A test's own database with just the tables a test module declares (no service's migrations)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import MetaData

from shared.db import Database


@contextlib.asynccontextmanager
async def database_with(database_url: str, metadata: MetaData) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database
    finally:
        await database.dispose()
