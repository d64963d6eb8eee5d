"""The outbox reconciler: events the outbox marked sent that JetStream no longer holds are published again.

The relay marks a row sent when JetStream acknowledged it, and keeps the stream sequence the acknowledgement named.
An acknowledged event can still be lost: a single node that loses power before its files were fsynced (the default
``sync_interval`` fsyncs every two minutes; README, "Durability"), or a cluster losing a majority of its nodes at
once. Consumers then never see it, and nothing else would notice. So the relay's leader looks, a while after each
publish (``outbox_reconcile_grace_seconds``, longer than the fsync interval), whether the message at that sequence
is still the event: if it is missing or another message took its place (a stream that lost its tail hands the same
sequences out again), it publishes the event again with its own id. Consumers record every id they handled, so one
that did see it drops the copy: re-publishing is always safe, missing an event never is.

Messages the stream dropped by its own limits (below its first sequence) are not losses. When the stream's last
sequence goes backwards (a lost tail), everything still kept is looked at again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import PubAck
from sqlalchemy import bindparam, select, update

from shared.bus import MSG_ID_HEADER, OutgoingMessage
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, relay: OutboxRelay, *, grace: dt.timedelta, interval: float, batch_size: int = 500) -> None:
        self.relay = relay
        self.grace = grace
        self.interval = interval
        self.batch_size = batch_size
        self._checked_up_to = 0  # outbox id: rows up to it were found in the stream
        self._last_seq_seen = 0
        self._task: asyncio.Task[None] | None = None
        self.republished = relay.metrics.events_republished

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                while await self.reconcile_once() >= self.batch_size:
                    pass  # more rows to look at
            except Exception as exc:
                log.warning("outbox reconciliation pass failed; retrying", extra={"error": repr(exc)})

    async def reconcile_once(self) -> int:
        """Look at the next rows sent at least ``grace`` ago; re-publish the lost ones. Returns how many rows were
        looked at (the caller goes on while a whole batch was)."""
        relay, bus = self.relay, self.relay.bus
        if not bus.connected or not bus.ready.is_set() or not relay.is_leader:
            return 0
        info = await bus.js.stream_info(bus.stream)
        first_seq, last_seq = int(info.state.first_seq), int(info.state.last_seq)
        if last_seq < self._last_seq_seen:
            log.warning("the stream lost its tail; looking at every kept event again",
                        extra={"last_seq": last_seq, "was": self._last_seq_seen})  # fmt: skip
            self._checked_up_to = 0
        self._last_seq_seen = last_seq
        table = relay.table
        cutoff = dt.datetime.now(dt.UTC) - self.grace
        recent = (
            select(table.c.id, table.c.event_id, table.c.subject, table.c.payload, table.c.stream_seq)
            .where(table.c.id > self._checked_up_to, table.c.published_at.is_not(None))
            .where(table.c.published_at <= cutoff, table.c.stream_seq.is_not(None))
            .order_by(table.c.id)
            .limit(self.batch_size)
        )
        async with relay.db.session() as session:
            rows = (await session.execute(recent)).all()
        lost = []
        for row in rows:
            if row.stream_seq < first_seq:
                continue  # dropped by the stream's own limits (age, size), after its consumers had it
            try:
                message = await bus.js.get_msg(bus.stream, row.stream_seq)
                kept = (message.headers or {}).get(MSG_ID_HEADER) == row.event_id
            except nats.js.errors.NotFoundError:
                kept = False
            if not kept:
                lost.append(row)
        if lost:
            await self._publish_again(lost)
        if rows:
            # Up to the first lost one: it is looked at again until it is back in the stream.
            self._checked_up_to = rows[-1].id if not lost else min(r.id for r in lost) - 1
        return len(rows)

    async def _publish_again(self, rows: list[Any]) -> None:
        relay, bus = self.relay, self.relay.bus
        log.warning("events marked sent are not in the stream; publishing them again",
                    extra={"count": len(rows), "first_event_id": rows[0].event_id})  # fmt: skip
        acks: list[PubAck] = []
        acked = await bus.publish_batch(
            [OutgoingMessage(r.subject, r.event_id, r.payload.encode()) for r in rows], acks=acks
        )
        # JetStream still remembers an id for its duplicate window even when it lost the message: it answers
        # "duplicate" then, and the event is looked at again on the next pass, until the window has passed.
        stored = [(r, a) for r, a in zip(rows[:acked], acks, strict=True) if not a.duplicate]
        if stored:
            async with relay.db.session() as session:
                await session.execute(
                    update(relay.table).where(relay.table.c.id == bindparam("row_id"))
                    .values(stream_seq=bindparam("seq")),
                    [{"row_id": r.id, "seq": a.seq} for r, a in stored],
                )  # fmt: skip
            self.republished.inc(len(stored))
