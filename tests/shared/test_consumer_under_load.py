"""How consumers share a service under load: at most ``consumer_parallel_batches`` batches are applied at once across
all of a service's consumers, and a batch's transaction gives way to a write transaction waiting for SQLite's writer
lock. Against a real nats-server and real databases; the handlers are held at chosen points by the test."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, registry

from shared import sqlite
from shared.consumer import WRITE_EVERY, Subscription, on
from shared.db import background
from shared.events import ApplicationWithdrawn, CloudEvent
from shared.observability import Metrics
from shared.runtime import Runtime, ServiceDefinition, no_context
from shared.settings import ServiceSettings
from tests.support.bus_harness import Harness, effects, tables, withdrawn
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until

HOLD = "hold"


async def _effects(h: Harness) -> list[str]:
    """The ``effects`` rows' event ids in the order they were written."""
    async with h.db.session() as session:
        return list((await session.execute(select(effects.c.event_id).order_by(effects.c.id))).scalars())


async def _taken(h: Harness, durables: list[str], *, at_least: int) -> bool:
    """Whether the server handed these consumers at least so many messages they have not acknowledged yet."""
    infos = [await h.bus.js.consumer_info(h.bus.stream, d) for d in durables]
    return bool(sum(i.num_ack_pending for i in infos) >= at_least)


async def _settled(h: Harness, durables: list[str]) -> bool:
    infos = [await h.bus.js.consumer_info(h.bus.stream, d) for d in durables]
    return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)


@contextlib.asynccontextmanager
async def _runtime(settings: ServiceSettings, subscriptions: list[Subscription]) -> AsyncIterator[Runtime]:
    """A service's runtime with these consumers running (no HTTP, relay or context: only what consuming needs)."""
    definition: ServiceDefinition[None] = ServiceDefinition(
        name="loaded", title="Loaded", description="consumers under load", tables=tables, routers=[],
        context=no_context,
    )  # fmt: skip
    runtime = Runtime.build(definition, settings, Metrics("loaded"))
    runtime.add_consumers(subscriptions)
    await runtime.bus.connect(attempts=20)
    try:
        for consumer in runtime.consumers.values():
            await consumer.start()
        yield runtime
    finally:
        await runtime.stop_consuming()
        await runtime.bus.close()
        await runtime.db.dispose()


