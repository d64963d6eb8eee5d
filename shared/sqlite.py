"""SQLite through aiosqlite, its statements run on the event loop's thread.

aiosqlite runs each sqlite3 call in its own thread and hands the result back to the event loop. SQLAlchemy's adapter
makes four such calls per statement (open a cursor, execute, fetch the rows, close the cursor), and on a small VM a
hop between threads costs a few hundred microseconds, far more than SQLite's own work: a one-row INSERT took over a
millisecond, which capped a consumer at about a thousand events a second. Even one hop a statement (the whole
statement in one function run in aiosqlite's thread) left a POST /v1/applications at 7.4-8.5 ms of intake's CPU, most
of it waking threads and the loop (bench/post_cpu.py). The statements here are small (indexed reads and writes of a
few rows, tens of microseconds in SQLite), so this cursor runs them on the loop's thread, without a hop: the
connection is opened with ``check_same_thread=False`` and used by one thread at a time (its statements run under the
connection's mutex).

Commits and rollbacks run on the loop's thread too: committing in aiosqlite's thread, a transaction handed the writer
lock over only once the loop came back to the committing task, behind every request step queued meanwhile (a POST
held intake's lock 17 ms at the median for four INSERTs: bench/api.py, 16 connections). Not so when the transaction
sent work to aiosqlite's thread (below): its end follows that work through aiosqlite's queue; nor when it changed more
than ``INLINE_ROWS`` rows (a consumer's batch): writing its pages out may wait on the disk (the kernel throttles
writers while much is waiting to be written, as after a bulk load), which a request's small transaction rarely does.
A commit would also checkpoint the WAL once it holds 1,000 pages (copy them into the database, fsync), so write
connections do not checkpoint on their own (``PRAGMA wal_autocheckpoint=0``): :class:`Checkpoints` does it on
another thread and connection, ``CHECKPOINT_EVERY`` seconds at most after a commit.

Two kinds of statement still go to aiosqlite's thread, where their length holds no one up: an ``executemany`` of more
than ``INLINE_ROWS`` rows (a screening's results), and the rows of a query beyond its first ``INLINE_ROWS`` (an
export, a queue listing: the first rows are read on the loop, the rest in the thread). Statements that each finish at
once would never give the loop back, so before each one the loop is given a turn when it has been held for
shared.turns.YIELD_EVERY (by these statements and whatever ran with them without a break: a consumer's batch), or
``HOLDING_TURN_EVERY`` by a request's transaction holding the writer lock (which every writer waits for).

Writes are serialised in the process: SQLite has one writer at a time, and a connection that finds the write lock
taken waits in SQLite's busy handler, which sleeps and polls (up to 100 ms a time), so under load a transaction waited
far longer than the one ahead of it took. Each connection to a database file takes the process's writer lock for
that file (a :class:`Writer`, one per file and event loop) before ``BEGIN IMMEDIATE`` and gives it back when the
transaction ends, so the next writer starts the moment the previous one commits. Between processes (a service's
replicas sharing a file) the holder of the process's lock also holds an exclusive ``flock`` on a file beside the
database (:class:`FileLock`): taken at once when free, else waited for in a thread blocked in the kernel, which wakes
it the moment the other process lets go, with no polling. A process whose request waits for that lock raises a flag
(shared.flock.SharedFlag), so that another process's batch ends early for it as it would for a request of its own,
and that process's next background transaction lets it go first. The busy handler is left for what takes neither
(a migration, a CLI command). Read transactions (``BEGIN``, deferred) take no lock: in WAL mode they read a snapshot
while a writer works. A write transaction begun ``at_first_write`` (a request's) takes the lock and sends ``BEGIN
IMMEDIATE`` with its first statement that is not a plain read; the reads before it run outside any transaction, each
seeing what was committed when it ran.

Only the cursor and the transaction boundaries differ from SQLAlchemy's aiosqlite dialect; the engine is made with
``module=dbapi()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

from shared.flock import SharedFlag, settle
from shared.turns import YIELD_EVERY, turn_due

log = logging.getLogger(__name__)

# Set in the tasks of background work (a consumer, the outbox relay, a delivery worker): their write transactions wait
# for the writer lock without cutting a consumer's batch short. Someone waits on the others (a request).
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("onestop_background_writer", default=False)


# Write connections background work may hold at once: one fewer than shared.db.SQLITE_WRITE_CONNECTIONS.
BACKGROUND_SESSIONS = 2

# Told of each write transaction as it gives the writer lock back, when someone watches the file (:func:`watch`,
# for measuring: shared.observability.time_writer_lock): the task that held it, whether that was background work, how
# long it waited for the lock and how long it held it (seconds).
LockObserver = Callable[[asyncio.Task[Any] | None, bool, float, float], None]
_observers: dict[str, LockObserver] = {}


def watch(database: str, observer: LockObserver | None) -> None:
    """Tell ``observer`` of every write transaction on this database file (None: stop telling)."""
    key = os.path.realpath(database)
    if observer is None:
        _observers.pop(key, None)
    else:
        _observers[key] = observer


class FileLock:
    """The writer lock of a database file between processes: an exclusive ``flock`` on ``<database>.writer-lock``;
    and ``<database>.writer-urgent``, a flag a process raises while a request of its waits for the lock (see the
    module docstring). Files of their own, not the database: closing any descriptor of the database would drop the
    POSIX locks SQLite holds on it in this process."""

    # Beside the database: empty files, no data (a copy of the database needs neither).
    SUFFIXES = (".writer-lock", ".writer-urgent")

    def __init__(self, database: str) -> None:
        lock, urgent = (database + suffix for suffix in self.SUFFIXES)
        self._lock = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._closing = weakref.finalize(self, os.close, self._lock)
        self.urgent = SharedFlag(urgent)

    def try_take(self) -> bool:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def take(self, *, urgent: bool) -> bool:
        """Hold the lock: at once if it is free, else once the other process lets go (waited for in a thread); whether
        it waited. If the wait is cancelled, the lock is let go as soon as the thread gets it. Background work (not
        ``urgent``) first lets another process's waiting requests go, for ``URGENT_PATIENCE`` at most: the kernel does
        not hand a lock let go to the one that waited, so a process that takes it again at once would always win."""
        waited = False
        if not urgent and self.urgent.up_anywhere():
            await self.urgent.until_down(URGENT_PATIENCE)
            waited = True
        if self.try_take():
            return waited
        loop = asyncio.get_running_loop()
        got: asyncio.Future[None] = loop.create_future()
        if urgent:
            self.urgent.hoist()
        threading.Thread(target=self._wait, args=(loop, got), name="sqlite-writer-lock", daemon=True).start()
        try:
            await asyncio.shield(got)
        except BaseException:
            got.add_done_callback(lambda _: self.give_back())
            raise
        finally:
            if urgent:
                self.urgent.lower()
        return True

    def _wait(self, loop: asyncio.AbstractEventLoop, got: asyncio.Future[None]) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            loop.call_soon_threadsafe(settle, got)
        except RuntimeError:  # the loop is closed: nobody will use the lock
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def give_back(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)


# How long background work lets another process's waiting requests go first, at most, before it competes for the lock
# again (see FileLock.take): a stream of requests never starves it.
URGENT_PATIENCE = 0.05


class Writer:
    """The process's writer lock for one database file (on one event loop), and the task holding it.

    Handed over in order of asking, except that a transaction someone waits on (a request's) goes before background
    work (consumers' batches, the outbox relay, workers: see ``BACKGROUND``): a request waits for the transaction
    running, not for every batch queued before it as well. So that background work is never starved by a stream of
    requests, after ``URGENT_RUN`` requests in a row the longest-waiting background transaction goes next."""

    URGENT_RUN = 4

    def __init__(self, database: str) -> None:
        self.database = database
        self.file = FileLock(database)
        self.owner: asyncio.Task[Any] | None = None
        self._held = False
        self._queues: dict[bool, collections.deque[asyncio.Future[None]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self._urgent_run = 0
        # Write sessions background work may have open at once (shared.db keeps a connection for requests).
        self.background_sessions = asyncio.Semaphore(BACKGROUND_SESSIONS)
        # How many transactions wait for the lock, and how many of them someone waits on (not background work): a
        # long transaction (a consumer's batch) ends early for those. Two consumers of one service cutting each
        # other's batches short would apply one event per transaction, each paying for its own commit.
        self.waiting = 0
        self.urgent = 0
        # When the holder asked for the lock and when it got it (perf_counter), for a watcher (see watch).
        self._asked = self._granted = 0.0
        self.background = False  # whether the holder is background work

    async def acquire(self) -> None:
        task = asyncio.current_task()
        if task is not None and self.owner is task:
            # It would wait for itself for ever; SQLite would have answered SQLITE_BUSY after its busy timeout.
            raise RuntimeError(f"a write transaction on {self.database} is already open in this task")
        asked = time.perf_counter()
        urgent = not BACKGROUND.get()
        if not self._held:  # nobody holds it, so nobody waits for it (a handed-over turn keeps it held)
            self._held = True
            self.owner = task
            waited = await self._take_file(urgent)
            self._asked, self._granted, self.background = asked, time.perf_counter() if waited else asked, not urgent
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[urgent].append(turn)
        self.waiting += 1
        self.urgent += urgent
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # given the lock as it was cancelled: the next one gets it
            else:
                with contextlib.suppress(ValueError):
                    self._queues[urgent].remove(turn)
            raise
        finally:
            self.waiting -= 1
            self.urgent -= urgent
        self.owner = task
        await self._take_file(urgent)
        self._asked, self._granted, self.background = asked, time.perf_counter(), not urgent

    async def _take_file(self, urgent: bool) -> bool:
        """With the process's lock held, the file's: other processes' writers (see :class:`FileLock`). Whether it
        waited for another process."""
        try:
            return await self.file.take(urgent=urgent)
        except BaseException:
            self.owner = None
            self._hand_over()  # the process's lock goes to the next one; the file's is let go when the thread gets it
            raise

    @property
    def others_urgent(self) -> bool:
        """Whether a request of another process waits for this file's writer lock."""
        return not self.file.urgent.up and self.file.urgent.up_anywhere()

    def release(self) -> None:
        observer = _observers.get(self.database)
        if observer is not None:
            now = time.perf_counter()
            observer(self.owner, self.background, self._granted - self._asked, now - self._granted)
        self.owner = None
        self.file.give_back()
        self._hand_over()

    def _hand_over(self) -> None:
        urgent, background = self._queues[True], self._queues[False]
        if urgent and background and self._urgent_run >= self.URGENT_RUN:
            order = (background, urgent)
        else:
            order = (urgent, background)
        for queue in order:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    self._urgent_run = self._urgent_run + 1 if queue is urgent else 0
                    turn.set_result(None)  # the lock passes to it directly
                    return
        self._held = False


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Writer]] = weakref.WeakKeyDictionary()


