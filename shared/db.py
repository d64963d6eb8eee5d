"""Database helpers: an async engine from a URL, and the units of work every request and handler runs in.

SQLite (aiosqlite) is the embedded default, PostgreSQL (asyncpg) the production one.

Two kinds of unit of work:

- :meth:`Database.session` writes. On SQLite it begins with ``BEGIN IMMEDIATE``: in WAL mode a deferred transaction
  that reads and then writes fails at once with SQLITE_BUSY when another writer got in between (the busy timeout does
  not apply to that upgrade), so the write lock is taken up front — and, before it, the process's writer lock of the
  file (:mod:`shared.sqlite`), so writers queue in the event loop and each starts the moment the one before commits,
  instead of sleeping in SQLite's busy handler. The lock is taken at the first statement, not when the session is
  made, so whatever a request does before touching the database (a call to another service) holds nothing; a
  request's (``reads_first``) at its first statement that writes, so its lookups and checks hold nothing either.
- :meth:`Database.read_session` reads. On SQLite it is a deferred ``BEGIN`` on connections of their own that are
  read-only (``PRAGMA query_only``): it never waits for a writer, it reads a consistent snapshot, and a write attempted
  in it fails loudly. On PostgreSQL it is a ``READ ONLY`` ``REPEATABLE READ`` transaction on the same pool (one
  snapshot too). A read that must leave a record
  (the audit log of a read of personal data) hands the write to :func:`defer_write`; it is written in a short write
  transaction when the read ends, before the answer leaves.

SQLite statements go through :mod:`shared.sqlite`, which costs one thread hop a statement instead of SQLAlchemy's four.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic_core import to_json
from sqlalchemy import Connection, Executable, Select, Table, Uuid, event, inspect, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import InsertmanyvaluesSentinelOpts

from shared import sqlite
from shared.pool import FairQueuePool

if TYPE_CHECKING:
    import polars as pl

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Keys of ``AsyncSession.info``.
READ_ONLY = "onestop_read_only"
# Set on a read-only unit of work that reads one snapshot: on connections of its own (SQLite's file, PostgreSQL), not
# on the one in-memory SQLite connection that writes share, where another transaction's writes can land in between.
ONE_SNAPSHOT = "onestop_one_snapshot"
DEFERRED_WRITES = "onestop_deferred_writes"

DeferredWrite = Callable[[AsyncSession], Awaitable[Any]]
# An execution option of the engine of write transactions that begin (on SQLite) at their first write.
WRITE_AT_FIRST_WRITE = "onestop_write_at_first_write"
# Keys of the deferred writes that are one statement each (an audit entry's INSERT).
ONE_STATEMENT_WRITES = "onestop_one_statement_writes"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# SQLite writes one transaction at a time: more write connections than this would only hold sessions waiting for
# the writer lock (each with its own page cache); further writers wait for a connection instead, in turn as well.
SQLITE_WRITE_CONNECTIONS = 3

# Bound parameters of one multi-row INSERT on SQLite; more rows than fit are written in several statements. Python's
# sqlite3 keeps every statement it prepares in a cache of each connection (see below), and a prepared statement
# costs about 136 bytes a parameter: one that wrote a consumer's whole batch (768 cases, 10,752 parameters) held
# 1.46 MB, prepared once and never used again, since the next batch had another row count. Under bench/api.py's load
# the statements cached took 37-41 MB in eligibility and routing with 499 applications in flight (sqlite3_db_status,
# SQLITE_DBSTATUS_STMT_USED), most of their growth past the 150 MB of issue 14; 5-12 MB with this bound. At 512 a
# statement holds at most ~70 KB, and the pages of a large write are the same statement, prepared once.
SQLITE_INSERT_PARAMETERS = 512

# Statements each SQLite connection keeps prepared (Python's sqlite3 keeps 128): a consumer's connection uses about 30
# again and again (sent 3 times or more under bench/api.py), the rest once or twice (IN lists and pages of other
# lengths), each holding 4-70 KB while cached. Together with the page cache below, what SQLite held under
# bench/api.py's load went from 10-16 MB a service to 4-12 MB, CPU-seconds per application unchanged
# (bench/pipeline_cpu.py, within its noise).
SQLITE_CACHED_STATEMENTS = 64

# Each connection's page cache, in KiB (SQLite's default is 2,000). In WAL mode a connection drops its whole cache when
# another connection has written since its last transaction, so under load a page cache is refilled from the file
# (the operating system's cache) at nearly every transaction anyway: what one transaction reads is all it holds.
SQLITE_CACHE_KIB = 512


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """The engine of write transactions (and the only one, on PostgreSQL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = _sqlite_engine(url, echo=echo, pool_size=min(pool_size, SQLITE_WRITE_CONNECTIONS), max_overflow=0)
        _configure_sqlite(engine, read_only=False)
        # New rows of a table with an INTEGER PRIMARY KEY (timeline entries, case history, outbox rows ...) flushed
        # together are one multi-row INSERT ... RETURNING, as on PostgreSQL, not one statement a row. The ORM must
        # give each object its own row's id; SQLAlchemy does that by the ids' order wherever a database assigns
        # auto-incremented ids in the order of the rows, and does not assume it of SQLite. SQLite inserts the rows
        # of one statement one after the other, each getting a rowid above every one before it, so it holds.
        engine.sync_engine.dialect.insertmanyvalues_implicit_sentinel = InsertmanyvaluesSentinelOpts.AUTOINCREMENT
        engine.sync_engine.dialect.insertmanyvalues_max_parameters = SQLITE_INSERT_PARAMETERS
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        poolclass=FairQueuePool,
    )
    _check_out_open_connections(engine)
    return engine


