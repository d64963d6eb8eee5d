"""What a service is (its definition) and what a running service holds (its runtime).

Kept apart from the app factory (:mod:`shared.service`) so that the dependencies (:mod:`shared.deps`) can reach the
runtime without importing the factory, and the factory can use the dependencies.

Each service has one typed *context*: the service's own long-lived parts (its settings, clients, timers, domain
services), built by the definition for the app's lifetime and handed to routes through a dependency and to event
handlers when the subscriptions are made. Nothing service-specific is kept anywhere else on the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import APIRouter

from shared.auth import TokenVerifier
from shared.bus import Bus
from shared.consumer import Consumer, Subscription
from shared.consumer_lag import ConsumerLag
from shared.db import Database
from shared.housekeeping import Housekeeping
from shared.idempotency import Idempotency
from shared.observability import LoopMonitor, Metrics, count_statements, time_writer_lock
from shared.outbox import Outbox, OutboxRelay
from shared.reconciler import Reconciler
from shared.settings import ServiceSettings
from shared.tables import PlatformTables
from shared.tracing import instrument_database
from shared.turns import Foreground

log = logging.getLogger(__name__)

C = TypeVar("C")

ContextFactory = Callable[["Runtime"], contextlib.AbstractAsyncContextManager[C]]


@dataclass
class ServiceDefinition(Generic[C]):
    """What makes one service: its routes, its context, and what it consumes."""

    name: str
    title: str
    description: str
    tables: PlatformTables
    routers: Sequence[APIRouter]
    # The service's own parts for the app's lifetime (an HTTP client, an SLA timer, delivery loops); entered once
    # the database and the outbox exist and before any consumer starts, left after the consumers stopped.
    context: ContextFactory[C]
    # The consumers, made with the context (handlers close over what they need of it).
    subscriptions: Callable[[C], Sequence[Subscription]] = lambda context: ()
    version: str = "0.1.0"


def no_context(runtime: Runtime) -> contextlib.AbstractAsyncContextManager[None]:
    """For a service with nothing of its own beside the platform parts."""
    return contextlib.nullcontext()


@dataclass
class Runtime:
    """Everything a running service holds; reached through dependencies, never through globals."""

    name: str
    settings: ServiceSettings
    tables: PlatformTables
    db: Database
    bus: Bus
    outbox: Outbox
    relay: OutboxRelay
    metrics: Metrics
    verifier: TokenVerifier
    idempotency: Idempotency
    housekeeping: Housekeeping
    loop_monitor: LoopMonitor
    foreground: Foreground
    consumers: dict[str, Consumer] = field(default_factory=dict)
    # The service's context (see ServiceDefinition.context); read through the service's typed dependency.
    context: Any = None
    _messaging: asyncio.Task[None] | None = None
    lag: ConsumerLag | None = None
    reconciler: Reconciler | None = None

    @classmethod
    def build(
        cls,
        definition: ServiceDefinition[Any],
        settings: ServiceSettings,
        metrics: Metrics,
        foreground: Foreground | None = None,
    ) -> Runtime:
        """``foreground``: the requests the app's middleware counts, which the consumers give way to (none
        counted when the runtime serves no HTTP)."""
        db = Database(
            settings.database_url,
            echo=settings.database_echo,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        instrument_database(db.engine, definition.name)
        if settings.database_count_statements:
            count_statements(db.engine, metrics)
            if db.dialect == "sqlite" and db.read_engine is not db.engine:
                count_statements(db.read_engine, metrics)  # SQLite's read connections: an engine of their own
        if settings.database_time_writer_lock and (database := db.sqlite_file()) is not None:
            time_writer_lock(database, metrics)
        bus = Bus(settings, name=definition.name)
        relay = OutboxRelay(
            db,
            bus,
            definition.tables,
            metrics,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval_seconds,
            retention=dt.timedelta(hours=settings.outbox_retention_hours),
        )
        return cls(
            name=definition.name,
            settings=settings,
            tables=definition.tables,
            db=db,
            bus=bus,
            outbox=Outbox(definition.tables, prefix=settings.bus_prefix, source=f"/onestop/{definition.name}"),
            relay=relay,
            metrics=metrics,
            verifier=TokenVerifier.from_settings(settings),
            idempotency=Idempotency(definition.tables),
            loop_monitor=LoopMonitor(metrics),
            foreground=foreground or Foreground(patience=settings.consumer_patience_ms / 1000),
            housekeeping=Housekeeping(
                db,
                definition.tables,
                inbox_retention=dt.timedelta(hours=settings.inbox_retention_hours),
                idempotency_retention=dt.timedelta(hours=settings.idempotency_retention_hours),
                interval=settings.housekeeping_interval_seconds,
            ),
        )

    @contextlib.asynccontextmanager
    async def running(self, definition: ServiceDefinition[Any]) -> AsyncIterator[None]:
        """The service's lifetime: its context, then messaging; on the way out consumers stop first (their last
        batch commits), then the context, then the relay, NATS and the database."""
        try:
            async with definition.context(self) as context:
                self.context = context
                # From here on (not while the context loads, say, a catalogue): what serving costs the loop.
                self.loop_monitor.start()
                if self.settings.process_role != "api":  # an api process leaves them to its worker
                    self.add_consumers(definition.subscriptions(context))
                self.start_messaging()
                self.housekeeping.start()
                self.lag = ConsumerLag(self.bus, self.consumers.values(), self.metrics,
                                       interval=self.settings.consumer_lag_interval_seconds)  # fmt: skip
                self.lag.start()
                try:
                    yield
                finally:
                    await self.stop_consuming()
        finally:
            await self.close()

    def add_consumers(self, subscriptions: Sequence[Subscription]) -> None:
        s = self.settings
        slots = asyncio.Semaphore(s.consumer_parallel_batches)
        for sub in subscriptions:
            self.consumers[sub.name] = Consumer(
                service=self.name,
                subscription=sub,
                bus=self.bus,
                db=self.db,
                tables=self.tables,
                metrics=self.metrics,
                outbox_source=f"/onestop/{self.name}",
                batch_size=s.consumer_batch_size,
                max_deliver=s.consumer_max_deliver,
                ack_wait=s.consumer_ack_wait_seconds,
                max_ack_pending=s.consumer_max_ack_pending,
                transaction_budget=s.consumer_transaction_budget_ms / 1000,
                slots=slots,
                foreground=self.foreground,
            )

    def start_messaging(self) -> None:
        self._messaging = asyncio.create_task(self._start_messaging(), name=f"{self.name}-messaging")

    async def _start_messaging(self) -> None:
        """Connect (waiting for NATS if need be), provision, then relay and consume. HTTP serves meanwhile: writes
        land in the outbox and go out once NATS is there."""
        await self.bus.connect()
        while True:
            try:
                await self.bus.ensure_stream()
                break
            except Exception as exc:  # JetStream may still be starting
                log.warning("stream not ready; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
        await self.relay.start()
        self.reconciler = Reconciler(
            self.relay,
            grace=dt.timedelta(seconds=self.settings.outbox_reconcile_grace_seconds),
            interval=self.settings.outbox_reconcile_interval_seconds,
        )
        self.reconciler.start()
        for consumer in self.consumers.values():
            while True:
                try:
                    await consumer.start()
                    break
                except Exception as exc:
                    log.warning(
                        "consumer not ready; retrying", extra={"consumer": consumer.durable, "error": repr(exc)}
                    )
                    await asyncio.sleep(0.5)

    async def stop_consuming(self) -> None:
        if self.lag is not None:
            await self.lag.stop()
        await self.housekeeping.stop()
        if self._messaging is not None and not self._messaging.done():
            self._messaging.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._messaging
        for consumer in self.consumers.values():
            await consumer.stop()

    async def close(self) -> None:
        await self.loop_monitor.stop()
        if self.reconciler is not None:
            await self.reconciler.stop()
        await self.relay.stop()
        await self.bus.close()
        await self.db.dispose()

    @property
    def messaging_ready(self) -> bool:
        return (
            self._messaging is not None
            and self._messaging.done()
            and not self._messaging.cancelled()
            and (self._messaging.exception() is None)
        )