def writer_for(database: str) -> Writer | None:
    """The writer lock of a database file for the running loop; None for an in-memory database (one connection)."""
    return _for_file(_writers, database, Writer)


_Kept = TypeVar("_Kept")


def _for_file(
    kept: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Kept]],
    database: str,
    make: Callable[[str], _Kept],
) -> _Kept | None:
    """The one ``make(file)`` of a database file for the running loop; None for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = os.path.realpath(database)
    per_file = kept.setdefault(asyncio.get_running_loop(), {})
    found = per_file.get(key)
    if found is None:
        found = per_file[key] = make(key)
    return found


# A request's write transaction, once it holds the writer lock, gives the loop a turn only after holding it this long:
# every writer waits for it, and each turn it gave the other requests' steps (16 connections of POSTs: a turn of up to
# 16 steps) was time the lock was held for nothing. A request's transaction writes a few rows (four INSERTs for a
# POST /v1/applications); a consumer's batch, which is what holds the loop long, takes turns every YIELD_EVERY.
HOLDING_TURN_EVERY = 0.02

# How long after a commit the WAL is checkpointed, at most (SQLite's own checkpoint comes once the WAL holds 1,000
# pages: 4 MB). With ``synchronous=NORMAL`` the WAL is synced at a checkpoint, so a commit is on disk within this of
# its being made; a checkpoint costs two fsyncs, on a thread of its own.
CHECKPOINT_EVERY = 0.5


# How long a checkpoint's connection waits for a lock another holds (another process's checkpoint running: without
# waiting, "database is locked", seen in make bench where a benchmark and a service share a file). It waits on its own
# thread, holding no one up.
CHECKPOINT_BUSY_TIMEOUT = 5.0


def _checkpoint(database: str) -> tuple[int, int, int]:
    """Copy what the WAL holds into the database, as far as no reader needs it (``PASSIVE``), on a connection of its
    own (runs on an executor's thread)."""
    with contextlib.closing(sqlite3.connect(database, timeout=CHECKPOINT_BUSY_TIMEOUT)) as connection:
        busy, pages, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, pages, copied


class Checkpoints:
    """The WAL of one database file checkpointed on another thread, ``CHECKPOINT_EVERY`` seconds at most after a
    commit, one checkpoint at a time (see the module docstring). Told of each write transaction's commit."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._loop = asyncio.get_running_loop()
        self._running: asyncio.Future[tuple[int, int, int]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last = -CHECKPOINT_EVERY
        self._written = False  # committed since the checkpoint running (or the last) began

    @property
    def idle(self) -> bool:
        """Whether no checkpoint is running or due."""
        return self._running is None and self._timer is None

    async def finish(self) -> None:
        """No checkpoint due or running: a due one dropped, a running one waited for. A database disposed of leaves
        nothing that opens its file afterwards (a benchmark's or a test's temporary directory is removed next: a
        checkpoint against files removed under it fails with "disk I/O error"); closing the last connection
        checkpoints the WAL itself. A later commit (another engine on the file) sets the timer going again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._written = False
        if self._running is not None:
            await asyncio.wait([self._running])

    def committed(self) -> None:
        self._written = True
        if self._running is None and self._timer is None:
            self._timer = self._loop.call_at(self._last + CHECKPOINT_EVERY, self._start)

    def _start(self) -> None:
        self._timer = None
        self._written = False
        self._last = self._loop.time()
        self._running = self._loop.run_in_executor(None, _checkpoint, self.database)
        self._running.add_done_callback(self._done)

    def _done(self, running: asyncio.Future[tuple[int, int, int]]) -> None:
        self._running = None
        if not running.cancelled() and (error := running.exception()) is not None:
            log.warning("checkpoint failed: %r", error, extra={"database": self.database})
        if self._written and not self._loop.is_closed():
            self.committed()


_checkpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Checkpoints]] = weakref.WeakKeyDictionary()


