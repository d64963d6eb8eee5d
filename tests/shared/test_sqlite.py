"""The SQLite cursor behaves as a DB-API cursor must for SQLAlchemy and runs small statements on the loop's thread
(no thread hop), giving the loop a turn during a long run of them; the process's writes to one database take turns in
the event loop (no SQLITE_BUSY, no busy polling), and reads never wait for a writer."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import sqlite
from shared.db import Database, background, defer_write
from tests.support.loop_clock import LoopClock
from tests.support.waiting import wait_until

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False, unique=True),
    Column("size", Integer, nullable=False),
)
pages = Table("pages", metadata, Column("id", Integer, primary_key=True), Column("body", LargeBinary, nullable=False))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'hop.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


async def test_rows_row_counts_and_generated_ids(db: Database) -> None:
    async with db.session() as session:
        first: Any = await session.execute(insert(items).values(name="a", size=1))
        assert first.inserted_primary_key == (1,)
        await session.execute(insert(items), [{"name": f"n{i}", "size": i} for i in range(2, 302)])
        returned = (await session.execute(insert(items).values(name="r", size=7).returning(items.c.id))).scalar_one()
        assert returned == 302
        changed: Any = await session.execute(update(items).where(items.c.size >= 100).values(size=0))
        assert changed.rowcount == 202  # sizes 100..301; the optimistic updates of routing's claims rely on this
        gone: Any = await session.execute(delete(items).where(items.c.name == "absent"))
        assert gone.rowcount == 0

    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(items)) == 302
        names = (await session.execute(select(items.c.name).order_by(items.c.id).limit(3))).scalars().all()
        assert names == ["a", "n2", "n3"]
        partial = await session.stream(select(items.c.id).order_by(items.c.id))
        assert len([row async for row in partial]) == 302
        result = await session.execute(select(items.c.id).order_by(items.c.id))
        assert [r.id for r in result.fetchmany(2)] == [1, 2]
        assert len(result.fetchall()) == 300


async def test_errors_are_sqlalchemy_errors_and_leave_nothing_written(db: Database) -> None:
    async with db.session() as session:
        await session.execute(insert(items).values(name="taken", size=1))

    async def duplicate_after_a_good_row() -> None:
        async with db.session() as session:
            await session.execute(insert(items).values(name="other", size=2))
            await session.execute(insert(items).values(name="taken", size=3))

    async def unknown_table() -> None:
        async with db.session() as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(IntegrityError):
        await duplicate_after_a_good_row()
    with pytest.raises(OperationalError):
        await unknown_table()

    async with db.session() as session:  # the pooled connection is still usable, and the rollback took "other"
        assert (await session.execute(select(items.c.name))).scalars().all() == ["taken"]


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, one entry for each call into the driver's thread."""
    calls: list[int] = []
    original: Any = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return calls


async def test_a_statement_of_few_rows_is_no_call_into_the_driver_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.session() as session:
        await session.execute(select(1))  # the transaction's BEGIN and a first statement
        calls = count_hops(monkeypatch)
        await session.execute(insert(items).values(name="x", size=1))
        await session.execute(insert(items), [{"name": f"few{i}", "size": i} for i in range(sqlite.INLINE_ROWS)])
        rows = (await session.execute(select(items.c.name, items.c.size).where(items.c.name == "x"))).all()
        assert rows == [("x", 1)]
        assert calls == []
        # More rows than INLINE_ROWS in one executemany: the driver's thread runs it.
        many = [{"name": f"many{i}", "size": i} for i in range(sqlite.INLINE_ROWS + 1)]
        await session.execute(insert(items), many)
        assert len(calls) == 1
    assert len(calls) == 2, "and the COMMIT, behind that work in the driver's thread"


