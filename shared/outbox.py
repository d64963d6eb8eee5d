"""The transactional outbox: events are written in the same transaction as the state they describe, and a relay
publishes committed rows to JetStream in order, marking them sent only once JetStream acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import secrets
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson
from nats.js.api import PubAck
from sqlalchemy import Insert, Table, bindparam, delete, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, registry

from shared import tracing
from shared.bus import Bus, OutgoingMessage
from shared.db import BULK_PIECE, Database, background, bulk_insert, execute_rows, has_pending_rows
from shared.events import CloudEvent, EventData, new_event, subject_for
from shared.observability import Metrics, current_traceparent
from shared.tables import PlatformTables

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

PENDING_KEY = "outbox_pending"
# Key of ``Session.info``: the events a transaction keeps aside to write at its end (see Outbox.keep_aside).
KEPT_KEY = "outbox_kept"


class OutboxRow:
    """An outbox row as the ORM writes it (mapped to each service's outbox table by :func:`_row_class`): the events
    a transaction emits are written when it flushes — the rows of a consumer's whole batch in one INSERT, in the
    order emitted, instead of a statement per event — and a savepoint's rollback takes its events back with it."""

    def __init__(self, *, event_id: str, subject: str, payload: str, created_at: dt.datetime) -> None:
        self.event_id = event_id
        self.subject = subject
        self.payload = payload
        self.created_at = created_at


_ROW_CLASSES: dict[Table, type[OutboxRow]] = {}


def _row_class(table: Table) -> type[OutboxRow]:
    """The class of one outbox table's rows (each service has its own table, on its own metadata)."""
    row_class = _ROW_CLASSES.get(table)
    if row_class is None:
        row_class = type("OutboxRow", (OutboxRow,), {})
        registry(metadata=table.metadata).map_imperatively(row_class, table)
        _ROW_CLASSES[table] = row_class
    return row_class


@dataclass
class _Kept:
    """The outbox rows a transaction keeps aside (:meth:`Outbox.keep_aside`), in the order emitted."""

    statement: Insert
    rows: list[dict[str, Any]]


async def write_emitted(session: AsyncSession) -> None:
    """Write the events emitted in this transaction and not written yet: before a statement on the outbox table that
    the ORM does not flush for (a core INSERT must not overtake them; a core SELECT must see them)."""
    # Every outbox row is of a class of _row_class's (OutboxRow itself is not mapped): a look at each, not at every
    # new row of the session.
    if any(has_pending_rows(session, row_class) for row_class in _ROW_CLASSES.values()):
        await session.flush()
    await write_kept(session)


async def write_kept(session: AsyncSession) -> None:
    """Write the events this transaction kept aside (:meth:`Outbox.keep_aside`), in one core INSERT, in the order
    emitted: at its end (a consumer's ``finish``) and before anything that must come after them or find them."""
    kept: _Kept | None = session.info.get(KEPT_KEY)
    if kept is not None and kept.rows:
        rows, kept.rows = kept.rows, []
        await execute_rows(session, kept.statement, rows)


@event.listens_for(Session, "before_commit")
def _nothing_kept_unwritten(session: Session) -> None:
    """No event kept aside is lost: a transaction that commits with some unwritten fails instead (a path that keeps
    events aside and forgets :func:`write_kept` is a bug to find in its tests, not data to lose)."""
    kept: _Kept | None = session.info.get(KEPT_KEY)
    if kept is not None and kept.rows and not session.in_nested_transaction():  # a savepoint's release: not yet
        raise RuntimeError(f"{len(kept.rows)} events kept aside were not written before the commit")


class Outbox:
    """Writes events into the outbox table of the current transaction."""

    def __init__(self, tables: PlatformTables, *, prefix: str, source: str) -> None:
        self.table = tables.outbox
        self.row = _row_class(self.table)
        self._insert = insert(self.table)  # made once: a statement used again keeps its cache key
        self.prefix = prefix
        self.source = source

    async def emit(self, session: AsyncSession, data: EventData, *, subject: str | None = None) -> CloudEvent:
        """Record ``data`` as an event; it is published only if (and after) the surrounding transaction commits."""
        event = new_event(data, source=self.source, subject=subject, traceparent=current_traceparent())
        await self.emit_event(session, event)
        return event

    async def emit_many(
        self, session: AsyncSession, items: Sequence[EventData], *, subjects: Sequence[str | None] | None = None
    ) -> list[CloudEvent]:
        """Record many events in one statement (bulk work such as screening a population): the same guarantee as
        :meth:`emit`, without a database round trip per event. ``subjects`` are the envelopes' CloudEvents subjects."""
        if not items:
            return []
        traceparent = current_traceparent()
        events = [
            new_event(data, source=self.source, subject=(subjects[i] if subjects else None), traceparent=traceparent)
            for i, data in enumerate(items)
        ]
        await self.write(session, [(e, e.to_json().decode()) for e in events])
        return events

    def event(self, data: EventData, *, subject: str | None = None) -> tuple[CloudEvent, str]:
        """The envelope of ``data`` as :meth:`emit` would record it, and its JSON text, for :meth:`write`: made apart
        from writing it, so that a request builds all it writes before its first write (on SQLite, before it takes
        the writer lock that every other writer waits for)."""
        event = new_event(data, source=self.source, subject=subject, traceparent=current_traceparent())
        return event, event.to_json().decode()

    async def write(self, session: AsyncSession, events: Sequence[tuple[CloudEvent, str]]) -> None:
        """Record envelopes (and their JSON text) made already, at once, in one core INSERT, after the events emitted
        before them: the same guarantee as :meth:`emit`, without the ORM's unit of work (which costs a request more
        than the statement)."""
        now = dt.datetime.now(dt.UTC)
        await write_emitted(session)
        await session.execute(
            self._insert,
            [
                {
                    "event_id": e.id,
                    "subject": subject_for(self.prefix, e.event_type),
                    "payload": payload,
                    "created_at": now,
                }
                for e, payload in events
            ],
        )
        session.info[PENDING_KEY] = True

    def template(
        self,
        data: EventData,
        *,
        holes: Sequence[str] = (),
        time: dt.datetime | None = None,
    ) -> EnvelopeTemplate:
        """The envelope of ``data`` as :meth:`emit` writes it, as JSON text with holes where events of a bulk write
        differ: the event ``id``, the ``subject`` and the data fields named in ``holes`` (UUIDs or integers; the value
        ``data`` gives them is ignored). Every event of :meth:`emit_frame` shares the rest — the source, the type, the
        ``time`` (default now: one moment for the whole write), the traceparent and every other field."""
        return envelope_template(
            data,
            source=self.source,
            holes=holes,
            time=time or dt.datetime.now(dt.UTC),
            traceparent=current_traceparent(),
        )

    async def emit_frame(self, session: AsyncSession, template: EnvelopeTemplate, frame: pl.DataFrame) -> pl.Series:
        """Record one event per row of ``frame`` in one bulk write (``COPY`` on PostgreSQL), their envelopes made in
        columns from ``template``: byte for byte what :meth:`emit_many` writes for the same data, id and time (the
        tests hold it to that). ``frame`` has a text column per hole of the template — ``subject`` and each data
        field, UUIDs with their dashes and integers in digits, as the JSON has them — and ``id`` too when the event
        ids are given (by default each gets a fresh random UUID, as :func:`new_event` gives it). Returns the ids."""
        return await self.emit_frames(session, [(template, frame)])

    async def emit_frames(
        self,
        session: AsyncSession,
        parts: Sequence[tuple[EnvelopeTemplate, pl.DataFrame]],
        *,
        piece: int = BULK_PIECE,
    ) -> pl.Series:
        """:meth:`emit_frame` for several templates (the events of one bulk write that differ in more than their
        holes), in one statement, in the order given (``piece``: see :func:`shared.db.bulk_insert`)."""
        import polars as pl

        now = dt.datetime.now(dt.UTC)
        rows = []
        for template, frame in parts:
            if not frame.height:
                continue
            if "id" not in frame.columns:
                frame = frame.with_columns(event_ids(frame.height))
            rows.append(
                frame.select(
                    pl.col("id").alias("event_id"),
                    pl.lit(subject_for(self.prefix, template.event_type)).alias("subject"),
                    template.render().alias("payload"),
                    pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("created_at"),
                )
            )
        if not rows:
            return pl.Series("id", [], dtype=pl.String)
        written = pl.concat(rows)
        await write_emitted(session)
        await bulk_insert(session, self.table, written, piece=piece)
        session.info[PENDING_KEY] = True
        return written.get_column("event_id").alias("id")

    async def emit_event(
        self, session: AsyncSession, event: CloudEvent, *, subject: str | None = None, msg_id: str | None = None
    ) -> None:
        """Record an envelope as it is. ``msg_id`` (the ``Nats-Msg-Id``, default the event id) differs from the event
        id when one event goes out several times on purpose, e.g. a copy per partner. Written with the transaction's
        next flush (at the latest its commit), after the events emitted before it; in a transaction that keeps its
        events aside (:meth:`keep_aside`), with the others at its end."""
        values: dict[str, Any] = {
            "event_id": msg_id or event.id,
            "subject": subject or subject_for(self.prefix, event.event_type),
            "payload": event.to_json().decode(),
            "created_at": dt.datetime.now(dt.UTC),
        }
        session.info[PENDING_KEY] = True
        kept: _Kept | None = session.info.get(KEPT_KEY)
        if kept is not None:
            if not session.in_nested_transaction():
                kept.rows.append(values)
                return
            if kept.rows:
                # Written now they would go with the savepoint's rollback; left aside, after the savepoint's own.
                raise RuntimeError("events kept aside before a savepoint are to be written before it begins")
        session.add(self.row(**values))

    def keep_aside(self, session: AsyncSession) -> None:
        """From now on in this transaction, keep the events emitted (outside savepoints) aside, to write them at once
        in one core INSERT (:func:`write_kept`, which the caller must reach before the commit: a commit with events
        left unwritten fails). For a consumer's transaction (its ``load`` keeps aside, its ``finish`` writes): through
        the ORM's unit of work an event costs more than the statement. Within a savepoint an event is added to the
        session at once, as ever, so that the savepoint's rollback takes it back (a consumer applies a failed batch's
        events in a savepoint each, ``Consumer._apply_apart``, none of them outside one before)."""
        if not session.in_nested_transaction():
            session.info.setdefault(KEPT_KEY, _Kept(self._insert, []))


@dataclass(frozen=True)
class EnvelopeTemplate:
    """One event's envelope as JSON text, cut where the events of a bulk write differ: ``pieces`` are the fixed text
    around the ``holes`` (``pieces[0]``, the first hole's value, ``pieces[1]`` ...)."""

    event_type: str
    pieces: tuple[str, ...]
    holes: tuple[str, ...]

    def render(self) -> pl.Expr:
        """The envelope of each row as one text column (the holes are the frame's columns of the same names)."""
        import polars as pl

        parts: list[pl.Expr] = [pl.lit(self.pieces[0])]
        for hole, piece in zip(self.holes, self.pieces[1:], strict=True):
            parts += [pl.col(hole), pl.lit(piece)]
        return pl.concat_str(parts)


def envelope_template(
    data: EventData,
    *,
    source: str,
    holes: Sequence[str],
    time: dt.datetime,
    traceparent: str | None,
) -> EnvelopeTemplate:
    """The envelope :func:`new_event` makes of ``data`` (serialised by ``CloudEvent.to_json``), with holes for the id,
    the subject and ``holes``. Each hole is filled with a random stand-in of its type, the envelope is serialised the
    ordinary way, and the text is cut where each stand-in stands: so the fixed text is exactly what the per-event
    path writes, whatever the model's field order, escaping or null handling. A stand-in must occur exactly once."""
    fields = type(data).model_fields
    stand_ins: dict[str, Any] = {}
    for name in holes:
        if name not in fields:
            raise ValueError(f"{type(data).__name__} has no field {name!r}")
        annotation = str(fields[name].annotation)
        if "UUID" in annotation:
            stand_ins[name] = uuid.uuid4()
        elif "int" in annotation:
            stand_ins[name] = 10**14 + secrets.randbelow(9 * 10**14)
        else:
            raise ValueError(f"only UUID and integer fields can be holes, not {name!r} ({annotation})")
    event_id, subject = str(uuid.uuid4()), str(uuid.uuid4())
    event = new_event(data.model_copy(update=stand_ins), source=source, subject=subject, traceparent=traceparent)
    text_ = event.model_copy(update={"id": event_id, "time": time}).to_json().decode()
    marks = {"id": event_id, "subject": subject, **{n: str(v) for n, v in stand_ins.items()}}
    at: list[tuple[int, str, str]] = []
    for hole, mark in marks.items():
        if text_.count(mark) != 1:
            raise ValueError(f"the stand-in of {hole!r} is not found exactly once in the envelope")
        at.append((text_.index(mark), hole, mark))
    at.sort()
    pieces, start = [], 0
    for position, _, mark in at:
        pieces.append(text_[start:position])
        start = position + len(mark)
    pieces.append(text_[start:])
    return EnvelopeTemplate(event.event_type, tuple(pieces), tuple(hole for _, hole, _ in at))


def event_ids(n: int) -> pl.Series:
    """``n`` fresh event ids, random (version 4) UUIDs as :func:`new_event` gives them (``uuid.uuid4``: 16 bytes of
    ``os.urandom``, the version and variant bits set), made in columns."""
    import numpy as np
    import polars as pl

    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    # The text of each id (8-4-4-4-12 hex digits) laid out in numpy, then read as 36-byte strings ('S36' never holds
    # a NUL byte, which numpy would drop).
    hex32 = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    text_ = np.full((n, 36), ord("-"), dtype=np.uint8)
    for start, end, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text_[:, at : at + end - start] = hex32[:, start:end]
    return pl.Series("id", np.frombuffer(text_.tobytes(), dtype="S36")).cast(pl.String)


def dashed(hex32: pl.Expr) -> pl.Expr:
    """A UUID's 32 hex digits as its usual text (8-4-4-4-12), as ``str(uuid)`` writes it."""
    import polars as pl

    return pl.concat_str(
        [hex32.str.slice(0, 8), hex32.str.slice(8, 4), hex32.str.slice(12, 4), hex32.str.slice(16, 4),
         hex32.str.slice(20, 12)],
        separator="-",
    )  # fmt: skip


class OutboxRelay:
    """Publishes committed outbox rows in id order, in batches."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        tables: PlatformTables,
        metrics: Metrics,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        retention: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        self.db = db
        self.bus = bus
        self.table = tables.outbox
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._leader: AsyncConnection | None = None
        self._lock_file: IO[bytes] | None = None
        self._passes = 0
        # A pass's two statements, made once: a pass runs at nearly every commit that emits, and a statement used
        # again is neither built nor given its cache key again.
        self._unsent = (
            select(self.table.c.id, self.table.c.event_id, self.table.c.subject, self.table.c.payload)
            .where(self.table.c.published_at.is_(None))
            .order_by(self.table.c.id)
            .limit(batch_size)
        )
        self._mark_sent = (
            update(self.table)
            .where(self.table.c.id == bindparam("row_id"))
            .values(
                published_at=bindparam("now", type_=self.table.c.published_at.type),
                stream_seq=bindparam("seq", type_=self.table.c.stream_seq.type),
            )
        )
        db.on_commit(self._after_commit)

    def _after_commit(self, session: AsyncSession) -> None:
        if session.info.pop(PENDING_KEY, False):
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._release_leadership()

    async def _run(self) -> None:
        background()
        while not self._stopping:
            self._wake.clear()
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                published = 0
            if published >= self.batch_size:
                continue  # more is waiting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
        # One last pass so that what committed just before shutdown does not wait for the next start.
        with contextlib.suppress(Exception):
            await self.relay_once()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were marked sent."""
        if not self.bus.connected or not self.bus.ready.is_set():
            return 0
        if not await self._hold_leadership():
            return 0
        # Read-only: on SQLite it neither waits for nor holds up the writers while NATS is answering.
        async with self.db.read_session() as session:
            rows = (await session.execute(self._unsent)).all()
        self.metrics.outbox_backlog.set(len(rows))
        if not rows:
            await self._purge_now_and_then()
            return 0
        # A span per event, a child of the span that emitted it; its traceparent goes in the message's headers.
        # Made as each message goes out: for a batch of a thousand, all made first held the loop for tens of ms.
        spans: list[tracing.Span] = []

        def messages() -> Iterator[OutgoingMessage]:
            for row in rows:
                span = tracing.publish_span(self.bus.name, row.subject, _traceparent_in(row.payload), row.event_id)
                spans.append(span)
                value = tracing.span_traceparent(span)
                headers = {tracing.TRACEPARENT: value} if value else None
                yield OutgoingMessage(row.subject, row.event_id, row.payload.encode(), headers)

        acks: list[PubAck] = []
        acked = await self.bus.publish_batch(messages(), acks=acks)
        for n, span in enumerate(spans):
            if n >= acked:
                span.set_status(tracing.Status(tracing.StatusCode.ERROR, "not acknowledged; published again later"))
            span.end()
        if acked:
            # Mark exactly the acknowledged rows by id. A range ("id <= last") would also mark a row with a lower
            # id whose transaction committed after our select, and that event would never be published.
            # With the stream sequence each got, where the reconciler looks for it later (shared/reconciler.py).
            now = dt.datetime.now(dt.UTC)
            async with self.db.session() as session:
                await session.execute(
                    self._mark_sent,
                    [
                        {"row_id": row.id, "seq": ack.seq, "now": now}
                        for row, ack in zip(rows[:acked], acks, strict=True)
                    ],
                )
            self.metrics.events_published.inc(acked)
        return acked

    async def backlog(self) -> int:
        async with self.db.read_session() as session:
            count = await session.scalar(
                select(func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
            )
        return int(count or 0)

    async def _purge_now_and_then(self) -> None:
        self._passes += 1
        if self._passes % 100 != 1:
            return
        cutoff = dt.datetime.now(dt.UTC) - self.retention
        async with self.db.session() as session:
            await session.execute(
                delete(self.table).where(self.table.c.published_at.is_not(None), self.table.c.published_at < cutoff)
            )

    # ------------------------------------------------------------------------------------------ one relay at a time

    async def _hold_leadership(self) -> bool:
        """Several replicas of a service share one outbox; only the holder of a lock relays, so that rows go out in
        order: on PostgreSQL an advisory lock, on SQLite (replicas on one machine) a file lock beside the database."""
        if self.db.dialect == "sqlite":
            return self._hold_file_lock()
        if self.db.dialect != "postgresql":
            return True
        if self._leader is not None:
            try:
                # The lock lives as long as its session: if the connection was lost (network, server restart,
                # an operator's pg_terminate_backend) the lock went with it and another replica may hold it now.
                await self._leader.exec_driver_sql("SELECT 1")
                await self._leader.rollback()
                return True
            except Exception as exc:
                log.warning("the outbox relay's lock connection was lost; competing again", extra={"error": repr(exc)})
                with contextlib.suppress(Exception):
                    await self._leader.invalidate()
                self._leader = None
        conn = await self.db.engine.connect()
        try:
            key = zlib.crc32(f"outbox:{self.bus.name}".encode())
            got: Any = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
            await conn.commit()
        except Exception:
            await conn.close()
            raise
        if got:
            self._leader = conn
            return True
        await conn.close()
        return False

    def _hold_file_lock(self) -> bool:
        if self._lock_file is not None:
            return True
        database = make_url(self.db.url).database
        if not database or database == ":memory:":
            return True
        handle = open(f"{database}.relay-lock", "ab")  # noqa: SIM115 - held for as long as this relay leads
        try:
            # Released by the kernel when the process dies, however it dies.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    @property
    def is_leader(self) -> bool:
        """Whether this relay holds the lock that makes it the one relaying."""
        return self._leader is not None or self._lock_file is not None

    async def _release_leadership(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None


# How every envelope CloudEvent.to_json writes begins (specversion is its first field).
_ENVELOPE_START = '{"specversion":"1.0",'


def _traceparent_in(payload: str) -> str | None:
    """The ``traceparent`` the stored envelope carries (the span that emitted the event); dead letters have none."""
    if '"traceparent"' not in payload:
        return None
    if payload.startswith(_ENVELOPE_START):
        # An envelope as CloudEvent.to_json writes it: its traceparent, if any, comes before its data (and no other
        # key of the envelope), so it is the first "traceparent": before the first "data": (a key: inside a string
        # a quote is escaped). Read there without parsing the whole event (a determination's is kilobytes).
        data_at = payload.find('"data":')
        at = payload.find('"traceparent":"', 0, data_at)
        if data_at > 0 and at < 0:
            return None
        if at > 0:
            start = at + len('"traceparent":"')
            value = payload[start : payload.find('"', start)]
            if "\\" not in value:
                return value
    try:
        value = orjson.loads(payload).get("traceparent")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