def json_dumps(value: Any) -> str:
    """JSON columns written (a round's programs, answers, timeline details, view parts): pydantic-core's writer, about
    three times as fast as the standard library's (0.065 against 0.195 ms for a status view's 39 kB of programs), which
    a consumer's batch spent 3-6 % of its CPU in. It writes the values the standard library writes, read back the
    same: ``NaN`` and ``Infinity`` as the standard library does (``inf_nan_mode="constants"``; orjson would write
    ``null``, a silent change of what was stored; PostgreSQL refuses them either way), integers of any size, floats
    to the last digit, keys that are integers, finite floats or booleans as text. An infinite float or ``None`` as a
    key it writes as ``inf`` or ``None``, where the standard library wrote ``Infinity`` or ``null``. Otherwise the
    text differs only in form: no spaces after separators, text as UTF-8 rather than ``\\u`` escapes, ``1e-7`` for
    ``1e-07``. It also writes what the standard library refused with a ``TypeError`` (a UUID or a date, as text), so a
    column given one by mistake no longer fails: none was before this writer, or it would have failed then."""
    return to_json(value, inf_nan_mode="constants").decode()


def json_loads(text: str | bytes) -> Any:
    """JSON columns read back (a status view's nested parts, answers, programs): orjson, several times faster than
    the standard library's parser, which a status GET under load spent much of its time in. Whatever orjson refuses
    and the standard library reads (``NaN``) is still read, as before. An integer past 64 bits reads back as the
    nearest float (orjson does not refuse it); what residents answer is bounded well inside 64 bits where it comes in
    (intake's ``MAX_ABS_NUMBER``, 10**15)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _check_out_open_connections(engine: AsyncEngine) -> None:
    """A connection the server closed (a restart, ``pg_terminate_backend``, an idle timeout) is not handed out: asyncpg
    knows it closed as soon as the loop has read the end of its socket, without asking the server. SQLAlchemy's
    ``pool_pre_ping`` asks, at every checkout: through asyncpg that is three round trips (``BEGIN``, ``;``,
    ``ROLLBACK``), as many as a status GET's own. A connection whose end has not been read yet fails its first
    statement instead; SQLAlchemy then discards every connection of the pool made before it, and a client retries."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")


def _sqlite_engine(url: str, *, echo: bool, pool_size: int, max_overflow: int) -> AsyncEngine:
    pool: dict[str, Any] = {}
    if _is_file(url):
        pool = {"pool_size": pool_size, "max_overflow": max_overflow, "poolclass": FairQueuePool}
    return create_async_engine(
        url, echo=echo, module=sqlite.dbapi(), json_serializer=json_dumps, json_deserializer=json_loads, **pool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "cached_statements": SQLITE_CACHED_STATEMENTS},
    )  # fmt: skip


