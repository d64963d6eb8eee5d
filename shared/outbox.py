"""The transactional outbox: events are written in the same transaction as the state they describe, and a relay
publishes committed rows to JetStream in order, marking them sent only once JetStream acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import zlib
from collections.abc import Sequence
from typing import IO, Any

import orjson
from nats.js.api import PubAck
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared import tracing
from shared.bus import Bus, OutgoingMessage
from shared.db import Database
from shared.events import CloudEvent, EventData, new_event, subject_for
from shared.observability import Metrics, current_traceparent
from shared.tables import PlatformTables

log = logging.getLogger(__name__)

PENDING_KEY = "outbox_pending"


class Outbox:
    """Writes events into the outbox table of the current transaction."""

    def __init__(self, tables: PlatformTables, *, prefix: str, source: str) -> None:
        self.table = tables.outbox
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
        now = dt.datetime.now(dt.UTC)
        await session.execute(
            insert(self.table),
            [
                {
                    "event_id": e.id,
                    "subject": subject_for(self.prefix, e.event_type),
                    "payload": e.to_json().decode(),
                    "created_at": now,
                }
                for e in events
            ],
        )
        session.info[PENDING_KEY] = True
        return events

    async def emit_event(
        self, session: AsyncSession, event: CloudEvent, *, subject: str | None = None, msg_id: str | None = None
    ) -> None:
        """Record an envelope as it is. ``msg_id`` (the ``Nats-Msg-Id``, default the event id) differs from the event
        id when one event goes out several times on purpose, e.g. a copy per partner."""
        await session.execute(
            insert(self.table).values(
                event_id=msg_id or event.id,
                subject=subject or subject_for(self.prefix, event.event_type),
                payload=event.to_json().decode(),
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        session.info[PENDING_KEY] = True


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
            rows = (
                await session.execute(
                    select(self.table.c.id, self.table.c.event_id, self.table.c.subject, self.table.c.payload)
                    .where(self.table.c.published_at.is_(None))
                    .order_by(self.table.c.id)
                    .limit(self.batch_size)
                )
            ).all()
        self.metrics.outbox_backlog.set(len(rows))
        if not rows:
            await self._purge_now_and_then()
            return 0
        # A span per event, a child of the span that emitted it; its traceparent goes in the message's headers.
        spans = [tracing.publish_span(self.bus.name, row.subject, _traceparent_in(row.payload), row.event_id)
                 for row in rows]  # fmt: skip
        acks: list[PubAck] = []
        acked = await self.bus.publish_batch(
            [
                OutgoingMessage(row.subject, row.event_id, row.payload.encode(), _trace_headers(span))
                for row, span in zip(rows, spans, strict=True)
            ],
            acks=acks,
        )
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
                    update(self.table)
                    .where(self.table.c.id == bindparam("row_id"))
                    .values(published_at=now, stream_seq=bindparam("seq")),
                    [{"row_id": row.id, "seq": ack.seq} for row, ack in zip(rows[:acked], acks, strict=True)],
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


def _traceparent_in(payload: str) -> str | None:
    """The ``traceparent`` the stored envelope carries (the span that emitted the event); dead letters have none."""
    if '"traceparent"' not in payload:
        return None
    try:
        value = orjson.loads(payload).get("traceparent")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _trace_headers(span: tracing.Span) -> dict[str, str] | None:
    value = tracing.traceparent(tracing.trace.set_span_in_context(span))
    return {tracing.TRACEPARENT: value} if value else None
