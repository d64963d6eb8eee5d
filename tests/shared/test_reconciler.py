"""The reconciler finds events the outbox marked sent that JetStream no longer holds (a lost write: deleted here, as
a node that lost its unsynced tail would have lost them) and publishes them again; the consumers apply each exactly
once, and what the stream still holds is never published twice. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from shared.bus import MSG_ID_HEADER
from shared.reconciler import Reconciler
from tests.support.bus_harness import Harness, tables, withdrawn
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until

EVENTS = 30
LOST = (3, 4, 17, 29)  # positions of the events JetStream loses


@pytest.fixture
async def harness(nats_server: NatsServer, bus_prefix: str, database_url: str) -> AsyncIterator[Harness]:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    # A node that lost its unsynced tail has forgotten those ids too; deleting a message here does not make JetStream
    # forget its id, so its duplicate window is made short enough to pass within the test.
    config = (await h.bus.js.stream_info(h.bus.stream)).config
    config.duplicate_window = 0.5
    await h.bus.js.update_stream(config)
    yield h
    await h.stop()


async def _reconciled(h: Harness, expected_messages: int) -> bool:
    """One reconciliation pass; whether the stream holds the expected messages after it."""
    await Reconciler(h.relay, grace=dt.timedelta(0), interval=3600).reconcile_once()
    return await _stream_messages(h) == expected_messages


async def _stream_messages(h: Harness) -> int:
    return int((await h.bus.js.stream_info(h.bus.stream)).state.messages)


async def test_events_marked_sent_but_lost_by_jetstream_are_published_again_once(harness: Harness) -> None:
    h = harness
    events = await h.emit([withdrawn() for _ in range(EVENTS)])
    await h.start_relay()
    await wait_until(lambda: _all_sent(h))
    outbox = tables.outbox
    async with h.db.session() as session:
        rows = (await session.execute(select(outbox.c.event_id, outbox.c.stream_seq).order_by(outbox.c.id))).all()
    assert [r.event_id for r in rows] == [e.id for e in events]
    for row in rows:  # the sequence the relay kept is where the event is
        message = await h.bus.js.get_msg(h.bus.stream, row.stream_seq)
        assert (message.headers or {})[MSG_ID_HEADER] == row.event_id

    # JetStream loses some of them before any consumer read them.
    for n in LOST:
        await h.bus.js.delete_msg(h.bus.stream, rows[n].stream_seq)
    assert await _stream_messages(h) == EVENTS - len(LOST)

    assert await Reconciler(h.relay, grace=dt.timedelta(0), interval=3600).reconcile_once() == EVENTS
    await wait_until(lambda: _reconciled(h, EVENTS))
    assert h.metrics.registry.get_sample_value("onestop_outbox_events_republished_total") == len(LOST)
    assert await _stream_messages(h) == EVENTS, "only the lost ones were published again"
    async with h.db.session() as session:
        again = dict((await session.execute(select(outbox.c.event_id, outbox.c.stream_seq))).all())
    for n in LOST:
        assert again[rows[n].event_id] > rows[-1].stream_seq, "its new place in the stream is kept"
    # A second pass finds nothing more to do.
    assert await Reconciler(h.relay, grace=dt.timedelta(0), interval=3600).reconcile_once() == EVENTS
    assert h.metrics.registry.get_sample_value("onestop_outbox_events_republished_total") == len(LOST)
    assert await _stream_messages(h) == EVENTS

    # Every event applied exactly once.
    await h.start_consumer()
    await wait_until(lambda: _applied(h, EVENTS))
    counts = await h.effect_counts()
    assert sorted(counts) == sorted(str(e.data["application_id"]) for e in events)
    assert set(counts.values()) == {1}


async def test_a_republished_event_a_consumer_already_had_changes_nothing(harness: Harness) -> None:
    h = harness
    await h.emit([withdrawn() for _ in range(5)])
    await h.start_relay()
    await h.start_consumer()
    await wait_until(lambda: _applied(h, 5))
    outbox = tables.outbox
    async with h.db.session() as session:
        third = (await session.execute(select(outbox.c.stream_seq).order_by(outbox.c.id))).scalars().all()[2]
    assert third is not None
    # Lost after it was consumed. (Not the first: one below the stream's first sequence counts as dropped by the
    # stream's own limits.)
    await h.bus.js.delete_msg(h.bus.stream, third)
    await wait_until(lambda: _reconciled(h, 5))
    assert h.metrics.registry.get_sample_value("onestop_outbox_events_republished_total") == 1
    assert h.consumer is not None
    await wait_until(lambda: _inbox_caught_up(h))
    assert set((await h.effect_counts()).values()) == {1}, "the inbox dropped the copy"


async def test_recent_events_wait_for_the_grace_period(harness: Harness) -> None:
    h = harness
    await h.emit([withdrawn() for _ in range(3)])
    await h.start_relay()
    await wait_until(lambda: _all_sent(h))
    assert await Reconciler(h.relay, grace=dt.timedelta(minutes=5), interval=3600).reconcile_once() == 0


async def _all_sent(h: Harness) -> bool:
    outbox = tables.outbox
    return not await h.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None)))


async def _applied(h: Harness, n: int) -> bool:
    return sum((await h.effect_counts()).values()) >= n


async def _inbox_caught_up(h: Harness) -> bool:
    assert h.consumer is not None
    info = await h.bus.js.consumer_info(h.bus.stream, h.consumer.durable)
    return not info.num_pending and not info.num_ack_pending
