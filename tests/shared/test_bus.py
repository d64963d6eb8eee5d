"""The delivery guarantees, against a real nats-server and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy import func, select, text

from shared.bus import MSG_ID_HEADER, Bus, OutgoingMessage
from shared.db import Database
from shared.events import CloudEvent, dead_letter_subject, subject_for
from tests.support.bus_harness import EVENT_TYPE, POISON, CountingRelay, Harness, effects, tables, withdrawn
from tests.support.nats import NatsServer
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def harness(nats_server: NatsServer, bus_prefix: str, database_url: str) -> AsyncIterator[Harness]:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    yield h
    await h.stop()


async def stream_count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def consumer_settled(h: Harness) -> bool:
    assert h.consumer is not None
    info = await h.bus.js.consumer_info(h.bus.stream, h.consumer.durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def run_crashing(mode: str, nats_url: str, prefix: str, database_url: str, **kwargs: object) -> int:
    args = [sys.executable, "-m", "tests.support.bus_harness", mode, "--nats-url", nats_url, "--prefix", prefix,
            "--database-url", database_url]  # fmt: skip
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=90)
    return done.returncode


# ---------------------------------------------------------------------------------------------- 1. duplicates


async def test_an_event_published_twice_with_the_same_id_is_delivered_once(harness: Harness) -> None:
    event = harness.event(withdrawn())
    await harness.bus.publish_event(event)
    await harness.bus.publish_event(event)  # a producer's retry: JetStream drops it by Nats-Msg-Id
    subject = subject_for(harness.bus.prefix, EVENT_TYPE)
    assert await stream_count(harness.bus, subject) == 1

    await harness.start_consumer()
    await wait_until(lambda: consumer_settled(harness))
    assert await harness.effect_counts() == {event.data["application_id"]: 1}


async def test_a_duplicate_beyond_the_broker_dedupe_window_is_applied_once(harness: Harness) -> None:
    """JetStream only de-duplicates within its window; the inbox catches the rest (here: another Nats-Msg-Id)."""
    event = harness.event(withdrawn())
    subject = subject_for(harness.bus.prefix, EVENT_TYPE)
    await harness.bus.js.publish(subject, event.to_json(), headers={MSG_ID_HEADER: event.id})
    await harness.bus.js.publish(subject, event.to_json(), headers={MSG_ID_HEADER: event.id + "-late-retry"})
    assert await stream_count(harness.bus, subject) == 2

    consumer = await harness.start_consumer()
    await wait_until(lambda: consumer_settled(harness))
    assert await harness.effect_counts() == {event.data["application_id"]: 1}
    duplicates = harness.metrics.events_handled.labels(consumer=consumer.durable, result="duplicate")._value.get()
    assert duplicates == 1


# ---------------------------------------------------------------------------------------------- 2. consumer crash


async def test_a_consumer_killed_after_commit_before_ack_does_not_apply_twice(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url, ack_wait=1.0).setup()
    try:
        sent = [h.event(withdrawn()) for _ in range(5)]
        for event in sent:
            await h.bus.publish_event(event)

        code = await asyncio.to_thread(
            run_crashing, "consume-then-die-before-ack", nats_server.url, bus_prefix, database_url, ack_wait=1.0
        )
        assert code == 137, "the consumer process should have died at the crash point"
        # The effects of its first batch are committed (with their inbox rows), and nothing was acknowledged.
        committed = sum((await h.effect_counts()).values())
        assert committed >= 1
        assert await h.scalar(select(func.count()).select_from(tables.inbox)) == committed

        consumer = await h.start_consumer()  # the restarted consumer gets the redeliveries
        await wait_until(lambda: consumer_settled(h), timeout=30)
        assert await h.effect_counts() == {e.data["application_id"]: 1 for e in sent}
        # What had been committed came back, was recognised by the inbox, and was only acknowledged.
        duplicates = h.metrics.events_handled.labels(consumer=consumer.durable, result="duplicate")._value.get()
        assert duplicates == committed
    finally:
        await h.stop()


# ---------------------------------------------------------------------------------------------- 3. relay crash


@pytest.mark.parametrize("mode", ["emit-then-die-before-publish", "emit-then-die-before-mark"])
async def test_a_relay_killed_mid_way_publishes_each_event_exactly_once_after_restart(
    nats_server: NatsServer, bus_prefix: str, database_url: str, mode: str
) -> None:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    try:
        code = await asyncio.to_thread(run_crashing, mode, nats_server.url, bus_prefix, database_url, count=20)
        assert code == 137
        subject = subject_for(h.bus.prefix, EVENT_TYPE)
        unpublished = select(func.count()).select_from(tables.outbox).where(tables.outbox.c.published_at.is_(None))
        assert await h.scalar(unpublished) == 20, "the committed events are still waiting in the outbox"
        before = await stream_count(h.bus, subject)
        assert before == (0 if mode == "emit-then-die-before-publish" else 20)

        await h.start_relay()  # the restarted service's relay
        await wait_until(lambda: _zero(h, unpublished))
        assert await stream_count(h.bus, subject) == 20, "published once each, re-publishes de-duplicated"

        await h.start_consumer()
        await wait_until(lambda: consumer_settled(h))
        counts = await h.effect_counts()
        assert len(counts) == 20
        assert set(counts.values()) == {1}
    finally:
        await h.stop()


async def _zero(h: Harness, query: object) -> bool:
    return bool(await h.scalar(query) == 0)


# ---------------------------------------------------------------------------------------------- concurrency


async def test_several_workers_on_one_consumer_apply_each_event_once(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    h = await Harness(
        nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url, concurrency=4, batch_size=10
    ).setup()
    try:
        consumer = await h.start_consumer()
        assert len(consumer._workers) == 4
        sent = [h.event(withdrawn()) for _ in range(300)]
        for event in sent:
            await h.bus.publish_event(event)
        await wait_until(lambda: consumer_settled(h), timeout=60)
        counts = await h.effect_counts()
        assert counts == {e.data["application_id"]: 1 for e in sent}
    finally:
        await h.stop()


# ---------------------------------------------------------------------------------------------- 4. poison


async def test_a_poison_event_goes_to_the_dead_letters_while_the_events_behind_it_are_processed(
    harness: Harness,
) -> None:
    poison = harness.event(withdrawn(reason=POISON))
    good = [harness.event(withdrawn()) for _ in range(20)]
    for event in [poison, *good]:
        await harness.bus.publish_event(event)

    consumer = await harness.start_consumer()
    await harness.start_relay()  # the dead letter goes out through the outbox
    await wait_until(lambda: _effects_total(harness, 20))
    dlq = dead_letter_subject(harness.bus.prefix, harness.name, "effects")
    await wait_until(lambda: _stream_has(harness, dlq))
    await wait_until(lambda: consumer_settled(harness))

    letters = await _rows(harness)
    assert [(r.event_id, r.deliveries) for r in letters] == [(poison.id, consumer.max_deliver)]
    assert "always fails" in letters[0].error
    assert await harness.effect_counts() == {e.data["application_id"]: 1 for e in good}, "each good event once"
    assert harness.metrics.dead_letters.labels(consumer=consumer.durable)._value.get() == 1
    assert await stream_count(harness.bus, dlq) == 1

    message = await harness.bus.js.get_last_msg(harness.bus.stream, dlq)
    assert message.data is not None
    letter = orjson.loads(message.data)
    assert letter["consumer"] == consumer.durable
    assert letter["deliveries"] == consumer.max_deliver
    assert "always fails" in letter["error"]
    assert CloudEvent.model_validate(letter["event"]).id == poison.id


async def _effects_total(h: Harness, n: int) -> bool:
    return sum((await h.effect_counts()).values()) >= n


async def _stream_has(h: Harness, subject: str) -> bool:
    return await stream_count(h.bus, subject) > 0


async def _rows(h: Harness) -> list:  # type: ignore[type-arg]
    async with h.db.session() as session:
        return list((await session.execute(select(tables.dead_letters))).all())


async def test_an_undecodable_message_is_dead_lettered_at_once(harness: Harness) -> None:
    subject = subject_for(harness.bus.prefix, EVENT_TYPE)
    await harness.bus.js.publish(subject, b"{not json", headers={MSG_ID_HEADER: "garbage-1"})
    good = harness.event(withdrawn())
    await harness.bus.publish_event(good)
    await harness.start_consumer()
    await wait_until(lambda: consumer_settled(harness))
    letters = await _rows(harness)
    assert len(letters) == 1
    assert letters[0].deliveries == 1, "no retries for what can never decode"
    assert "undecodable" in letters[0].error
    assert await harness.effect_counts() == {good.data["application_id"]: 1}


# ---------------------------------------------------------------------------------------------- 5. NATS restart


async def test_nats_restarted_in_the_middle_of_1000_events_applies_each_exactly_once(
    tmp_path: Path, bus_prefix: str, database_url: str
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    h = await Harness(
        nats_url=server.url, prefix=bus_prefix, database_url=database_url, ack_wait=2.0, outbox_batch_size=50
    ).setup()
    try:
        await h.start_relay()
        await h.start_consumer()
        ids: list[str] = []
        for round_ in range(20):  # 20 transactions of 50 events, with the restart after the 8th
            batch = [withdrawn() for _ in range(50)]
            ids += [str(b.application_id) for b in batch]
            await h.emit(batch)
            if round_ == 7:
                await wait_until(lambda: _effects_total(h, 100), timeout=30)
                await asyncio.to_thread(server.restart)
            await asyncio.sleep(0.02)
        await wait_until(lambda: _effects_total(h, 1000), timeout=90)
        await wait_until(lambda: consumer_settled(h), timeout=30)
        counts = await h.effect_counts()
        assert sorted(counts) == sorted(ids)
        assert set(counts.values()) == {1}, "no effect applied twice"
        total = await h.scalar(select(func.count()).select_from(effects))
        assert total == 1000
    finally:
        await h.stop()
        server.stop()


# ---------------------------------------------------------------------------------------------- one relay at a time


class LeadershipWatch:
    """Watches relays sharing one outbox on PostgreSQL: after every pass of any relay, which relays believe they
    lead (leadership is only taken or lost in a pass, so this sees every state); before every batch, whether the
    relay publishing it is the one whose session holds the lock.

    A relay learns that its session died on its next pass, so after the lock may have been lost a relay's belief
    counts only once it has finished a pass begun since; among the beliefs that count there is never more than one
    leader."""

    def __init__(self, harnesses: Sequence[Harness]) -> None:
        self.relays = [h.relay for h in harnesses]
        self.db = harnesses[0].db
        self.counts_after = [0] * len(self.relays)
        self.phase = ""
        self.leaders: list[tuple[str, tuple[int, ...]]] = []  # (phase, the relays believing they lead), per pass
        self.publishers: list[int] = []  # the relay that published each batch
        self.usurped: list[str] = []  # batches published by a relay whose session did not hold the lock
        for index, harness in enumerate(harnesses):
            harness.relay.after_pass.append(self._after_pass)
            harness.bus.before_publish.append(functools.partial(self._before_publish, index))

    def lock_may_be_lost(self) -> None:
        self.counts_after = [relay.started for relay in self.relays]

    def _after_pass(self, _: CountingRelay) -> None:
        leaders = tuple(
            i for i, (r, after) in enumerate(zip(self.relays, self.counts_after, strict=True))
            if r.passes > after and r.is_leader
        )  # fmt: skip
        self.leaders.append((self.phase, leaders))

    async def _before_publish(self, index: int, messages: Sequence[OutgoingMessage]) -> None:
        self.publishers.append(index)
        holders = await lock_holders(self.db)
        session = await session_pid(self.relays[index])
        if holders != [session]:
            self.usurped.append(f"relay {index} published {len(messages)} from session {session}; lock: {holders}")


async def lock_holders(db: Database) -> list[int]:
    """The sessions holding an advisory lock in this test's database."""
    async with db.session() as session:
        rows = await session.scalars(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
        return list(rows)


async def session_pid(relay: CountingRelay) -> int | None:
    """The server process of the relay's lock session (known to the driver: asking would use the connection)."""
    if relay._leader is None:
        return None
    raw = await relay._leader.get_raw_connection()
    return int(raw.driver_connection.get_server_pid())  # type: ignore[union-attr]


class WireTap:
    """The message ids of everything published on a subject, as core NATS delivers it: before JetStream's
    de-duplication, so an event published twice under one Nats-Msg-Id shows here twice (the stream keeps one)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.msg_ids: list[str] = []
        self.subscription: Subscription | None = None

    async def listen(self, subject: str) -> None:
        self.subscription = await self.nc.subscribe(subject, cb=self._record)
        await self.nc.flush()

    async def _record(self, msg: Msg) -> None:
        self.msg_ids.append((msg.headers or {}).get(MSG_ID_HEADER, "?"))

    async def caught_up(self) -> None:
        """Everything the server delivered to us before now has been recorded."""
        await self.nc.flush()  # the server answers after every message it sent us before
        await wait_until(self._drained)

    async def _drained(self) -> bool:
        return self.subscription is not None and self.subscription.pending_msgs == 0


@contextlib.asynccontextmanager
async def wire_tap(nats_url: str, subject: str) -> AsyncIterator[WireTap]:
    tap = WireTap(await nats.connect(nats_url))
    try:
        await tap.listen(subject)
        yield tap
    finally:
        await tap.nc.close()


async def test_a_relay_that_lost_its_lock_connection_stops_relaying_and_one_leader_remains(
    nats_server: NatsServer, bus_prefix: str, postgres_server: PostgresServer
) -> None:
    """Two replicas share one outbox on PostgreSQL; the leader's lock session is killed by the server. The relay
    notices (a lost connection is also a lost lock), so never do two relays believe they lead, only the lock's holder
    publishes, and every event goes out exactly once, in order: counted on the wire, where a second relay's
    re-publishing would show, not only in the stream, where Nats-Msg-Id hides it."""
    database_url = postgres_server.create_database()
    first = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    second = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    watch = LeadershipWatch([first, second])
    subject = subject_for(first.bus.prefix, EVENT_TYPE)
    try:
        async with wire_tap(nats_server.url, subject) as wire:
            watch.phase = "first alone"
            await first.start_relay()
            emitted = await first.emit([withdrawn() for _ in range(20)])
            await wait_until(lambda: _published(first, 20))
            watch.phase = "both"
            await second.start_relay()
            await wait_until(lambda: _passed((second.relay, 5)))  # the second relay has asked for the lock five times
            assert (first.relay.is_leader, second.relay.is_leader) == (True, False)

            [killed] = await lock_holders(first.db)
            # From before the kill: the second relay may take the lock as soon as the session is gone, while the
            # first still believes it leads until its next pass (seen once, under load, as two leaders in "both").
            watch.lock_may_be_lost()
            watch.phase = "lock lost"
            async with first.db.session() as session:
                assert await session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
            await wait_until(lambda: _gone(first, killed))
            emitted += await first.emit([withdrawn() for _ in range(30)])
            emitted += await second.emit([withdrawn() for _ in range(30)])
            await wait_until(lambda: _published(first, 80))

            # Once each relay has finished a pass begun after the kill, its belief is fresh: one leads from now on.
            since = [first.relay.started, second.relay.started]
            await wait_until(lambda: _passed((first.relay, since[0] + 1), (second.relay, since[1] + 1)))
            watch.phase = "settled"
            emitted += await first.emit([withdrawn() for _ in range(10)])
            emitted += await second.emit([withdrawn() for _ in range(10)])
            await wait_until(lambda: _published(first, 100))
            since = [first.relay.passes, second.relay.passes]
            await wait_until(lambda: _passed((first.relay, since[0] + 3), (second.relay, since[1] + 3)))
            await wire.caught_up()

        assert wire.msg_ids == [e.id for e in emitted], "each event published once, in the outbox's order"
        assert await stream_count(first.bus, subject) == 100
        published = [h.metrics.events_published._value.get() for h in (first, second)]
        assert sum(published) == 100, f"rows marked sent by each relay: {published}"
        assert watch.usurped == [], "only the holder of the lock publishes"
        assert len(watch.publishers) >= 3

        def leaders(phase: str) -> set[tuple[int, ...]]:
            return {leaders for p, leaders in watch.leaders if p == phase}

        assert [entry for entry in watch.leaders if len(entry[1]) > 1] == [], "never two leaders at once"
        assert leaders("first alone") == leaders("both") == {(0,)}
        assert len(leaders("settled")) == 1
        assert len(next(iter(leaders("settled")))) == 1, "one leader remains"
        assert (first.relay.is_leader, second.relay.is_leader) in {(True, False), (False, True)}
    finally:
        await second.stop()
        await first.stop()


async def _passed(*marks: tuple[CountingRelay, int]) -> bool:
    """Each relay has finished at least that many passes."""
    return all(relay.passes >= n for relay, n in marks)


async def _gone(h: Harness, pid: int) -> bool:
    """The killed session's process has exited (and so released its locks)."""
    alive = await h.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid").bindparams(pid=pid))
    return bool(alive == 0)


async def _published(h: Harness, n: int) -> bool:
    sent = await h.scalar(
        select(func.count()).select_from(tables.outbox).where(tables.outbox.c.published_at.is_not(None))
    )
    return bool(sent == n)


async def test_a_long_batch_lets_the_loop_run_other_work_while_it_publishes(harness: Harness) -> None:
    """publish_batch queues a thousand messages without waiting for any ack: done in one go, it held the event loop
    for tens of milliseconds (every request waited). It lets the loop run other ready work while it queues them, and
    every message is still published, in order."""
    subject = subject_for(harness.bus.prefix, EVENT_TYPE)
    made = 0
    seen_made: list[int] = []

    def messages() -> Iterator[OutgoingMessage]:
        nonlocal made
        for n in range(1000):
            made += 1
            yield OutgoingMessage(subject, f"long-batch-{n}", orjson.dumps({"n": n}), None)

    async def other_work() -> None:
        seen_made.append(made)

    other = asyncio.create_task(other_work())  # ready now: it runs at the loop's next turn
    acks: list[Any] = []
    assert await Bus.publish_batch(harness.bus, messages(), acks=acks) == 1000  # the bus itself, not the watching
    await other
    assert seen_made, "the other work ran"
    assert seen_made[0] < 1000, f"the other work ran only after {seen_made[0]} messages were queued"
    assert [a.seq for a in acks] == sorted(a.seq for a in acks)
    assert await stream_count(harness.bus, subject) == 1000


async def test_batches_at_once_each_get_their_own_acks_in_order_up_to_the_first_refused(harness: Harness) -> None:
    """publish_batch reads JetStream's answers itself (one subscription per connection, a reply subject per message
    naming its batch and place): two batches at once each get the acknowledgements of their own messages, in order;
    a message JetStream does not take (no stream has its subject) ends what counts as published, and a message
    published again is acknowledged as the duplicate it is, with its first stream sequence."""
    bus = harness.bus
    subject = subject_for(bus.prefix, EVENT_TYPE)

    def batch(name: str, n: int) -> list[OutgoingMessage]:
        return [
            OutgoingMessage(subject, f"{name}-{i}", orjson.dumps({"i": i}), {"traceparent": name}) for i in range(n)
        ]

    first, second = batch("first", 300), batch("second", 200)
    first_acks: list[Any] = []
    second_acks: list[Any] = []
    published = await asyncio.gather(
        bus.publish_batch(first, acks=first_acks), bus.publish_batch(second, acks=second_acks)
    )
    assert list(published) == [300, 200]
    for messages, acks in ((first, first_acks), (second, second_acks)):
        assert [a.seq for a in acks] == sorted({a.seq for a in acks})
        assert not any(a.duplicate for a in acks)
        for message, ack in zip(messages[::50], acks[::50], strict=True):
            stored = await bus.js.get_msg(bus.stream, ack.seq)
            assert stored.headers is not None
            assert stored.headers[MSG_ID_HEADER] == message.msg_id
            assert stored.headers["traceparent"] == message.headers["traceparent"]  # type: ignore[index]
            assert stored.data == message.payload

    nowhere = OutgoingMessage(f"{bus.prefix}-nowhere.{EVENT_TYPE}", "nowhere-0", b"{}")
    again: list[Any] = []
    assert await bus.publish_batch([*first[:3], nowhere, *batch("third", 5)], acks=again) == 3
    assert [(a.seq, a.duplicate) for a in again] == [(a.seq, True) for a in first_acks[:3]]
    assert await stream_count(bus, subject) == 500 + 5, "what followed the refused message went out all the same"
