"""A read-only unit of work reads one snapshot, on SQLite and on PostgreSQL alike: what commits while it runs is not
seen by its later statements (a status view must not show a timeline entry whose change its cases do not show). New
rows flushed together are written in one statement (on SQLite, pages of a bounded number of parameters), each
object given its own row's id; a lookup by primary key that need not write what is pending first finds a row added
and not written yet; and SQLite's connections keep bounded caches."""

from __future__ import annotations

import gc
import itertools
import json
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, ForeignKey, Integer, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import registry, relationship

from shared.db import (
    ROWS_PER_EXECUTION,
    SQLITE_CACHE_KIB,
    SQLITE_CACHED_STATEMENTS,
    SQLITE_INSERT_PARAMETERS,
    Database,
    execute_rows,
    execute_rows_sync,
    get_unflushed,
    json_dumps,
    json_loads,
    note_absent,
    pending_rows,
)
from tests.support.databases import database_with
from tests.support.postgres import PostgresServer
from tests.support.round_trips import statements_sent

metadata = MetaData()
entries = Table(
    "snapshot_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False),
)
documents = Table("json_documents", metadata, Column("id", Integer, primary_key=True), Column("body", JSON))
parents = Table("pending_parents", metadata, Column("id", Integer, primary_key=True))
children = Table(
    "pending_children",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", ForeignKey("pending_parents.id")),
)


class Entry:
    id: int
    name: str

    def __init__(self, name: str) -> None:
        self.name = name


class SpecialEntry(Entry):
    """Of a subclass: not among the pending rows of ``Entry``."""


class Child:
    id: int


class Parent:
    id: int
    children: list[Child]


mapped = registry(metadata=metadata)
mapped.map_imperatively(Entry, entries)
mapped.map_imperatively(SpecialEntry, inherits=Entry)
mapped.map_imperatively(Child, children)
mapped.map_imperatively(Parent, parents, properties={"children": relationship(Child, cascade="all, delete-orphan")})


def entry(name: str, key: int | None = None) -> Entry:
    row = Entry(name)
    if key is not None:
        row.id = key
    return row


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


async def test_new_rows_flushed_together_are_one_insert_each_given_its_own_rows_id(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("first"))  # not at id 1: the ids of a later write start above what stands
    with statements_sent(db) as statements:
        async with db.session() as session:
            added = [Entry(f"entry {n}") for n in range(7)]
            session.add_all(added)
            await session.flush()
            given = {e.name: e.id for e in added}
    assert len([s for s in statements if s.startswith("INSERT")]) == 1, statements
    async with db.read_session() as reading:
        stored = {name: id_ for name, id_ in (await reading.execute(select(entries.c.name, entries.c.id))).all()}
    assert given == {name: id_ for name, id_ in stored.items() if name != "first"}
    assert sorted(given.values()) == [given[f"entry {n}"] for n in range(7)], "in the order they were added"


async def test_a_large_write_on_sqlite_goes_in_statements_of_bounded_size_each_row_its_own_id(tmp_path: Path) -> None:
    """Each statement SQLite prepares stays in its connection's cache: one of a whole batch's rows would hold megabytes
    there (see SQLITE_INSERT_PARAMETERS). The rows go in pages of at most that many parameters, every page but the
    last the same statement. (SQLite's bound: PostgreSQL writes the rows in one statement.)"""
    async with database_with(f"sqlite+aiosqlite:///{tmp_path / 'pages.db'}", metadata) as db:
        await _write_in_pages(db)


async def _write_in_pages(db: Database) -> None:
    count = SQLITE_INSERT_PARAMETERS * 2 + 7  # one parameter a row: three pages
    with statements_sent(db) as statements:
        async with db.session() as session:
            added = [Entry(f"entry {n}") for n in range(count)]
            session.add_all(added)
            await session.flush()
            given = [e.id for e in added]
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert [s.count("?") for s in inserts] == [SQLITE_INSERT_PARAMETERS, SQLITE_INSERT_PARAMETERS, 7]
    assert len(set(inserts[:2])) == 1, "full pages are one statement, prepared once"
    async with db.read_session() as reading:
        stored = dict((await reading.execute(select(entries.c.name, entries.c.id))).all())
    assert given == [stored[f"entry {n}"] for n in range(count)]
    assert given == sorted(given)


