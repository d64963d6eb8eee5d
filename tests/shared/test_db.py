"""A read-only unit of work reads one snapshot, on SQLite and on PostgreSQL alike: what commits while it runs is not
seen by its later statements (a status view must not show a timeline entry whose change its cases do not show)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from shared.db import Database
from tests.support.databases import database_with

metadata = MetaData()
entries = Table(
    "snapshot_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False),
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with database_with(database_url, metadata) as database:
        yield database


async def names(session: object) -> list[str]:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    return list((await session.execute(select(entries.c.name).order_by(entries.c.id))).scalars())


async def test_a_read_sees_one_snapshot_while_writes_commit_beside_it(db: Database) -> None:
    async with db.session() as session:
        await session.execute(insert(entries).values(name="before"))

    async with db.read_session() as reading:
        assert await names(reading) == ["before"]
        async with db.session() as session:
            await session.execute(insert(entries).values(name="during"))
        assert await names(reading) == ["before"], "a write committed during the read is not seen by it"

    async with db.read_session() as reading:
        assert await names(reading) == ["before", "during"], "the next read sees it"
