"""A read-only unit of work reads one snapshot, on SQLite and on PostgreSQL alike: what commits while it runs is not
seen by its later statements (a status view must not show a timeline entry whose change its cases do not show)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from shared.db import Database
from tests.support.databases import database_with
from tests.support.postgres import PostgresServer

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


async def test_a_connection_the_server_closed_is_never_handed_out(postgres_server: PostgresServer) -> None:
    """PostgreSQL: after ``pg_terminate_backend`` (a failover, an operator) the pool's idle connections are closed;
    the next unit of work gets a new one and succeeds, without a ping to the server at every checkout."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from tests.support.waiting import wait_until

    url = postgres_server.create_database()
    db = Database(url, pool_size=2, max_overflow=0)
    try:
        async with db.read_session() as session:
            first = await session.scalar(text("SELECT pg_backend_pid()"))
            driver: Any = (await (await session.connection()).get_raw_connection()).driver_connection
        assert postgres_server.terminate_backends(make_url(url).database) == 1

        async def closed() -> bool:
            return bool(driver.is_closed())  # the pool's idle connection, once the loop has read its end

        await wait_until(closed, timeout=10)
        async with db.read_session() as session:
            second = await session.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await db.dispose()


async def test_a_read_defers_its_one_statement_to_a_transaction_of_its_own(db: Database) -> None:
    """What a read records (an audit entry, one statement) is written when the read ends well: on PostgreSQL alone,
    without a BEGIN and a COMMIT around it; on SQLite in a write transaction (which takes the writer lock). A read
    that fails writes nothing, and a read that defers more than one write writes them in one transaction."""
    from shared.db import defer_write
    from tests.support.round_trips import round_trips

    with round_trips(db) as sent:
        async with db.read_session() as reading:
            assert await names(reading) == []
            defer_write(reading, lambda writer: writer.execute(insert(entries).values(name="read")), one_statement=True)
    boundaries = [s for s in sent if not s.startswith(("SELECT", "INSERT"))]
    if db.dialect == "postgresql":
        assert boundaries == ["BEGIN", "COMMIT"], sent  # the read's; the entry is its own transaction
    else:
        assert boundaries == ["BEGIN", "COMMIT", "BEGIN", "COMMIT"], sent

    async def failing_read() -> None:
        async with db.read_session() as reading:
            defer_write(
                reading, lambda writer: writer.execute(insert(entries).values(name="failed")), one_statement=True
            )
            raise LookupError("the read failed")

    with pytest.raises(LookupError):
        await failing_read()
    async with db.read_session() as reading:
        defer_write(reading, lambda writer: writer.execute(insert(entries).values(name="one")), one_statement=True)
        defer_write(reading, lambda writer: writer.execute(insert(entries).values(name="two")))
    async with db.read_session() as reading:
        assert await names(reading) == ["read", "one", "two"]