async def test_a_transaction_begins_with_its_first_statement_and_commits_on_the_loop_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction's BEGIN (``BEGIN IMMEDIATE`` for a write) goes with its first statement and its COMMIT follows
    its last, all on the loop's thread (the WAL is checkpointed elsewhere); and what it wrote is there."""
    async with db.session() as session:
        await session.execute(select(1))  # the pool's connections opened (and configured) before counting
    async with db.read_session() as session:
        await session.execute(select(1))
    calls = count_hops(monkeypatch)
    async with db.session() as session:
        await session.execute(insert(items).values(name="one statement", size=1))
    async with db.read_session() as session:
        assert (await session.execute(select(items.c.name))).scalars().all() == ["one statement"]
    assert calls == [], "BEGIN IMMEDIATE went with the INSERT, and the COMMITs ran on the loop's thread"


def test_a_checkpoint_waits_for_a_lock_another_connection_holds(tmp_path: Path) -> None:
    """Another connection holding the database (another process's checkpoint, say) makes a checkpoint wait on its
    thread, not fail with "database is locked"."""
    file = str(tmp_path / "held.db")
    holder = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("COMMIT")  # exclusive locking mode: the lock is kept after the commit
    threading.Timer(0.3, holder.close).start()
    busy, pages, copied = sqlite._checkpoint(file)
    assert busy == 0
    assert pages == copied


@pytest.mark.parametrize(("rows", "hops"), [(sqlite.INLINE_ROWS, 0), (sqlite.INLINE_ROWS + 1, 1)])
async def test_a_transaction_that_changed_more_than_inline_rows_commits_in_the_driver_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch, rows: int, hops: int
) -> None:
    """Writing out a large transaction's pages may wait on the disk: a commit of more than INLINE_ROWS changed rows
    (each changed by a statement of its own on the loop's thread) goes to the driver's thread; one of as many, not."""
    async with db.session() as session:
        await session.execute(select(1))
    calls = count_hops(monkeypatch)
    async with db.session() as session:
        for i in range(rows):
            await session.execute(insert(items).values(name=f"row{i}", size=i))
        assert calls == []
    assert len(calls) == hops
    async with db.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(items)) == rows


async def test_the_wal_is_checkpointed_on_another_thread_after_a_commit_never_in_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write connections do not checkpoint at a commit (it runs on the loop's thread: the copy and its fsyncs would
    hold the loop); a checkpoint follows on another thread, CHECKPOINT_EVERY at most after the commit."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 1.0)
    threads: list[int] = []
    checkpoint = sqlite._checkpoint

    def noting(database: str) -> tuple[int, int, int]:
        threads.append(threading.get_ident())
        return checkpoint(database)

    monkeypatch.setattr(sqlite, "_checkpoint", noting)
    file = tmp_path / "hop.db"
    checkpoints = sqlite.checkpoints_for(str(file))
    assert checkpoints is not None
    await wait_until(lambda: checkpoints.idle)  # what the fixture's commit set going is over
    async with db.session() as session:
        await session.execute(insert(pages).values(body=b"first"))
    await wait_until(lambda: bool(threads) and checkpoints.idle)  # checkpointed, within CHECKPOINT_EVERY
    before, checkpointed = file.stat().st_size, len(threads)

    # 6 MB in one commit: SQLite's own checkpoint would have copied them (1,000 pages) into the file at the COMMIT.
    async with db.session() as session:
        await session.execute(insert(pages), [{"body": bytes(600_000)} for _ in range(10)])
    assert file.stat().st_size == before, "nothing checkpointed at the commit"
    await wait_until(lambda: file.stat().st_size > before + 6_000_000, timeout=5)
    assert len(threads) == checkpointed + 1
    assert threading.get_ident() not in threads, "not on the loop's thread"