async def test_a_service_applies_at_most_its_parallel_batches_at_once_across_its_consumers(
    nats_server: NatsServer, bus_prefix: str, database_url: str, tmp_path: Path
) -> None:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    gate = asyncio.Event()
    applying = 0  # batches being applied now: held in their work ahead of the write transaction
    most = 0

    async def ahead(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        # The work a batch does before its write transaction (evaluating rules, in eligibility) is where batches
        # overlap on SQLite too (their write transactions take turns), so that is where the test holds them.
        nonlocal applying, most
        applying += 1
        most = max(most, applying)
        try:
            await gate.wait()
        finally:
            applying -= 1

    # Two consumers of two workers each: four batches can be taken at once, two may be applied.
    subscriptions = [
        Subscription(name=name, handlers=[on(ApplicationWithdrawn, Harness.apply)], concurrency=2, prepare=ahead)
        for name in ("one", "two")
    ]
    settings = ServiceSettings(
        nats_url=nats_server.url, bus_prefix=bus_prefix, database_url=database_url, consumer_parallel_batches=2,
        jwt_public_key_file=tmp_path / "keys" / "issuer.pub.pem",
    )  # fmt: skip
    events = [h.event(withdrawn()) for _ in range(8)]
    try:
        for e in events:
            await h.bus.publish_event(e)
        async with _runtime(settings, subscriptions) as runtime:
            durables = [c.durable for c in runtime.consumers.values()]
            # Every worker has taken a batch (idle, each takes one message) while two batches are held.
            await wait_until(lambda: applying >= 2)
            await wait_until(lambda: _taken(h, durables, at_least=4))
            assert applying == 2, "the other batches wait for a slot"
            gate.set()
            await wait_until(lambda: _settled(h, durables))
            assert most == 2, "two batches at once, never more"
        applied = await _effects(h)
        assert sorted(applied) == sorted([e.id for e in events] * 2), "each consumer applied every event once"
    finally:
        gate.set()
        await h.stop()


class _Held(Harness):
    """A handler that writes its effect; for an event whose reason is ``HOLD`` it first waits for the test."""

    def __init__(self, *, nats_url: str, prefix: str, database_url: str) -> None:
        super().__init__(nats_url=nats_url, prefix=prefix, database_url=database_url)
        self.holding = asyncio.Event()
        self.gate = asyncio.Event()

    async def apply(self, session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:  # type: ignore[override]
        if data.reason == HOLD:
            self.holding.set()
            await self.gate.wait()
        await session.execute(
            insert(effects).values(
                application_id=str(data.application_id), event_id=event.id, applied_at=dt.datetime.now(dt.UTC)
            )
        )


# The writer lock is SQLite's (PostgreSQL serialises nothing of the kind): this runs on SQLite only.
@pytest.mark.parametrize("database_backend", ["sqlite"])
async def test_a_batch_commits_what_it_applied_and_lets_a_waiting_writer_in_before_the_rest(
    nats_server: NatsServer, bus_prefix: str, database_url: str, database_backend: str
) -> None:
    h = _Held(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    try:
        lead, before, hold, after = await _a_batch_held(h)
        request = asyncio.create_task(_write_effect(h, "writer"))  # a request, on SQLite waiting for the writer lock
        await wait_until(lambda: h.db.writers_waiting() > 0)
        h.gate.set()
        await request
        await _all_applied(h, 12)
        assert await _effects(h) == [lead.id, *(e.id for e in before), hold.id, "writer", *(e.id for e in after)], (
            "the batch committed up to the held event, the waiting writer went next, then the rest of the batch"
        )
    finally:
        h.gate.set()
        await h.stop()


# The writer lock is SQLite's: this runs on SQLite only.
@pytest.mark.parametrize("database_backend", ["sqlite"])
async def test_a_batch_does_not_give_way_to_background_work_waiting_to_write(
    nats_server: NatsServer, bus_prefix: str, database_url: str, database_backend: str
) -> None:
    h = _Held(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    try:
        lead, before, hold, after = await _a_batch_held(h)

        async def relay() -> None:  # background work (another consumer, the outbox relay) writing meanwhile
            background()
            await _write_effect(h, "relay")

        waiting = asyncio.create_task(relay())
        await wait_until(lambda: _background_waiting(h))
        assert h.db.writers_waiting() == 0, "background work waiting is nobody waiting on it"
        h.gate.set()
        await waiting

        await _all_applied(h, 12)
        assert await _effects(h) == [lead.id, *(e.id for e in before), hold.id, *(e.id for e in after), "relay"], (
            "the batch went on to its end in its transaction; the background writer went after it"
        )
    finally:
        h.gate.set()
        await h.stop()


async def _a_batch_held(h: _Held) -> tuple[CloudEvent, list[CloudEvent], CloudEvent, list[CloudEvent]]:
    """Eleven events published, and a consumer holding the fifth in its batch's transaction."""
    lead = h.event(withdrawn())  # an idle consumer takes one message; the batch behind it comes whole
    before = [h.event(withdrawn()) for _ in range(3)]
    hold = h.event(withdrawn(reason=HOLD))
    after = [h.event(withdrawn()) for _ in range(6)]
    for e in [lead, *before, hold, *after]:
        await h.bus.publish_event(e)
    # The budget is spent at once: the batch's transaction ends as soon as a writer waits (how long a transaction
    # runs before giving way is measured in the benches, not here).
    await h.start_consumer(transaction_budget=0.0)
    await wait_until(h.holding.is_set)
    return lead, before, hold, after


async def _write_effect(h: Harness, name: str) -> None:
    async with h.db.session() as session:
        await session.execute(
            insert(effects).values(application_id=name, event_id=name, applied_at=dt.datetime.now(dt.UTC))
        )


async def _all_applied(h: Harness, count: int) -> None:
    async def applied() -> bool:
        return len(await _effects(h)) == count

    await wait_until(applied)


async def _background_waiting(h: Harness) -> bool:
    writer = sqlite.writer_for(str(make_url(h.db.url).database))
    return writer is not None and writer.waiting > 0


class _NeverWaits(Harness):
    """A handler that finds all it needs at hand and writes nothing: it never awaits."""

    def __init__(self, *, nats_url: str, prefix: str, database_url: str) -> None:
        super().__init__(nats_url=nats_url, prefix=prefix, database_url=database_url)
        self.applied: list[str] = []

    async def apply(self, session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:  # type: ignore[override]
        self.applied.append(event.id)


async def _turns_of_the_loop(h: _NeverWaits, *, yield_every: float) -> set[int]:
    """How many events had been applied each time another task got the loop, inside the batch that follows the first
    (lone) message, while a consumer applied 20 events that never wait."""
    seen: list[int] = []
    done = asyncio.Event()

    async def other_task() -> None:
        while not done.is_set():
            seen.append(len(h.applied))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    try:
        events = [h.event(withdrawn()) for _ in range(20)]
        for e in events:
            await h.bus.publish_event(e)
        await h.start_consumer(yield_every=yield_every)
        await wait_until(lambda: len(h.applied) == 20)
    finally:
        done.set()
        await other
    return {n for n in seen if 2 <= n < 20}


async def test_a_batch_whose_handlers_never_wait_still_lets_the_loop_run_between_its_events(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    """Handlers that do their work from what the batch loaded never wait for the database; the batch must still let
    whatever else is ready (a request) run between its events once it has run ``yield_every`` (here at every event),
    or it holds the loop from its first event to its last (and a request waiting to write cannot even say so before
    the batch commits)."""
    h = _NeverWaits(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    try:
        between = await _turns_of_the_loop(h, yield_every=0.0)
        assert len(between) >= 10, f"the loop ran other work after only {sorted(between)} of 20 events"
    finally:
        await h.stop()


async def test_a_batch_keeps_the_loop_between_its_events_until_it_has_run_its_turn(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    """Until it has run ``yield_every`` since the loop last ran anything else, a batch goes on to its next event: it
    holds the writer lock, and every turn of the loop it gave away would be time the lock is held for nothing."""
    h = _NeverWaits(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    try:
        between = await _turns_of_the_loop(h, yield_every=3600.0)
        assert between == set(), f"the batch gave the loop away after {sorted(between)} of its events"
    finally:
        await h.stop()


class _Effect:
    """An ``effects`` row as the ORM writes it: added to the session, written when it flushes."""

    def __init__(self, *, application_id: str, event_id: str, applied_at: dt.datetime) -> None:
        self.application_id = application_id
        self.event_id = event_id
        self.applied_at = applied_at


registry().map_imperatively(_Effect, effects)

ROWS_PER_EVENT = 20


class _AddsRows(Harness):
    """A handler that adds ``ROWS_PER_EVENT`` rows to the session for each event, as eligibility's add a resident's
    determinations and routing's their cases."""

    async def apply(self, session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:  # type: ignore[override]
        now = dt.datetime.now(dt.UTC)
        for n in range(ROWS_PER_EVENT):
            session.add(_Effect(application_id=f"{data.application_id}/{n}", event_id=event.id, applied_at=now))


async def test_a_batch_writes_its_rows_as_they_add_up_not_all_at_its_end(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    """A flush prepares every row it writes before its first statement, with the event loop held: a batch whose events
    add many rows writes them once ``WRITE_EVERY`` are waiting, in the same transaction, rather than all at its
    commit."""
    h = _AddsRows(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    written: list[int] = []  # rows of each flush of the consumer's sessions

    def flushing(session: Session, *_: object) -> None:
        rows = sum(isinstance(row, _Effect) for row in session.new)
        if rows:
            written.append(rows)

    event.listen(Session, "before_flush", flushing)
    try:
        events = [h.event(withdrawn()) for _ in range(40)]
        for e in events:
            await h.bus.publish_event(e)
        await h.start_consumer()
        await _all_applied(h, len(events) * ROWS_PER_EVENT)
        assert sum(written) == len(events) * ROWS_PER_EVENT
        assert max(written) < WRITE_EVERY + ROWS_PER_EVENT, f"a flush wrote {max(written)} rows at once"
        assert len(written) >= 3, "the batch after the first message wrote its rows in pieces"
    finally:
        event.remove(Session, "before_flush", flushing)
        await h.stop()
