"""Watch what the platform publishes: every event on a test's stream, read back from JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.msg import Msg

from shared.bus import stream_name
from shared.events import CloudEvent


class EventLog:
    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self.raw: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()

    async def _on_message(self, msg: Msg) -> None:
        self.raw.append((msg.subject, msg.data))
        try:
            event = CloudEvent.from_json(msg.data)
        except Exception:
            event = None
        async with self._changed:
            if event is not None:
                self.events.append(event)
            self._changed.notify_all()

    def of_type(self, event_type: str) -> list[CloudEvent]:
        return [e for e in self.events if e.event_type == event_type]

    async def wait_for(
        self, event_type: str, predicate: Callable[[CloudEvent], bool] = lambda e: True, *, count: int = 1,
        timeout: float = 20.0,
    ) -> list[CloudEvent]:  # fmt: skip
        """Wait until ``count`` events of the type match; returns them (fails the test on timeout)."""

        def matching() -> list[CloudEvent]:
            return [e for e in self.of_type(event_type) if predicate(e)]

        async def wait() -> list[CloudEvent]:
            async with self._changed:
                await self._changed.wait_for(lambda: len(matching()) >= count)
            return matching()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            seen = sorted({e.event_type for e in self.events})
            raise AssertionError(f"{count} x {event_type} not seen in {timeout}s; saw types {seen}") from None


@asynccontextmanager
async def event_log(nats_url: str, prefix: str, **connect: Any) -> AsyncIterator[EventLog]:
    """Every event stored on ``<prefix>.>``, from the start of the stream (an ordered, ephemeral consumer)."""
    log = EventLog()
    nc = await nats.connect(nats_url, **connect)
    try:
        js = nc.jetstream()
        stream = stream_name(prefix)
        for _ in range(100):  # the stream appears once a service has started
            try:
                await js.stream_info(stream)
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.05)
        sub = await js.subscribe(f"{prefix}.>", stream=stream, ordered_consumer=True, cb=log._on_message)
        yield log
        await sub.unsubscribe()
    finally:
        await nc.close()