async def test_a_database_disposed_of_leaves_no_checkpoint_due_to_open_its_file_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint due after the last commit is dropped when the database is disposed of: its directory removed
    next (a benchmark's temporary one), a checkpoint opening the file would fail, as ``make bench`` logged."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 0.3)
    folder = tmp_path / "gone"
    folder.mkdir()
    database = Database(f"sqlite+aiosqlite:///{folder / 'kept.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    checkpoints = sqlite.checkpoints_for(str(folder / "kept.db"))
    assert checkpoints is not None
    await wait_until(lambda: checkpoints.idle)
    async with database.session() as session:
        await session.execute(insert(items).values(name="last", size=1))
    assert not checkpoints.idle, "a checkpoint is due after the commit"
    await database.dispose()
    assert checkpoints.idle
    assert not (folder / "kept.db-wal").exists(), "the last connection closed checkpointed the WAL and removed it"
    shutil.rmtree(folder)
    await asyncio.sleep(0.5)
    assert "checkpoint failed" not in caplog.text
    assert not folder.exists()


async def test_disposing_of_a_database_waits_for_its_running_checkpoint(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []
    checkpoint = sqlite._checkpoint

    def slow(database: str) -> tuple[int, int, int]:
        started.set()
        release.wait(5)
        result = checkpoint(database)
        finished.append(True)
        return result

    monkeypatch.setattr(sqlite, "_checkpoint", slow)
    checkpoints = sqlite.checkpoints_for(str(tmp_path / "hop.db"))
    assert checkpoints is not None
    await wait_until(lambda: checkpoints.idle)
    async with db.session() as session:
        await session.execute(insert(items).values(name="last", size=1))
    await asyncio.to_thread(started.wait, 5)
    disposing = asyncio.ensure_future(db.dispose())
    await asyncio.sleep(0.2)
    assert not disposing.done(), "waits for the checkpoint running"
    release.set()
    await disposing
    assert finished == [True]
    assert checkpoints.idle


async def test_few_rows_are_read_on_the_loop_thread_and_the_rest_of_a_long_result_in_the_driver_thread(
    db: Database,
) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    async with db.session() as session:
        await session.execute(insert(items), [{"name": f"n{i}", "size": i} for i in range(3 * sqlite.INLINE_ROWS)])

    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection

        def where_am_i(size: int) -> int:
            seen.append(threading.get_ident())
            return size

        await driver.create_function("where_am_i", 1, where_am_i)
        one = (await conn.execute(text("SELECT where_am_i(size) FROM items WHERE size = 5"))).scalar_one()
        assert one == 5
        assert seen == [loop_thread]
        seen.clear()
        every = (await conn.execute(text("SELECT where_am_i(size) FROM items ORDER BY id"))).scalars().all()
    assert every == list(range(3 * sqlite.INLINE_ROWS))  # every row, in order, across the two threads
    assert seen[: sqlite.INLINE_ROWS] == [loop_thread] * sqlite.INLINE_ROWS
    assert loop_thread not in seen[sqlite.INLINE_ROWS + 1 :]  # sqlite3 may step one row ahead on the loop's thread


async def _turns_others_get(db: Database, who: str, *, steps: int, work: Callable[[], None] = lambda: None) -> int:
    """How many turns another task gets while a write transaction runs ``steps`` statements, each after ``work`` that
    holds the loop (its handler's Python, say)."""
    running = True
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    async with db.session() as session:
        await session.execute(insert(items).values(name=who, size=0))  # the writer lock is held from here
        await asyncio.sleep(0)
        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        counted = turns
        for i in range(steps):
            work()
            await session.execute(insert(items).values(name=f"{who}{i}", size=i))
        taken = turns - counted
        running = False
    await other
    return taken


async def test_a_long_run_of_statements_gives_the_loop_turns(db: Database) -> None:
    """Statements on the loop's thread never wait, so a flush of many would hold the loop from its first to its last;
    the cursor gives the loop a turn whenever it has been held for shared.turns.YIELD_EVERY (HOLDING_TURN_EVERY in a
    request's write transaction, as here)."""
    assert await _turns_others_get(db, "row", steps=3000) > 1  # each its own statement: ~0.1 s in all


async def test_a_request_s_write_transaction_holding_the_writer_lock_runs_on_without_giving_turns(
    db: Database, loop_clock: LoopClock
) -> None:
    """Every writer waits for a request's transaction once it holds the writer lock: its statements run on without
    giving the loop to others every YIELD_EVERY (HOLDING_TURN_EVERY: a few steps of 3 ms of work go by); background
    work's (a consumer's batch, which holds it far longer) gives turns as before."""

    def work() -> None:
        loop_clock.hold(0.003)

    request = await _turns_others_get(db, "request", steps=4, work=work)

    async def as_background() -> int:
        background()
        return await _turns_others_get(db, "batch", steps=4, work=work)

    batch = await asyncio.create_task(as_background())
    assert request == 0
    assert batch >= 3, "a turn before each statement after the first"


# ---------------------------------------------------------------------------------------------- writers and readers


@pytest.fixture
async def impatient_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    """SQLite's own busy handler off: a transaction that found the write lock taken would fail at once with
    SQLITE_BUSY, so a test passing on it shows the process's writer lock did the waiting."""
    monkeypatch.setattr("shared.db.SQLITE_BUSY_TIMEOUT_MS", 0)
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


class LockHolder:
    """A write transaction that has written a row ``name`` and holds the process's writer lock until let go."""

    def __init__(self, db: Database, name: str, size: int) -> None:
        self.wrote, self.may_commit = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(self._hold(db, name, size))

    async def _hold(self, db: Database, name: str, size: int) -> None:
        async with db.session() as session:
            await session.execute(insert(items).values(name=name, size=size))
            self.wrote.set()
            await self.may_commit.wait()

    @classmethod
    async def holding(cls, db: Database, name: str, size: int = 1) -> LockHolder:
        holder = cls(db, name, size)
        await holder.wrote.wait()
        return holder


async def test_concurrent_writers_take_turns_without_sqlite_busy_each_starting_after_the_one_before(
    impatient_db: Database,
) -> None:
    db = impatient_db
    seen_by: dict[str, list[str]] = {}

    async def writer(name: str) -> None:
        async with db.session() as session:
            seen_by[name] = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
            await session.execute(insert(items).values(name=name, size=2))

    first = await LockHolder.holding(db, "first")
    waiting = [asyncio.create_task(writer(f"w{n}")) for n in range(2)]
    await wait_until(lambda: _writers_waiting(db, 2))
    assert not any(task.done() for task in waiting), "no writer began while the first held the write lock"
    first.may_commit.set()
    await asyncio.gather(first.task, *waiting)

    # One after the other: each began once the one before had committed, and saw all that was written before it.
    async with db.read_session() as session:
        written = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
    assert written[0] == "first"
    assert sorted(written[1:]) == ["w0", "w1"]
    assert all(seen_by[name] == written[:turn] for turn, name in enumerate(written) if turn > 0)


async def test_a_request_waiting_to_write_goes_before_background_work_that_asked_first(impatient_db: Database) -> None:
    db = impatient_db

    async def writer(name: str, *, in_background: bool) -> None:
        if in_background:
            background()  # a consumer's batch, the outbox relay
        async with db.session() as session:
            await session.execute(insert(items).values(name=name, size=2))

    first = await LockHolder.holding(db, "first")
    batch = asyncio.create_task(writer("batch", in_background=True))
    await wait_until(lambda: _writers_waiting_at_all(db, 1))
    request = asyncio.create_task(writer("request", in_background=False))
    await wait_until(lambda: _writers_waiting(db, 1))
    first.may_commit.set()
    await asyncio.gather(first.task, request, batch)

    async with db.read_session() as session:
        written = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
    assert written == ["first", "request", "batch"], "the request went before the batch that asked first"


async def test_background_work_is_not_starved_by_a_stream_of_requests(tmp_path: Path) -> None:
    writer = sqlite.Writer(str(tmp_path / "turns.db"))
    await writer.acquire()  # held, while the others ask
    order: list[str] = []

    async def take(name: str, *, in_background: bool) -> None:
        if in_background:
            background()
        await writer.acquire()
        order.append(name)
        await asyncio.sleep(0)
        writer.release()

    batch = asyncio.create_task(take("batch", in_background=True))
    await wait_until(lambda: _is(writer.waiting, 1))
    requests = [asyncio.create_task(take(f"r{n}", in_background=False)) for n in range(10)]
    await wait_until(lambda: _is(writer.urgent, 10))
    writer.release()
    await asyncio.gather(batch, *requests)
    assert order.index("batch") == sqlite.Writer.URGENT_RUN, "the batch went after a run of requests, not after all"
    assert [n for n in order if n != "batch"] == [f"r{n}" for n in range(10)], "the requests in the order they asked"


async def test_writers_of_two_processes_take_turns_through_the_file_lock_and_a_waiting_request_is_seen(
    impatient_db: Database,
) -> None:
    """Another process (a service's background work beside its API) holds a write transaction: this process's
    write waits for it without SQLite's busy handler (off here: it would fail at once), the other sees a request
    waiting (its batch would end early), and the write begins once the other commits."""
    db = impatient_db
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.sqlite_writer_process", str(make_url(db.url).database),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert other.stdin is not None
    assert other.stdout is not None
    try:
        assert await asyncio.wait_for(other.stdout.readline(), 60) == b"holding\n"

        async def request() -> None:
            async with db.session() as session:
                await session.execute(insert(items).values(name="request", size=2))

        writing = asyncio.create_task(request())
        writer = sqlite.writer_for(str(make_url(db.url).database))
        assert writer is not None
        await wait_until(lambda: _is(int(writer.file.urgent.up), 1))
        assert not writing.done(), "the write waits while the other process holds the lock"
        other.stdin.write(b"go\n")
        await other.stdin.drain()
        assert await asyncio.wait_for(other.stdout.readline(), 30) == b"waiting 1\n"
        assert await asyncio.wait_for(other.stdout.readline(), 30) == b"committed\n"
        await asyncio.wait_for(writing, 30)
        assert not writer.file.urgent.up
    finally:
        if other.returncode is None:
            other.kill()
        await other.wait()
    async with db.read_session() as session:
        written = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
    assert written == ["other", "request"]
    assert not writer.others_urgent, "nobody waits any more"


async def test_a_write_cancelled_while_another_process_holds_the_file_lock_leaves_both_locks_free(
    impatient_db: Database,
) -> None:
    db = impatient_db
    database = str(make_url(db.url).database)
    other = sqlite.FileLock(database)  # its own descriptor: to flock, another holder as a process would be
    assert other.try_take()

    async def request(name: str) -> None:
        async with db.session() as session:
            await session.execute(insert(items).values(name=name, size=2))

    cancelled = asyncio.create_task(request("cancelled"))
    writer = sqlite.writer_for(database)
    assert writer is not None
    await wait_until(lambda: _is(int(other.urgent.up_anywhere()), 1))
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not other.urgent.up_anywhere(), "the cancelled request no longer waits"
    other.give_back()
    # The waiting thread got the file's lock after the cancellation and gave it back: the next write begins.
    await asyncio.wait_for(request("next"), 10)
    assert other.try_take(), "the file's lock was given back after the write"
    other.give_back()
    async with db.read_session() as session:
        assert list((await session.execute(select(items.c.name))).scalars()) == ["next"]


async def test_background_work_lets_another_process_s_waiting_request_write_first(
    impatient_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process whose request waits for the file's lock has raised its flag: a batch here does not take the
    lock (free as it is) until that flag comes down, or for URGENT_PATIENCE at most."""
    db = impatient_db
    monkeypatch.setattr(sqlite, "URGENT_PATIENCE", 30.0)  # longer than the test: only the flag's fall lets it go
    other = sqlite.FileLock(str(make_url(db.url).database))
    other.urgent.hoist()

    async def batch() -> None:
        background()
        async with db.session() as session:
            await session.execute(insert(items).values(name="batch", size=1))

    writing = asyncio.create_task(batch())
    await asyncio.sleep(0.3)
    assert not writing.done(), "the batch waits while another process's request does"
    assert other.try_take(), "and took no lock meanwhile"
    other.give_back()
    other.urgent.lower()
    await asyncio.wait_for(writing, 10)
    async with db.read_session() as session:
        assert list((await session.execute(select(items.c.name))).scalars()) == ["batch"]


async def _is(value: int, expected: int) -> bool:
    return value == expected


async def _writers_waiting_at_all(db: Database, n: int) -> bool:
    writer = sqlite.writer_for(str(make_url(db.url).database))
    return writer is not None and writer.waiting == n


async def _writers_waiting(db: Database, n: int) -> bool:
    return db.writers_waiting() == n


async def test_reads_go_on_while_a_write_transaction_is_open_and_see_only_what_was_committed(
    impatient_db: Database,
) -> None:
    db = impatient_db
    async with db.session() as session:
        await session.execute(insert(items).values(name="committed", size=1))

    async def names() -> list[str]:
        async with db.read_session() as session:
            return list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())

    async with db.session() as session:
        await session.execute(insert(items).values(name="uncommitted", size=2))
        # The writer holds the lock and its transaction is open; a read neither waits for it nor sees its row.
        assert await asyncio.wait_for(names(), timeout=30) == ["committed"]
    assert await names() == ["committed", "uncommitted"]


async def test_a_read_only_unit_of_work_refuses_to_write_and_runs_its_deferred_writes_only_when_it_succeeds(
    db: Database,
) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        async with db.read_session() as session:
            await session.execute(insert(items).values(name="sneaky", size=1))

    async with db.read_session() as session:
        await session.execute(select(items.c.id))
        defer_write(session, lambda writer: writer.execute(insert(items).values(name="recorded", size=1)))

    async def failing_read() -> None:
        async with db.read_session() as session:
            defer_write(session, lambda writer: writer.execute(insert(items).values(name="failed read", size=1)))
            raise RuntimeError("the read failed")

    with pytest.raises(RuntimeError):
        await failing_read()

    async with db.read_session() as session:
        assert list((await session.execute(select(items.c.name))).scalars()) == ["recorded"]


async def test_a_request_reads_before_its_first_write_without_the_writer_lock_and_writes_holding_it(
    impatient_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``session(reads_first=True)``: while another transaction holds the writer lock, a request's reads run (each
    seeing what is committed), a request that only reads ends without ever waiting, and its first write waits for the
    lock, then writes in one transaction with what follows. A read ``FOR UPDATE`` waits for the lock as a write does."""
    db = impatient_db
    async with db.session() as session:
        await session.execute(insert(items).values(name="committed", size=1))
    held = await LockHolder.holding(db, "held", 2)

    async def only_reads() -> list[str]:
        async with db.session(reads_first=True) as session:
            first = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
            second = list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars())
            assert first == second
            return first

    assert await asyncio.wait_for(only_reads(), timeout=30) == ["committed"]

    read, may_write = asyncio.Event(), asyncio.Event()
    seen: list[list[str]] = []

    async def reads_then_writes() -> None:
        async with db.session(reads_first=True) as session:
            seen.append(list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars()))
            read.set()
            await may_write.wait()
            await session.execute(insert(items).values(name="after", size=3))
            seen.append(list((await session.execute(select(items.c.name).order_by(items.c.id))).scalars()))

    async def reads_for_update() -> None:
        async with db.session(reads_first=True) as session:
            await session.execute(select(items.c.id).where(items.c.name == "committed").with_for_update())
            await session.execute(update(items).where(items.c.name == "committed").values(size=10))

    writer = asyncio.create_task(reads_then_writes())
    await asyncio.wait_for(read.wait(), timeout=30)  # its read did not wait for the lock
    may_write.set()
    await wait_until(lambda: _writers_waiting(db, 1))  # its write does
    locker = asyncio.create_task(reads_for_update())
    await wait_until(lambda: _writers_waiting(db, 2))  # and so does a read FOR UPDATE
    assert not writer.done()
    assert not locker.done()
    held.may_commit.set()
    await asyncio.gather(held.task, writer, locker)
    assert seen == [["committed"], ["committed", "held", "after"]]
    async with db.read_session() as session:
        rows = {name: size for name, size in await session.execute(select(items.c.name, items.c.size))}
    assert rows == {"committed": 10, "held": 2, "after": 3}

    # A request that only reads costs no hop: its statements run on the loop's thread, and nothing at its end (no
    # BEGIN, no COMMIT).
    calls = count_hops(monkeypatch)
    assert await only_reads() == ["committed", "held", "after"]
    assert calls == []