def checkpoints_for(database: str) -> Checkpoints | None:
    """The checkpoints of a database file for the running loop; None for an in-memory database."""
    return _for_file(_checkpoints, database, Checkpoints)


# The pending BEGIN of a write transaction that begins at its first write (OneHopConnection.begin).
WRITE_AT_FIRST_WRITE = "BEGIN IMMEDIATE at the first write"

# Rows a statement handles on the loop's thread: an executemany of more goes to aiosqlite's thread, and so do a query's
# rows beyond these. One indexed row costs SQLite a few microseconds, so 64 of them hold the loop well under a
# millisecond; the requests' and consumers' statements rarely touch more.
INLINE_ROWS = 64

# What one statement returns: description, rows, row count, last row id, and the cursor when rows are left to fetch.
_Outcome = tuple[Any, list[Any], int, int | None, sqlite3.Cursor | None]


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: str | None, first: int | None
) -> _Outcome:
    """Run one statement and fetch its rows: all of them, or when ``first`` is given at most that many, the cursor
    returned open when there may be more (see :func:`_fetch_rest`)."""
    cursor = connection.cursor()
    more = False  # whether rows are left to fetch: the cursor stays open for them
    try:
        if begin is not None:
            cursor.execute(begin)  # the transaction's BEGIN, sent with its first statement (OneHopConnection.begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        if not description:
            rows = []
        elif first is None:
            rows = cursor.fetchall()
        else:
            rows = cursor.fetchmany(first)
            more = len(rows) == first
        return description, rows, cursor.rowcount, cursor.lastrowid, cursor if more else None
    finally:
        if not more:
            cursor.close()


