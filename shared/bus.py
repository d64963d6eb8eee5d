"""The NATS JetStream bus: connection (with reconnection), stream provisioning and batched publishing.

Consumers live in :mod:`shared.consumer`, the outbox in :mod:`shared.outbox`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from shared.events import CloudEvent, subject_for
from shared.settings import ServiceSettings
from shared.turns import Turns

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class OutgoingMessage:
    subject: str
    msg_id: str
    payload: bytes
    # Further headers (the W3C ``traceparent`` of the publish span).
    headers: dict[str, str] | None = None


def stream_name(prefix: str) -> str:
    return prefix.upper().replace("-", "_")


class Bus:
    """One service's connection to NATS JetStream."""

    def __init__(self, settings: ServiceSettings, *, name: str) -> None:
        self.settings = settings
        self.name = name
        self.prefix = settings.bus_prefix
        self.stream = stream_name(settings.bus_prefix)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------------------------------ connection

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("the bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the bus is not connected")
        return self._js

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self, *, attempts: int | None = None) -> None:
        """Connect, retrying with backoff (forever unless ``attempts`` is given): a service may start before NATS."""
        delay, tried = 0.2, 0
        self._closing = False
        while True:
            tried += 1
            try:
                self._nc = await nats.connect(
                    # A cluster is given as a comma-separated list; the client fails over between its nodes.
                    [url.strip() for url in self.settings.nats_url.split(",") if url.strip()],
                    name=self.name,
                    user=self.settings.nats_user,
                    password=self.settings.nats_password.get_secret_value() if self.settings.nats_password else None,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    drain_timeout=5,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                if attempts is not None and tried >= attempts:
                    raise
                log.warning("cannot reach NATS yet, retrying", extra={"error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._js = self._nc.jetstream(timeout=5)
        log.info("connected to NATS", extra={"url": self._nc.connected_url.netloc if self._nc.connected_url else None})

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error", extra={"error": repr(exc)})

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    async def close(self) -> None:
        """Drain: let in-flight publishes and acks reach the server, then close."""
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        self.ready.clear()
        if nc is None or nc.is_closed:
            return
        try:
            await nc.drain()  # bounded by the connection's drain_timeout
        except (TimeoutError, nats.errors.Error, OSError):
            await nc.close()

    # ------------------------------------------------------------------------------------------ the stream

    async def ensure_stream(self) -> None:
        """Create the stream, or bring an existing one's editable settings in line with ours."""
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            storage=StorageType.FILE,
            num_replicas=self.settings.stream_replicas,
            duplicate_window=self.settings.stream_duplicate_window_seconds,
            # In seconds here (nats-py sends nanoseconds); on update too, so an existing stream gets a new age.
            max_age=self.settings.stream_max_age_hours * 3600,
        )
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(config)
                log.info("created stream", extra={"stream": self.stream})
            except nats.js.errors.BadRequestError:
                pass  # another service created it between our look and our create
        else:
            await self.js.update_stream(config)
        self.ready.set()

    async def ping(self, timeout: float = 2.0) -> bool:
        if not self.connected:
            return False
        try:
            await asyncio.wait_for(self.js.stream_info(self.stream), timeout=timeout)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError):
            return False
        return True

    # ------------------------------------------------------------------------------------------ publishing

    async def publish_batch(
        self, messages: Iterable[OutgoingMessage], *, timeout: float = 5.0, acks: list[PubAck] | None = None
    ) -> int:
        """Publish in order without waiting for each ack, then gather the acks. ``messages`` may be made as they go
        out (a generator); a long batch lets the loop run what else is ready every few milliseconds (shared.turns).

        Returns how many messages *from the start* JetStream acknowledged: the caller marks exactly those as sent,
        so a failure in the middle never lets a later message count as delivered before an earlier one. Their
        acknowledgements (the stream sequence, whether JetStream took it for a duplicate) go into ``acks`` if given.
        """
        futures: list[asyncio.Future[Any]] = []
        turns = Turns()
        try:
            for message in messages:
                await turns.let_others_run()
                # No wait_stall: with a timeout, nats-py wraps every publish in a task and yields to the loop, so
                # each message would go out in its own socket write; without it a batch leaves in a few writes.
                futures.append(
                    await self.js.publish_async(
                        message.subject,
                        message.payload,
                        headers={**(message.headers or {}), MSG_ID_HEADER: message.msg_id},
                    )
                )
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            log.warning("publishing stopped early", extra={"error": repr(exc), "queued": len(futures)})
        if not futures:
            return 0
        done, pending = await asyncio.wait(futures, timeout=timeout)
        for future in pending:
            future.cancel()
        acked = 0
        for future in futures:
            if future in done and not future.cancelled() and future.exception() is None:
                acked += 1
                if acks is not None:
                    acks.append(future.result())
            else:
                break
        for future in done:
            if not future.cancelled() and future.exception() is not None:
                log.warning("publish not acknowledged", extra={"error": repr(future.exception())})
                break
        return acked

    async def publish_event(self, event: CloudEvent) -> None:
        """Publish one event directly and wait for its ack. For tools and department sources; services use the
        outbox, so that the state change and the event commit together."""
        await self.js.publish(
            subject_for(self.prefix, event.event_type), event.to_json(), headers={MSG_ID_HEADER: event.id}
        )