def _is_file(url: str) -> bool:
    database = make_url(url).database
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


def _configure_sqlite(engine: AsyncEngine, *, read_only: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpointed on another thread: shared.sqlite.Checkpoints
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        connection: sqlite.OneHopConnection = conn.connection.dbapi_connection
        at_first_write = bool(conn.get_execution_options().get(WRITE_AT_FIRST_WRITE))
        connection.begin(write=not read_only, at_first_write=at_first_write)

    if read_only:
        return

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before_statement(conn: Any, _cursor: Any, _sql: str, _parameters: Any, context: Any, _many: bool) -> None:
        connection: sqlite.OneHopConnection = conn.connection.dbapi_connection
        if connection.begins_at_first_write:
            connection.next_reads_only = _reads_only(context)


def _reads_only(context: Any) -> bool:
    """Whether a statement only reads: a SELECT, and not ``FOR UPDATE`` (which SQLite does not write out, but whose
    caller means to write what it read: it takes the writer lock, as on PostgreSQL it takes the rows' locks)."""
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    return isinstance(statement, Select) and statement._for_update_arg is None


class Database:
    """The engines, their session factories, and the hooks that run after a commit (waking the outbox relay)."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
        self._own_read_engine = is_sqlite(url) and _is_file(url)
        if self._own_read_engine:
            self.read_engine = _sqlite_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
            _configure_sqlite(self.read_engine, read_only=True)
        elif is_sqlite(url):
            self.read_engine = self.engine  # one in-memory connection: reads share it (and its transactions)
        else:
            # One snapshot for the whole read, as on SQLite (READ COMMITTED would let each statement see a different
            # state: a status view whose timeline names a change its cases do not show yet). A read-only
            # REPEATABLE READ transaction never fails to serialise.
            self.read_engine = self.engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        # On SQLite, write transactions whose reads before their first write need no lock (see session).
        self._reads_first = (
            async_sessionmaker(
                self.engine.execution_options(**{WRITE_AT_FIRST_WRITE: True}), expire_on_commit=False, autoflush=True
            )
            if self._own_read_engine
            else self.sessionmaker
        )
        # PostgreSQL: a single statement is a transaction of its own, without a BEGIN and a COMMIT around it (two round
        # trips fewer). For what a read defers when that is one statement (its audit entry), see read_session.
        self._single_statements = (
            async_sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
            if not is_sqlite(url)
            else None
        )
        self.read_sessionmaker = async_sessionmaker(self.read_engine, expire_on_commit=False, autoflush=True)
        self._after_commit: list[Callable[[AsyncSession], None]] = []
        self._writer: tuple[weakref.ref[asyncio.AbstractEventLoop], sqlite.Writer | None] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def writers_waiting(self) -> int:
        """How many write transactions of this process that someone waits on (a request's; not background work,
        see :func:`background`) wait to begin (SQLite: for its writer lock), or 1 when none does but another
        process's request waits for the file (shared.sqlite.FileLock). PostgreSQL serialises nothing of the
        kind; there it is always 0."""
        writer = self._sqlite_writer()
        if writer is None:
            return 0
        return writer.urgent or int(writer.others_urgent)

    def sqlite_file(self) -> str | None:
        """The SQLite database file (whose writes take the process's writer lock); None on PostgreSQL or in memory."""
        return str(make_url(self.url).database) if self._own_read_engine else None

    def _sqlite_writer(self) -> sqlite.Writer | None:
        """The writer lock of this SQLite file on the running loop (None on PostgreSQL or in memory). Asked before
        each event of a batch: looked up (a path made real, on disk) once per loop."""
        if not self._own_read_engine:
            return None
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0]() is not loop:
            self._writer = (weakref.ref(loop), sqlite.writer_for(str(make_url(self.url).database)))
        return self._writer[1]

    def reads(self) -> Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]] | None:
        """:meth:`read_session`, where a read runs on a connection of its own beside a write transaction (not on the
        one in-memory SQLite connection both share): what reads ahead of a long write may use."""
        return self.read_session if self.read_engine is not self.engine else None

    def on_commit(self, hook: Callable[[AsyncSession], None]) -> None:
        self._after_commit.append(hook)

    @contextlib.asynccontextmanager
    async def session(self, *, reads_first: bool = False) -> AsyncIterator[AsyncSession]:
        """One write transaction: commits when the block ends normally, rolls back when it raises. On SQLite,
        background work holds one write connection fewer than there are, so that a request never waits for a
        connection behind batches waiting for the writer lock (where it would not be seen waiting, and no batch
        would give way to it).

        ``reads_first`` (a request's): on SQLite the transaction, and the writer lock, begin with its first statement
        that writes (or reads ``FOR UPDATE``); each read before it runs on its own, seeing what was committed when it
        ran — as every read does in PostgreSQL's READ COMMITTED, where it is all one transaction. So what a request
        looks up and checks before it writes (a stored answer, the caller's records, the validation of its body) is
        not done holding the lock every other writer waits for, and a request that writes nothing never takes it. A
        check its write depends on is made again where it writes (a unique key, a condition of the statement), as
        PostgreSQL needs anyway. PostgreSQL's transaction is the same either way."""
        writer = self._sqlite_writer()
        limit = writer.background_sessions if writer is not None and background_work() else _NO_LIMIT
        sessions = self._reads_first if reads_first else self.sessionmaker
        async with limit, sessions() as session:
            async with session.begin():
                yield session
            for hook in self._after_commit:
                hook(session)

    @contextlib.asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """One read-only transaction (see the module docstring); then the writes it deferred, in one write
        transaction, when the block ended normally."""
        async with self.read_sessionmaker() as session:
            session.info[READ_ONLY] = True
            session.info[ONE_SNAPSHOT] = self.read_engine is not self.engine
            async with session.begin():
                yield session
            deferred: list[DeferredWrite] = session.info.pop(DEFERRED_WRITES, [])
            single = len(deferred) == 1 and bool(session.info.pop(ONE_STATEMENT_WRITES, 0))
        if single and self._single_statements is not None:
            async with self._single_statements() as writer:  # one statement: its own transaction
                await deferred[0](writer)
        elif deferred:
            async with self.session() as writer:
                for write in deferred:
                    await write(writer)

    async def ping(self) -> None:
        async with self.read_session() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        file = self.sqlite_file()
        checkpoints = sqlite.checkpoints_for(file) if file is not None else None
        if checkpoints is not None:
            await checkpoints.finish()
        await self.engine.dispose()
        if self._own_read_engine:
            await self.read_engine.dispose()


