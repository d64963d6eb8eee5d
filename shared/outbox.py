"""The transactional outbox: events are written in the same transaction as the state they describe, and a relay
publishes committed rows to JetStream in order, marking them sent only once JetStream acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
        acked = await self.bus.publish_batch(
            [OutgoingMessage(row.subject, row.event_id, row.payload.encode()) for row in rows]
        )
        if acked:
            # Mark exactly the acknowledged rows by id. A range ("id <= last") would also mark a row with a lower
            # id whose transaction committed after our select, and that event would never be published.
            ids = [row.id for row in rows[:acked]]
            async with self.db.session() as session:
                await session.execute(
                    update(self.table).where(self.table.c.id.in_(ids)).values(published_at=dt.datetime.now(dt.UTC))
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
        """On PostgreSQL several replicas of a service share one outbox; only the holder of an advisory lock
        relays, so that rows go out in order. SQLite has one process per database and needs no lock."""
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

    @property
    def is_leader(self) -> bool:
        """On PostgreSQL, whether this relay holds the lock that makes it the one relaying (SQLite needs none)."""
        return self._leader is not None

    async def _release_leadership(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None