async def test_many_rows_go_in_executions_of_bounded_size_in_order_and_in_the_callers_transaction(db: Database) -> None:
    """SQLAlchemy makes every row's parameters before it sends the first statement of an execution, with the event
    loop held; ``execute_rows`` gives it ROWS_PER_EXECUTION rows at a time (between two, a transaction that has held
    the loop for its turn gives it back, as between any statements), the rows in order, all in the caller's
    transaction: a row that fails in the last part takes the parts before it back."""
    from sqlalchemy import event

    executions: list[int] = []

    def executed(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if getattr(clause, "table", None) is entries:
            executions.append(len(multiparams) if multiparams else 1)

    count = ROWS_PER_EXECUTION * 2 + 3
    event.listen(db.engine.sync_engine, "before_execute", executed)
    try:
        async with db.session() as session:
            await execute_rows(session, insert(entries), [{"name": f"entry {n}"} for n in range(count)])
        async with db.session() as session:
            rows = [{"name": f"more {n}"} for n in range(ROWS_PER_EXECUTION + 1)]
            await session.run_sync(lambda sync: execute_rows_sync(sync.connection(), insert(entries), rows))
        failing = [{"name": f"never {n}"} for n in range(ROWS_PER_EXECUTION)] + [{"name": None}]
        with pytest.raises(IntegrityError, match=r"(?i)not.null"):
            await _write_in_one_transaction(db, failing)
    finally:
        event.remove(db.engine.sync_engine, "before_execute", executed)
    assert executions == [ROWS_PER_EXECUTION, ROWS_PER_EXECUTION, 3, ROWS_PER_EXECUTION, 1, ROWS_PER_EXECUTION, 1]
    async with db.read_session() as reading:
        stored = await names(reading)
    assert stored == [f"entry {n}" for n in range(count)] + [f"more {n}" for n in range(ROWS_PER_EXECUTION + 1)]


async def _write_in_one_transaction(db: Database, rows: list[dict[str, Any]]) -> None:
    async with db.session() as session:
        await execute_rows(session, insert(entries), rows)


async def test_sqlite_connections_keep_a_bounded_page_cache_and_statement_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each SQLite connection may hold (see shared.db): its page cache, read back from SQLite, and the statements
    sqlite3 keeps prepared, as the connection was opened with. Write and read connections alike. (Write connections
    leave checkpoints to shared.sqlite.Checkpoints.)"""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'caches.db'}"
    opened: list[dict[str, Any]] = []
    connect: Any = aiosqlite.connect

    def opening(*args: Any, **kwargs: Any) -> Any:
        opened.append(kwargs)
        return connect(*args, **kwargs)

    monkeypatch.setattr(aiosqlite, "connect", opening)
    async with database_with(database_url, metadata) as db:
        async with db.session() as session:
            assert (await session.execute(text("PRAGMA cache_size"))).scalar() == -SQLITE_CACHE_KIB
            assert (await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
        async with db.read_session() as reading:
            assert (await reading.execute(text("PRAGMA cache_size"))).scalar() == -SQLITE_CACHE_KIB
    assert len(opened) >= 2
    assert all(kwargs.get("cached_statements") == SQLITE_CACHED_STATEMENTS for kwargs in opened), opened


async def test_a_lookup_without_flushing_finds_a_row_added_and_not_written_yet(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("stored"))
    async with db.session() as session:
        stored = (await session.execute(select(entries.c.id))).scalar_one()
        pending = Entry("pending")
        pending.id = stored + 1
        session.add(pending)
        with statements_sent(db) as statements:
            assert await get_unflushed(session, Entry, stored + 1) is pending
            found = await get_unflushed(session, Entry, stored)
            assert found is not None
            assert found.name == "stored"
            assert await get_unflushed(session, Entry, stored + 2) is None
        assert not [s for s in statements if s.startswith("INSERT")], "nothing was written to answer"
        assert pending in session.new
        async with session.begin_nested() as savepoint:
            rolled_back = Entry("rolled back")
            rolled_back.id = stored + 3
            session.add(rolled_back)
            await savepoint.rollback()
        assert await get_unflushed(session, Entry, stored + 3) is None, "a savepoint's rollback took it back"


async def test_the_pending_rows_of_a_class_are_those_added_and_neither_written_nor_taken_back(db: Database) -> None:
    async with db.session() as session:
        kept, written = Entry("kept"), Entry("written")
        session.add(written)
        await session.flush()
        async with session.begin_nested() as savepoint:
            session.add(Entry("rolled back"))
            assert [e.name for e in pending_rows(session, Entry)] == ["rolled back"]
            await savepoint.rollback()
        session.add(kept)
        assert pending_rows(session, Entry) == [kept], "neither the row written nor the one a rollback took back"
        await session.flush()
        assert pending_rows(session, Entry) == []


async def test_a_row_written_since_it_was_looked_up_is_no_longer_among_the_pending(db: Database) -> None:
    """Once written, a row is found where SQLAlchemy keeps it (the identity map): deleted and written after that, it
    is not found, though it was found pending before."""
    async with db.session() as session:
        first, second = entry("first", 1), entry("second", 2)
        session.add_all([first, second])
        assert await get_unflushed(session, Entry, 1) is first
        await session.flush()
        assert pending_rows(session, Entry) == []
        await session.delete(first)
        await session.flush()
        assert await get_unflushed(session, Entry, 1) is None, "written, then deleted"
        assert await get_unflushed(session, Entry, 2) is second


async def test_a_savepoints_rollback_takes_the_rows_added_in_it_out_of_the_lookups(db: Database) -> None:
    async with db.session() as session:
        before = entry("before", 1)
        session.add(before)
        assert await get_unflushed(session, Entry, 1) is before
        async with session.begin_nested() as savepoint:
            assert pending_rows(session, Entry) == [], "SQLAlchemy writes what is pending as a savepoint begins"
            inside = entry("inside", 2)
            session.add(inside)
            assert await get_unflushed(session, Entry, 2) is inside
            await savepoint.rollback()
        assert pending_rows(session, Entry) == []
        assert await get_unflushed(session, Entry, 2) is None, "taken back"
        assert await get_unflushed(session, Entry, 1) is before
        again = entry("again", 2)
        session.add(again)
        assert await get_unflushed(session, Entry, 2) is again


async def test_a_row_expunged_is_no_longer_pending_and_added_again_comes_last(db: Database) -> None:
    sessions: list[AsyncSession] = []

    async def failing_transaction() -> None:
        async with db.session() as session:
            sessions.append(session)
            a, b, c = entry("a", 1), entry("b", 2), entry("c", 3)
            session.add_all([a, b, c])
            assert await get_unflushed(session, Entry, 2) is b
            session.expunge(b)
            assert pending_rows(session, Entry) == [a, c]
            assert await get_unflushed(session, Entry, 2) is None
            session.add(b)
            assert pending_rows(session, Entry) == [a, c, b], "in the order added"
            assert await get_unflushed(session, Entry, 2) is b
            raise LookupError("the transaction fails")

    with pytest.raises(LookupError):
        await failing_transaction()
    assert pending_rows(sessions[0], Entry) == [], "its rollback took them all back"


async def test_a_pending_row_is_not_deleted_but_one_orphaned_is_dropped(db: Database) -> None:
    """A pending row cannot be deleted (SQLAlchemy refuses); one removed from its parent, whose rows go with it
    (delete-orphan), is taken out of the session at once."""
    async with db.session() as session:
        parent, child = Parent(), Child()
        parent.id, child.id = 1, 10
        parent.children.append(child)
        session.add(parent)
        assert pending_rows(session, Child) == [child], "added with its parent"
        assert await get_unflushed(session, Child, 10) is child
        with pytest.raises(InvalidRequestError):
            await session.delete(child)
        assert await get_unflushed(session, Child, 10) is child, "still pending"
        parent.children.remove(child)
        assert pending_rows(session, Child) == []
        assert await get_unflushed(session, Child, 10) is None


async def test_a_pending_row_is_found_by_its_key_as_it_is_now(db: Database) -> None:
    """By the key its attributes hold at the lookup, whenever they were set; and rows of a subclass are apart."""
    async with db.session() as session:
        late = entry("late")
        session.add(late)
        assert await get_unflushed(session, Entry, 5) is None
        late.id = 5
        assert await get_unflushed(session, Entry, 5) is late, "given its key after it was added (and looked for)"
        late.id = 6
        assert await get_unflushed(session, Entry, 5) is None
        assert await get_unflushed(session, Entry, 6) is late, "given another"
        del late.id
        assert await get_unflushed(session, Entry, 6) is None
        special = SpecialEntry("special")
        special.id = 7
        session.add(special)
        assert pending_rows(session, Entry) == [late]
        assert pending_rows(session, SpecialEntry) == [special]
        assert await get_unflushed(session, SpecialEntry, 7) is special


async def test_the_lookups_among_pending_rows_agree_with_the_sessions_new_rows_through_any_changes(
    db: Database,
) -> None:
    """Rows added, given keys (the same as another's too), expunged, added again, written, in savepoints rolled back
    or released, in an order drawn with a fixed seed: after each step, the pending rows are the session's new rows of
    the class in their order, and a lookup by key finds the first of them with that key."""
    draw = random.Random(14)
    fresh = itertools.count(1)
    written: set[int] = set()  # never given again: a flush would fail on it
    async with db.session() as session:
        savepoints: list[AsyncSessionTransaction] = []
        taken_back: list[Entry] = []

        def new_rows() -> list[Entry]:
            return [r for r in session.new if type(r) is Entry]

        def writable() -> None:
            """Keys a flush can write (each new row's given, once, and not written before)."""
            seen: set[int] = set()
            for row in new_rows():
                if row.id is None or row.id in seen or row.id in written:
                    row.id = next(fresh)
                seen.add(row.id)
            written.update(seen)

        for _ in range(300):
            pending, step = new_rows(), draw.random()
            if step < 0.3:
                session.add(entry("added", next(fresh) if draw.random() < 0.8 else None))
            elif step < 0.45 and pending:
                row, choice = draw.choice(pending), draw.random()
                others = [r.id for r in pending if r.id is not None]
                if choice < 0.2 and row.id is not None:
                    del row.id
                else:
                    row.id = draw.choice(others) if choice < 0.5 and others else next(fresh)
            elif step < 0.55 and pending:
                row = draw.choice(pending)
                session.expunge(row)
                taken_back.append(row)
            elif step < 0.62 and taken_back:
                row = taken_back.pop(draw.randrange(len(taken_back)))
                if inspect(row).transient:
                    session.add(row)
            elif step < 0.7:
                writable()
                await session.flush()
            elif step < 0.8 and len(savepoints) < 3:
                writable()  # SQLAlchemy writes what is pending as a savepoint begins
                savepoints.append(await session.begin_nested())
            elif step < 0.9 and savepoints:
                savepoint = savepoints.pop()
                if draw.random() < 0.6:
                    taken_back.extend(new_rows())
                    await savepoint.rollback()
                else:
                    writable()
                    await savepoint.commit()
            assert pending_rows(session, Entry) == new_rows()
            for key in {r.id for r in new_rows() if r.id is not None} | {draw.randrange(1, next(fresh))}:
                first = next((r for r in new_rows() if r.id == key), None)
                found = await get_unflushed(session, Entry, key)
                assert found is first if first is not None else found is None or not inspect(found).pending, key


async def test_a_row_noted_absent_is_answered_without_asking_until_the_transaction_adds_it(db: Database) -> None:
    async with db.session() as session:
        session.add(Entry("stored"))
    async with db.session() as session:
        stored = (await session.execute(select(entries.c.id))).scalar_one()
        note_absent(session, Entry, [stored + 1])
        with statements_sent(db) as statements:
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


async def test_a_row_noted_absent_and_written_is_found_after_nothing_else_refers_to_it(db: Database) -> None:
    """The identity map holds a clean row weakly: once nothing refers to a row the transaction wrote, it leaves the
    map. A key noted absent is answered from the map, so the row must still be found then (a resident's erasure
    written by one event of a batch, looked up by the next), not taken for absent."""
    async with db.session() as session:
        session.add(Entry("stored"))
    async with db.session() as session:
        stored = (await session.execute(select(entries.c.id))).scalar_one()
        note_absent(session, Entry, [stored + 1])
        added = Entry("added")
        added.id = stored + 1
        session.add(added)
        await session.flush()
        del added
        gc.collect()
        found = await get_unflushed(session, Entry, stored + 1)
        assert found is not None, "the row written in this transaction is found"
        assert found.name == "added"


async def test_json_columns_read_back_what_was_stored_even_what_orjson_refuses(db: Database) -> None:
    """JSON columns are parsed with orjson (``json_loads``); what it refuses and the standard library reads (SQLite's
    NaN) still reads, as it did before. An integer past 64 bits reads back as the nearest float (orjson's way)."""
    assert db.engine.sync_engine.dialect._json_deserializer is json_loads
    sqlite = db.engine.dialect.name == "sqlite"
    stored = {1: '{"answers": {"children": 2, "name": "김민준"}, "amounts": [1.5, null, true]}',
              2: '{"count": 1180591620717411303424}'}  # fmt: skip
    if sqlite:  # PostgreSQL's json type refuses NaN itself
        stored[3] = '{"ratio": NaN}'
    async with db.session() as session:
        for id_, body in stored.items():
            await session.execute(text("INSERT INTO json_documents (id, body) VALUES (:id, :body)"),
                                  {"id": id_, "body": body})  # fmt: skip
    async with db.read_session() as reading:
        bodies = {id_: body for id_, body in await reading.execute(select(documents.c.id, documents.c.body))}
    assert bodies[1] == {"answers": {"children": 2, "name": "김민준"}, "amounts": [1.5, None, True]}
    assert bodies[2] == {"count": 2**70}
    assert isinstance(bodies[2]["count"], float)
    if sqlite:
        assert math.isnan(bodies[3]["ratio"])


# What JSON columns are given: text (any, Korean included), numbers (integers past 64 bits, floats of every magnitude,
# NaN and the infinities), booleans, null, lists, and objects whose keys are text, or integers, finite floats and
# booleans made text (an infinite float or None as a key is written otherwise: see shared.db.json_dumps).
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_KEYS = st.text() | st.integers() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
_JSON_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=20
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and a float equal to another only with the same sign (0.0 and -0.0 differ)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=500, deadline=None)
@given(_JSON_VALUES)
def test_json_columns_are_written_as_the_standard_library_writes_them_read_back(value: Any) -> None:
    """``json_dumps`` (pydantic-core's writer) writes what ``json.dumps`` wrote, read back value for value and key for
    key in order: NaN and the infinities as NaN and Infinity (not null, as orjson would), any integer, every float to
    its last digit and sign, keys that are integers, finite floats or booleans as the same text."""
    written = json_dumps(value)
    assert _same(json.loads(written), json.loads(json.dumps(value)))


async def test_json_columns_are_written_with_json_dumps_and_read_back_the_same(db: Database) -> None:
    """Every engine writes JSON columns with ``json_dumps``; what it wrote reads back as it was given, NaN included
    on SQLite (PostgreSQL's json type refuses NaN, as it did before)."""
    assert db.engine.sync_engine.dialect._json_serializer is json_dumps
    assert db.read_engine.sync_engine.dialect._json_serializer is json_dumps
    sqlite = db.engine.dialect.name == "sqlite"
    given_ = {10: {"answers": {"children": 2, "name": "김민준 \"쌍둥이\"\n🎉"},
                   "amounts": [1.5, None, True, -0.0, 1e-07]},
              11: {"count": 2**64 - 1, "least": -(2**63), "keys": {"1": "one"}}}  # fmt: skip
    async with db.session() as session:
        await session.execute(insert(documents), [{"id": id_, "body": body} for id_, body in given_.items()])
        if sqlite:
            await session.execute(insert(documents), [{"id": 12, "body": {"ratio": math.nan, "top": math.inf}}])
    async with db.read_session() as reading:
        bodies = {id_: body for id_, body in await reading.execute(select(documents.c.id, documents.c.body))}
    for id_, body in given_.items():
        assert _same(bodies[id_], body), (bodies[id_], body)
    if sqlite:
        assert math.isnan(bodies[12]["ratio"])
        assert bodies[12]["top"] == math.inf
