"""A minimal service built from the real shared components, for testing the bus: an outbox that producers write to,
the relay, and a consumer whose effect is a row in ``effects`` (so an effect applied twice shows as two rows).

It runs in the test's process, or as a separate process (``python -m tests.support.bus_harness``) that the test
kills at an exact point to show what survives a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.bus import Bus, OutgoingMessage
from shared.consumer import TRANSACTION_BUDGET, Consumer, Finish, Load, Subscription, on
from shared.db import Database
from shared.events import ApplicationWithdrawn, CloudEvent, new_event
from shared.observability import Metrics
from shared.outbox import Outbox, OutboxRelay
from shared.settings import ServiceSettings
from shared.tables import platform_tables
from shared.turns import YIELD_EVERY

metadata = MetaData()
tables = platform_tables(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("application_id", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

EVENT_TYPE = "application.withdrawn"
POISON = "poison"


class WatchedBus(Bus):
    """The real bus; ``before_publish`` hooks see each batch just before it goes out (how the relay publishes)."""

    def __init__(self, settings: ServiceSettings, *, name: str) -> None:
        super().__init__(settings, name=name)
        self.before_publish: list[Callable[[Sequence[OutgoingMessage]], Awaitable[None]]] = []

    async def publish_batch(
        self, messages: Iterable[OutgoingMessage], *, timeout: float = 5.0, acks: list[Any] | None = None
    ) -> int:
        batch = list(messages)  # the relay makes them as they go out; a hook sees the whole batch first
        for hook in self.before_publish:
            await hook(batch)
        return await super().publish_batch(batch, timeout=timeout, acks=acks)


class CountingRelay(OutboxRelay):
    """The real relay, counting its passes, so that a test waits for "this relay has polled again" rather than
    sleeping, and calling ``after_pass`` hooks: leadership is only taken or lost during a pass, so a hook sees every
    state of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = 0  # passes begun
        self.passes = 0  # passes finished (one at a time, so pass number ``started`` is running or done)
        self.after_pass: list[Callable[[CountingRelay], None]] = []

    async def relay_once(self) -> int:
        self.started += 1
        try:
            return await super().relay_once()
        finally:
            self.passes += 1
            for hook in self.after_pass:
                hook(self)


def withdrawn(reason: str | None = None) -> ApplicationWithdrawn:
    return ApplicationWithdrawn(
        application_id=uuid.uuid4(), resident_id=uuid.uuid4(), reason=reason, withdrawn_at=dt.datetime.now(dt.UTC)
    )


class Harness:
    def __init__(
        self,
        *,
        nats_url: str,
        prefix: str,
        database_url: str,
        name: str = "harness",
        max_deliver: int = 3,
        ack_wait: float = 2.0,
        batch_size: int = 100,
        concurrency: int = 1,
        outbox_batch_size: int = 1000,
    ) -> None:
        self.settings = ServiceSettings(
            nats_url=nats_url,
            bus_prefix=prefix,
            database_url=database_url,
            consumer_max_deliver=max_deliver,
            consumer_ack_wait_seconds=ack_wait,
            consumer_batch_size=batch_size,
            outbox_batch_size=outbox_batch_size,
            outbox_poll_interval_seconds=0.1,
        )
        self.name = name
        self.concurrency = concurrency
        self.metrics = Metrics(name)
        self.db = Database(database_url)
        self.bus = WatchedBus(self.settings, name=name)
        self.outbox = Outbox(tables, prefix=prefix, source=f"/test/{name}")
        self.relay = CountingRelay(
            self.db, self.bus, tables, self.metrics, batch_size=outbox_batch_size, poll_interval=0.1
        )
        self.consumer: Consumer | None = None

    async def setup(self) -> Harness:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await self.bus.connect(attempts=20)
        await self.bus.ensure_stream()
        return self

    async def start_relay(self) -> None:
        await self.relay.start()

    async def start_consumer(
        self, *, transaction_budget: float = TRANSACTION_BUDGET, yield_every: float = YIELD_EVERY
    ) -> Consumer:
        self.consumer = Consumer(
            service=self.name,
            subscription=Subscription(
                name="effects",
                handlers=[on(ApplicationWithdrawn, self.apply)],
                load=self.load,
                finish=self.finish,
                concurrency=self.concurrency,
                retry_delays=(0.05, 0.1),
            ),
            bus=self.bus,
            db=self.db,
            tables=tables,
            metrics=self.metrics,
            outbox_source=f"/test/{self.name}",
            batch_size=self.settings.consumer_batch_size,
            max_deliver=self.settings.consumer_max_deliver,
            ack_wait=self.settings.consumer_ack_wait_seconds,
            max_ack_pending=self.settings.consumer_max_ack_pending,
            transaction_budget=transaction_budget,
            yield_every=yield_every,
        )
        await self.consumer.start()
        return self.consumer

    # What the consumer's transactions do once before and after their events (Subscription.load, finish); none by
    # default.
    load: Load | None = None
    finish: Finish | None = None

    @staticmethod
    async def apply(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        if data.reason == POISON:
            raise RuntimeError("this event always fails")
        await session.execute(
            insert(effects).values(
                application_id=str(data.application_id), event_id=event.id, applied_at=dt.datetime.now(dt.UTC)
            )
        )

    async def emit(self, items: Sequence[ApplicationWithdrawn]) -> list[CloudEvent]:
        """Write events through the outbox, in one transaction."""
        async with self.db.session() as session:
            return [await self.outbox.emit(session, item) for item in items]

    def event(self, data: ApplicationWithdrawn) -> CloudEvent:
        return new_event(data, source=f"/test/{self.name}")

    async def effect_counts(self) -> dict[str, int]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(effects.c.application_id, func.count()).group_by(effects.c.application_id)
            )
            return {r[0]: r[1] for r in rows}

    async def scalar(self, query: Any) -> Any:
        async with self.db.session() as session:
            return await session.scalar(query)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.relay.stop()
        await self.bus.close()
        await self.db.dispose()


# ---------------------------------------------------------------------------------------------- crash runs


def _exit_on_sql(database: Database, starts_with: str) -> None:
    """Kill the process (no cleanup at all) just before it runs a statement starting with ``starts_with``, in a
    write or a read-only unit of work (the relay reads the outbox in one)."""

    def _die(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(starts_with):
            os._exit(137)

    for engine in {database.engine.sync_engine, database.read_engine.sync_engine}:
        event.listen(engine, "before_cursor_execute", _die)


async def _main(args: argparse.Namespace) -> None:
    harness = await Harness(
        nats_url=args.nats_url, prefix=args.prefix, database_url=args.database_url, ack_wait=args.ack_wait
    ).setup()
    if args.mode == "consume-then-die-before-ack":
        # The first commit of the consumer is its first batch's effects and inbox rows: die right after it.
        event.listen(Session, "after_commit", lambda session: os._exit(137))
        await harness.start_consumer()
    elif args.mode == "emit-then-die-before-publish":
        await harness.emit([withdrawn() for _ in range(args.count)])
        _exit_on_sql(harness.db, "SELECT OUTBOX")  # the relay's read: the events are committed, none published
        await harness.start_relay()
    elif args.mode == "emit-then-die-before-mark":
        await harness.emit([withdrawn() for _ in range(args.count)])
        _exit_on_sql(harness.db, "UPDATE OUTBOX")  # published and acknowledged, not yet marked sent
        await harness.start_relay()
    await asyncio.sleep(60)
    raise SystemExit("the crash point was never reached")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    asyncio.run(_main(parser.parse_args()))
