"""``Idempotency-Key`` when a retry races the first request: the retry looks for the stored answer before it writes
(on SQLite before it takes the writer lock), so it may not find it and do the work too; the key is stored by the first
to get there, and the other answers as a retry does, with what it did rolled back. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal, Role
from shared.db import Database
from shared.idempotency import Idempotency, IdempotencyKeyReused, StoredResponse
from shared.tables import platform_tables
from tests.support.databases import database_with

metadata = MetaData()
tables = platform_tables(metadata)
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False),
)
CALLER = Principal(subject="resident:1", role=Role.RESIDENT)


class Thing(BaseModel):
    name: str


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with database_with(database_url, metadata) as database:
        yield database


class Pause:
    """Holds a request at the start of its work (it has looked for a stored answer and found none) until let go."""

    def __init__(self) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> None:
        self.reached.set()
        await self.go.wait()


def making(session: AsyncSession, name: str, pause: Pause | None) -> Callable[[], Awaitable[Thing]]:
    async def create() -> Thing:
        if pause is not None:
            await pause()
        await session.execute(insert(things).values(name=name))
        return Thing(name=name)

    return create


async def _once(db: Database, body: Thing, key: str, pause: Pause | None = None) -> StoredResponse:
    async with db.session(reads_first=True) as session:
        return await Idempotency(tables).once(
            session, CALLER, key, "POST", "/v1/things", body, making(session, body.name, pause)
        )


async def _names(db: Database) -> list[str]:
    async with db.read_session() as session:
        return list((await session.execute(select(things.c.name).order_by(things.c.id))).scalars())


async def test_a_retry_that_raced_the_first_request_gets_its_answer_and_writes_nothing(db: Database) -> None:
    # The retry has looked for a stored answer (none yet) and is doing the work when the first request commits.
    pause = Pause()
    retry = asyncio.create_task(_once(db, Thing(name="same"), "k1", pause))
    await pause.reached.wait()
    first = await _once(db, Thing(name="same"), "k1")
    pause.go.set()
    answer = await retry
    assert (first.replayed, first.status_code, first.body) == (False, 201, {"name": "same"})
    assert (answer.replayed, answer.status_code, answer.body) == (True, 201, {"name": "same"})
    assert await _names(db) == ["same"]  # the retry's own row was rolled back

    # Afterwards a retry finds the stored answer before it writes anything.
    again = await _once(db, Thing(name="same"), "k1")
    assert (again.replayed, again.body) == (True, {"name": "same"})
    assert await _names(db) == ["same"]


async def test_the_same_key_with_another_body_racing_the_first_is_refused_and_writes_nothing(db: Database) -> None:
    pause = Pause()
    other = asyncio.create_task(_once(db, Thing(name="other"), "k2", pause))
    await pause.reached.wait()
    await _once(db, Thing(name="first"), "k2")
    pause.go.set()
    with pytest.raises(IdempotencyKeyReused):
        await other
    assert await _names(db) == ["first"]
