"""Each consumer's backlog as JetStream counts it, read every few seconds into ``onestop_consumer_pending``: events not
yet delivered plus delivered but not acknowledged. It is what an operator alerts on (deploy/prometheus/alerts.yml):
a number that grows says a consumer falls behind, one that stays above zero with nothing handled says it is stuck.
Every replica reports the same figure (the consumer is shared); the rules take the maximum."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
import nats.js.errors

from shared.bus import Bus
from shared.consumer import Consumer
from shared.observability import Metrics

log = logging.getLogger(__name__)


class ConsumerLag:
    def __init__(self, bus: Bus, consumers: Iterable[Consumer], metrics: Metrics, *, interval: float) -> None:
        self.bus = bus
        self.consumers = list(consumers)
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.consumers:
            self._task = asyncio.create_task(self._run(), name="consumer-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def read_once(self) -> None:
        for consumer in self.consumers:
            info = await self.bus.js.consumer_info(self.bus.stream, consumer.durable)
            pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            self.metrics.consumer_pending.labels(consumer=consumer.durable).set(pending)

    async def _run(self) -> None:
        while True:
            if self.bus.connected and self.bus.ready.is_set():
                try:
                    await self.read_once()
                except (nats.errors.Error, nats.js.errors.Error, OSError, RuntimeError) as exc:
                    log.debug("consumer lag not read", extra={"error": repr(exc)})
            await asyncio.sleep(self.interval)