def _fetch_rest(cursor: sqlite3.Cursor) -> list[Any]:
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _few(parameters: Any) -> bool:
    """Whether an executemany's rows are few enough to run on the loop's thread (a sized sequence of at most
    INLINE_ROWS)."""
    try:
        return len(parameters) <= INLINE_ROWS
    except TypeError:  # an iterator: its length is unknown until it is run
        return False


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose results are buffered in one hop; it holds no aiosqlite cursor at all."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1
        super().__init__(adapt_connection)

    def _make_new_cursor(self, connection: Any) -> Any:
        return None

    def _aenter_cursor(self, cursor: Any) -> Any:
        return None

    async def _async_soft_close(self) -> None:
        return None  # the rows are already buffered and there is no driver cursor to close

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _hop(self, operation: Any, parameters: Any, many: bool) -> None:
        connection = cast(OneHopConnection, self._adapt_connection)
        driver: Any = connection._connection  # an aiosqlite.Connection
        if turn_due(HOLDING_TURN_EVERY if connection.holds_for_request else YIELD_EVERY):
            await asyncio.sleep(0)  # the loop has been held long enough (see the module docstring)
        async with connection._execute_mutex:
            if connection._pending_begin is WRITE_AT_FIRST_WRITE:
                if connection.next_reads_only:
                    begin = None  # a read before the transaction's first write: a snapshot of its own, no lock
                else:
                    await connection._take_writer()
                    begin, connection._pending_begin = "BEGIN IMMEDIATE", None
            else:
                begin, connection._pending_begin = connection._pending_begin, None
            if begin is not None:
                connection.changes_at_begin = driver._conn.total_changes
            if many and not _few(parameters):
                # aiosqlite's own queue: the function runs in the connection's thread (the private name is the one
                # SQLAlchemy's adapter uses too; the lock file pins aiosqlite).
                connection.used_thread = True
                outcome: _Outcome = await driver._execute(_run, driver._conn, operation, parameters, many, begin, None)
            else:
                outcome = _run(driver._conn, operation, parameters, many, begin, INLINE_ROWS)
            self._description, rows, self._rowcount, self._lastrowid, unread = outcome
            if unread is not None:
                connection.used_thread = True
                rows.extend(await driver._execute(_fetch_rest, unread))
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._hop(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._hop(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def nextset(self) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """A connection whose write transactions hold the process's writer lock of its database from ``BEGIN
    IMMEDIATE`` until commit or rollback.

    A transaction's ``BEGIN`` goes to SQLite with its first statement, in the same hop: one hop fewer per transaction,
    and for a write one, one fewer while it holds the writer lock (each hop waits for the driver's thread and then for
    the event loop, the longer the busier the machine). SQLAlchemy begins a transaction just before its first
    statement, so nothing runs between the two either way."""

    __slots__ = (
        "_checkpoints",
        "_holding",
        "_pending_begin",
        "_writer",
        "changes_at_begin",
        "next_reads_only",
        "used_thread",
    )
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any, writer: Writer | None, checkpoints: Checkpoints | None) -> None:
        super().__init__(dbapi, connection)
        self._writer = writer
        self._checkpoints = checkpoints
        self._holding = False
        # Whether the transaction sent work to aiosqlite's thread: its end follows that work there (a cancelled
        # wait leaves the work running).
        self.used_thread = False
        # The connection's count of rows changed (sqlite3's total_changes) when the transaction began.
        self.changes_at_begin = 0
        # The BEGIN the next statement sends first (None: a transaction is open, or none was begun), or
        # WRITE_AT_FIRST_WRITE.
        self._pending_begin: str | None = None
        # Whether the statement about to run only reads (a SELECT without FOR UPDATE), told by shared.db before each
        # statement of a transaction begun with ``at_first_write``.
        self.next_reads_only = False

    def begin(self, *, write: bool, at_first_write: bool = False) -> None:
        """Start a transaction: a write one (``BEGIN IMMEDIATE``, after taking the writer lock) or a read one.
        ``at_first_write``: the write transaction (and the writer lock) begins with its first statement that is not
        a plain read; the reads before it run each on its own, as under PostgreSQL's READ COMMITTED."""
        try:
            await_(self._begin(write, at_first_write))
        except Exception as error:
            self._handle_exception(error)

    async def _begin(self, write: bool, at_first_write: bool) -> None:
        if write and at_first_write:
            self._pending_begin = WRITE_AT_FIRST_WRITE
            return
        if write:
            await self._take_writer()
        self._pending_begin = "BEGIN IMMEDIATE" if write else "BEGIN"

    async def _take_writer(self) -> None:
        if self._writer is not None:
            await self._writer.acquire()
            self._holding = True

    @property
    def holds_for_request(self) -> bool:
        """Whether this connection's transaction holds the writer lock for a request (not background work)."""
        return self._holding and self._writer is not None and not self._writer.background

    @property
    def begins_at_first_write(self) -> bool:
        """Whether a write transaction was begun and waits for its first write (see :meth:`begin`)."""
        return self._pending_begin is WRITE_AT_FIRST_WRITE

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            assert self._writer is not None
            self._writer.release()

    def commit(self) -> None:
        try:
            if self._pending_begin is None:  # else nothing was written: nothing to commit
                self._end(commit=True)
                if self._holding and self._checkpoints is not None:
                    self._checkpoints.committed()
        finally:
            self._pending_begin = None
            self._release()

    def rollback(self) -> None:
        try:
            self._pending_begin = None
            if self._in_transaction():
                self._end(commit=False)
        finally:
            self._release()

    def _end(self, *, commit: bool) -> None:
        """Commit or roll back: on the loop's thread; in aiosqlite's after work the transaction sent there, or when
        it changed more than INLINE_ROWS rows (see the module docstring)."""
        try:
            if self.used_thread or self._connection._conn.total_changes - self.changes_at_begin > INLINE_ROWS:
                self.used_thread = False
                await_(self._connection.commit() if commit else self._connection.rollback())
            elif commit:
                self._connection._conn.commit()
            else:
                self._connection._conn.rollback()
        except Exception as error:
            self._handle_exception(error)

    def _in_transaction(self) -> bool:
        """Whether a transaction is open: sqlite3 rolls back nothing otherwise, but the call would still cost a hop to
        aiosqlite's thread, and the pool rolls back every connection given back to it (after each commit). Read from
        the loop's thread: a flag of the connection (``sqlite3_get_autocommit``), read while nothing runs on it."""
        try:
            return bool(self._connection._conn.in_transaction)
        except ValueError:  # aiosqlite's connection is closed: let it say so
            return True

    def close(self) -> None:
        self._pending_begin = None
        try:
            super().close()
        finally:
            self._release()

    def terminate(self) -> None:
        self._pending_begin = None
        try:
            super().terminate()
        finally:
            self._release()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        database = str(arg[0] if arg else kw.get("database", ""))
        # Used from the loop's thread and aiosqlite's, one at a time (see the module docstring).
        kw["check_same_thread"] = False
        connection = aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy does: a forgotten connection never blocks exit
        return OneHopConnection(self, cast(Any, await_(connection)), writer_for(database), checkpoints_for(database))


def dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
