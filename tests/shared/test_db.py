"""A read-only unit of work reads one snapshot, on SQLite and on PostgreSQL alike: what commits while it runs is not
seen by its later statements (a status view must not show a timeline entry whose change its cases do not show). New
rows flushed together are written in one statement, each object given its own row's id; and a lookup by primary key
that need not write what is pending first finds a row added and not written yet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert, select
from sqlalchemy.orm import registry

from shared.db import Database, get_unflushed, note_absent
from tests.support.databases import database_with

metadata = MetaData()
entries = Table(
    "snapshot_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False),
)


class Entry:
    id: int
    name: str

    def __init__(self, name: str) -> None:
        self.name = name


registry(metadata=metadata).map_imperatively(Entry, entries)


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


async def test_new_rows_flushed_together_are_one_insert_each_given_its_own_rows_id(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("first"))  # not at id 1: the ids of a later write start above what stands
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.session() as session:
            added = [Entry(f"entry {n}") for n in range(7)]
            session.add_all(added)
            await session.flush()
            given = {e.name: e.id for e in added}
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert len([s for s in statements if s.startswith("INSERT")]) == 1, statements
    async with db.read_session() as reading:
        stored = {name: id_ for name, id_ in (await reading.execute(select(entries.c.name, entries.c.id))).all()}
    assert given == {name: id_ for name, id_ in stored.items() if name != "first"}
    assert sorted(given.values()) == [given[f"entry {n}"] for n in range(7)], "in the order they were added"


async def test_a_lookup_without_flushing_finds_a_row_added_and_not_written_yet(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("stored"))
    async with db.session() as session:
        stored = (await session.execute(select(entries.c.id))).scalar_one()
        pending = Entry("pending")
        pending.id = stored + 1
        session.add(pending)
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            assert await get_unflushed(session, Entry, stored + 1) is pending
            found = await get_unflushed(session, Entry, stored)
            assert found is not None
            assert found.name == "stored"
            assert await get_unflushed(session, Entry, stored + 2) is None
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        assert not [s for s in statements if s.startswith("INSERT")], "nothing was written to answer"
        assert pending in session.new
        async with session.begin_nested() as savepoint:
            rolled_back = Entry("rolled back")
            rolled_back.id = stored + 3
            session.add(rolled_back)
            await savepoint.rollback()
        assert await get_unflushed(session, Entry, stored + 3) is None, "a savepoint's rollback took it back"


async def test_a_row_noted_absent_is_answered_without_asking_until_the_transaction_adds_it(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("stored"))
    async with db.session() as session:
        stored = (await session.execute(select(entries.c.id))).scalar_one()
        note_absent(session, Entry, [stored + 1])
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            assert await get_unflushed(session, Entry, stored + 1) is None
            assert not statements, "not asked again"
            added = Entry("added")
            added.id = stored + 1
            session.add(added)
            assert await get_unflushed(session, Entry, stored + 1) is added, "pending"
            await session.flush()
            assert await get_unflushed(session, Entry, stored + 1) is added, "written in this transaction"
            assert [s for s in statements if s.startswith("INSERT")], "the flush wrote it"
            assert not [s for s in statements if s.startswith("SELECT")], "and nothing was asked"
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