_NO_LIMIT = contextlib.nullcontext()


def background_work() -> bool:
    return sqlite.BACKGROUND.get()


def background() -> None:
    """Mark the running task as background work (a consumer, the outbox relay, a worker): its write transactions do
    not cut a consumer's batch short, as a request's do (on SQLite; see :meth:`Database.writers_waiting`)."""
    sqlite.BACKGROUND.set(True)


_HELD = "onestop_held_rows"


def hold_loaded(session: AsyncSession) -> None:
    """Hold every row the session loads (or inserts) to the end of its transaction. The identity map holds rows
    weakly: a row read and not changed is dropped as soon as nothing refers to it, and the next ``session.get`` of it
    goes to the database again. For a consumer's transaction, whose events ask for the same rows one after the other
    (an application's, a resident's); its rows go with the session."""
    if _HELD in session.info:
        return
    held: dict[int, object] = {}
    session.info[_HELD] = held

    def hold(_: object, instance: object) -> None:
        held[id(instance)] = instance

    event.listen(session.sync_session, "loaded_as_persistent", hold)
    event.listen(session.sync_session, "pending_to_persistent", hold)


async def get_unflushed(session: AsyncSession, model: type[T], key: Any, *, with_for_update: bool = False) -> T | None:
    """``session.get(model, key)`` without writing what is pending first. A consumer's transaction then writes the
    rows of all its events together at its end (rows of one table in one statement), instead of flushing before each
    lookup. A row added in this transaction and not written yet is not in the identity map: it is found among the
    session's new rows of ``model`` by its primary key (see :func:`pending_rows`; a savepoint's rollback takes it
    back), so the answer is the one a flush would give."""
    mapper = inspect(model)
    wanted = tuple(key) if isinstance(key, tuple) else (key,)
    known = session.sync_session.identity_map.get(mapper.identity_key_from_primary_key(wanted))
    # Read (or written) before in this transaction: what session.get would answer without asking the database, found
    # without searching the session's new rows for it (a consumer's batch holds hundreds of them).
    fresh = known is not None and not with_for_update and not inspect(known).expired_attributes
    if fresh and known not in session.deleted:
        return known
    added: dict[type[Any], _Added] | None = session.info.get(_ADDED)
    rows = added.get(model) if added else None
    if rows:
        pending: T | None = rows.with_key(_key_attributes(model), wanted)
        if pending is not None:
            return pending
    absent: set[tuple[Any, ...]] = session.info.get(_ABSENT, set())
    if (model, wanted) in absent:
        # Not there when the transaction looked (note_absent); added since, it is pending or in the identity map.
        return known if known is not None and known not in session.deleted else None
    with session.no_autoflush:
        return await session.get(model, key, with_for_update=with_for_update or None)


# Key of ``Session.info``: the rows added to a session and not written yet, by their class (see pending_rows).
_ADDED = "onestop_added_rows"


class _Added:
    """A session's rows of one class that were added and are still to be written, in order of addition, kept so by
    the session's events as they come and go; from the first lookup by primary key (:func:`get_unflushed`) on, also
    by that key. Rows by ``id()``: a mapped class may define its own ``__eq__``."""

    __slots__ = ("attributes", "by_key", "key_of", "rekey", "rows")

    def __init__(self) -> None:
        self.rows: dict[int, Any] = {}
        # The index, from the first lookup: the key attributes, the rows under each key, each row's key.
        self.attributes: tuple[str, ...] = ()
        self.by_key: dict[tuple[Any, ...], list[Any]] | None = None
        self.key_of: dict[int, tuple[Any, ...]] = {}
        # Rows whose key attributes were set since they were indexed (_key_set): indexed again at the next lookup.
        self.rekey: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.rows)

    def add(self, row: Any) -> None:
        self.rows[id(row)] = row
        if self.by_key is not None:
            self._index(row)

    def discard(self, row: Any) -> None:
        if self.rows.pop(id(row), None) is not None and self.by_key is not None:
            self._unindex(id(row))
            self.rekey.discard(id(row))

    def with_key(self, attributes: tuple[str, ...], wanted: tuple[Any, ...]) -> Any:
        if self.by_key is None:
            self.attributes, self.by_key = attributes, {}
            for row in self.rows.values():
                self._index(row)
        elif self.rekey:
            for i in self.rekey:
                self._unindex(i)
                self._index(self.rows[i])
            self.rekey.clear()
        found = self.by_key.get(wanted)
        if not found:
            return None
        if len(found) > 1:
            # Rows added with one key (their flush would fail): the first added, as a search in order would find.
            return next(row for row in self.rows.values() if any(row is f for f in found))
        return found[0]

    def _index(self, row: Any) -> None:
        assert self.by_key is not None
        key = tuple(getattr(row, a) for a in self.attributes)
        self.key_of[id(row)] = key
        self.by_key.setdefault(key, []).append(row)

    def _unindex(self, i: int) -> None:
        assert self.by_key is not None
        key = self.key_of.pop(i)
        same = self.by_key[key]
        same[:] = [row for row in same if id(row) != i]
        if not same:
            del self.by_key[key]


def _added(session: Session, instance: object) -> _Added | None:
    added: dict[type[Any], _Added] | None = session.info.get(_ADDED)
    return added.get(type(instance)) if added else None


@event.listens_for(Session, "transient_to_pending")
def _note_added(session: Session, instance: object) -> None:
    added: dict[type[Any], _Added] = session.info.setdefault(_ADDED, {})
    rows = added.get(type(instance))
    if rows is None:
        rows = added[type(instance)] = _Added()
    rows.add(instance)


# No longer pending: written (its lookups go to the identity map from here), or taken back — by a rollback (of the
# transaction, or of a savepoint: the rows added since it began), expunged, or an orphan dropped at a flush. A pending
# row cannot be deleted (Session.delete refuses it, a delete cascade passes it by).
@event.listens_for(Session, "pending_to_persistent")
@event.listens_for(Session, "pending_to_transient")
def _note_gone(session: Session, instance: object) -> None:
    rows = _added(session, instance)
    if rows is not None:
        rows.discard(instance)


def _key_set(target: object, *_: Any) -> None:
    """A key attribute of a row of an indexed class is set (or deleted): if the row is pending and indexed, it is
    indexed again under its new key at the next lookup — a row added before its key was given is found by it, as a
    search of every row would find it."""
    session = inspect(target).session
    rows = _added(session, target) if session is not None else None
    if rows is not None and rows.by_key is not None and id(target) in rows.rows:
        rows.rekey.add(id(target))


def pending_rows(session: AsyncSession | Session, model: type[T]) -> list[T]:
    """The session's new rows of class ``model`` (not its subclasses), in order of addition: those added to it (by
    ``add`` or a cascade) that are still to be written (not written since, nor taken back by a rollback). Not
    ``session.new``, which is made afresh from every new row of every class at each look (a consumer's batch holds
    hundreds; each of its events looks several times); nor a check of each row added, which is as long."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    added: dict[type[Any], _Added] | None = sync.info.get(_ADDED)
    rows = added.get(model) if added else None
    return list(rows.rows.values()) if rows else []


def has_pending_rows(session: AsyncSession | Session, model: type[Any]) -> bool:
    """Whether :func:`pending_rows` has any, without listing them."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    added: dict[type[Any], _Added] | None = sync.info.get(_ADDED)
    return bool(added and added.get(model))


# Key of ``Session.info``: how many rows were added since the session last wrote (see unwritten_rows).
_UNWRITTEN = "onestop_unwritten_rows"


@event.listens_for(Session, "transient_to_pending")
def _count_added(session: Session, instance: object) -> None:
    session.info[_UNWRITTEN] = session.info.get(_UNWRITTEN, 0) + 1


@event.listens_for(Session, "after_flush_postexec")
def _count_written(session: Session, flush_context: Any) -> None:
    session.info[_UNWRITTEN] = 0


def unwritten_rows(session: AsyncSession) -> int:
    """How many rows were added to the session since it last wrote (rows a savepoint's rollback took back still count
    until then): what its next flush has to prepare in one go, the loop held meanwhile."""
    info: dict[str, Any] = session.sync_session.info
    return int(info.get(_UNWRITTEN, 0))


_KEY_ATTRIBUTES: dict[type[Any], tuple[str, ...]] = {}


def _key_attributes(model: type[Any]) -> tuple[str, ...]:
    """The attributes holding ``model``'s primary key, in its order (read directly: the mapper's way is several
    times slower). The first time, :func:`_key_set` starts to follow them, before any row of ``model`` is indexed."""
    found = _KEY_ATTRIBUTES.get(model)
    if found is None:
        mapper = inspect(model)
        found = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        for attribute in found:
            event.listen(getattr(model, attribute), "set", _key_set)
            event.listen(getattr(model, attribute), "remove", _key_set)
        _KEY_ATTRIBUTES[model] = found
    return found


_ABSENT = "onestop_absent_rows"


def dialect_insert(session: AsyncSession) -> Any:
    """The INSERT construct of the session's dialect (PostgreSQL's or SQLite's), for its ``ON CONFLICT``: a row that
    two transactions may make at once, the second finding the first's."""
    return postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def note_absent(session: AsyncSession, model: type[Any], keys: Iterable[Any]) -> None:
    """Rows of ``model`` a transaction looked for (by primary key) and did not find: :func:`get_unflushed` then answers
    for them without asking the database again. Only this transaction can add them while it runs (on PostgreSQL,
    another one adding the same key fails on it), so that holds to its end. Rows the transaction writes from here on
    are held to its end (:func:`hold_loaded`): :func:`get_unflushed` finds one noted absent and written since in the
    identity map, which would otherwise let go of it as soon as nothing else refers to it, and answer that it is
    absent (an erasure written by one event of a batch, missed by the next)."""
    hold_loaded(session)
    absent: set[tuple[Any, ...]] = session.info.setdefault(_ABSENT, set())
    absent.update((model, tuple(k) if isinstance(k, tuple) else (k,)) for k in keys)


def is_read_only(session: AsyncSession) -> bool:
    return bool(session.info.get(READ_ONLY))


def defer_write(session: AsyncSession, write: DeferredWrite, *, one_statement: bool = False) -> None:
    """From a read-only unit of work: run ``write`` in a write transaction once the read ends well (before the
    answer is sent), or not at all when it fails. ``one_statement``: ``write`` executes a single statement, which on
    PostgreSQL is then sent alone, a transaction of its own, when it is all the read deferred."""
    session.info.setdefault(DEFERRED_WRITES, []).append(write)
    if one_statement:
        session.info[ONE_STATEMENT_WRITES] = session.info.get(ONE_STATEMENT_WRITES, 0) + 1


# Rows given to one execution of a statement written for many (:func:`execute_rows`). SQLAlchemy makes every row's
# parameters before it sends the first statement, with the event loop held: a consumer's batch of several hundred
# routing cases took 40-50 ms of CPU that way (a slow-callback probe under bench/api.py). Between two executions a
# transaction that has held the loop for its turn gives it back (shared.sqlite), as between any two statements.
ROWS_PER_EXECUTION = 100

Rows = Sequence[Mapping[str, Any]]


async def execute_rows(session: AsyncSession, statement: Executable, rows: Rows) -> None:
    """Execute ``statement`` (an INSERT, say) for each of ``rows``, :data:`ROWS_PER_EXECUTION` rows at a time."""
    for start in range(0, len(rows), ROWS_PER_EXECUTION):
        await session.execute(statement, rows[start : start + ROWS_PER_EXECUTION])


def execute_rows_sync(connection: Connection, statement: Executable, rows: Rows) -> None:
    """:func:`execute_rows` on a connection, inside ``run_sync`` or an ORM event."""
    for start in range(0, len(rows), ROWS_PER_EXECUTION):
        connection.execute(statement, rows[start : start + ROWS_PER_EXECUTION])


# Rows of a bulk insert made into driver values (or CSV) at a time: the memory of a large write stays bounded.
BULK_PIECE = 50_000


async def bulk_insert(session: AsyncSession, table: Table, rows: pl.DataFrame, *, piece: int = BULK_PIECE) -> None:
    """Insert ``rows`` (a column per table column, by name) in the session's transaction through the driver's bulk
    path, in one statement on PostgreSQL (a ``COPY`` of CSV, sent ``piece`` rows at a time) and one ``executemany`` per
    ``piece`` rows on SQLite — none of the ORM's per-row work. UUID columns hold text (32 hex digits, or with dashes);
    timestamps are timezone-aware and written in UTC as the tables' own types write them (``tables.UTCDateTime``)."""
    import polars as pl

    if not rows.height:
        return
    connection = await session.connection()
    columns = list(rows.columns)
    pieces = range(0, rows.height, max(piece, 1))
    if connection.dialect.name == "postgresql":
        driver: Any = (await connection.get_raw_connection()).driver_connection

        async def csv() -> AsyncIterator[bytes]:
            # As CSV written by Polars: no Python object per value. Texts quoted (so an empty one is not NULL), NULL
            # as an unquoted \N, timestamps in UTC; in memory (a file would cost a thread hop per chunk), a piece
            # at a time (no copy of the whole frame).
            for start in pieces:
                buffer = io.BytesIO()
                rows.slice(start, piece).with_columns(pl.col(pl.Datetime).dt.convert_time_zone("UTC")).write_csv(
                    buffer,
                    include_header=False,
                    null_value="\\N",
                    quote_style="non_numeric",
                    datetime_format="%Y-%m-%d %H:%M:%S%.6f+00",
                )
                yield buffer.getvalue()

        await driver.copy_to_table(table.name, source=csv(), columns=columns, format="csv", null="\\N")
        return
    # SQLite keeps UUIDs as 32 hex digits and timestamps as UTC text with microseconds (SQLAlchemy's own forms).
    uuids = [c for c in columns if isinstance(table.c[c].type, Uuid)]
    texts = [
        *(pl.col(c).str.replace_all("-", "") for c in uuids),
        pl.col(pl.Datetime).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f"),
    ]
    marks = ", ".join("?" * len(columns))
    for start in pieces:
        await connection.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608 - the table's own names
            rows.slice(start, piece).with_columns(texts).rows(),
        )
