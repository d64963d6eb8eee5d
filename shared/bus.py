"""The NATS JetStream bus: connection (with reconnection), stream provisioning and batched publishing.

Consumers live in :mod:`shared.consumer`, the outbox in :mod:`shared.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck, StorageType, StreamConfig

from shared.events import CloudEvent, subject_for
from shared.settings import ServiceSettings
from shared.turns import Turns

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
# The status of the server's answer when no stream takes the subject (as nats-py reads it).
NO_RESPONDERS_STATUS = "503"


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
        self._replies: _Replies | None = None
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
        nc = self.nc
        replies = await self._replies_on(nc)
        batch = replies.begin()
        turns = Turns()
        try:
            for n, message in enumerate(messages):
                await turns.let_others_run()
                headers = (
                    {**message.headers, MSG_ID_HEADER: message.msg_id}
                    if message.headers
                    else {MSG_ID_HEADER: message.msg_id}
                )
                # What JetStream publish_async does, less its per-message machinery (a random token, a future and
                # a callback, a semaphore): the reply subject names the batch and the message's place in it.
                # Published as one plain message each, without waiting: a batch leaves in a few socket writes.
                await nc.publish(message.subject, message.payload, reply=f"{batch.inbox}{n}", headers=headers)
                batch.queued += 1
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            log.warning("publishing stopped early", extra={"error": repr(exc), "queued": batch.queued})
        try:
            if not batch.queued:
                return 0
            if batch.answered < batch.queued:
                batch.waiting = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.done, timeout=timeout)
        finally:
            replies.end(batch)
        acked = 0
        for n in range(batch.queued):
            answer = batch.answers.get(n)
            if not isinstance(answer, PubAck):
                if answer is not None:
                    log.warning("publish not acknowledged", extra={"error": repr(answer)})
                break
            acked += 1
            if acks is not None:
                acks.append(answer)
        return acked

    async def _replies_on(self, nc: NATS) -> _Replies:
        """The subscription that receives JetStream's answers to this connection's publishes (made at its first)."""
        replies = self._replies
        if replies is None or replies.nc is not nc:
            # Kept before the subscription is made, so that a batch beginning meanwhile shares it (its SUB goes to
            # the server before any of their messages).
            replies = self._replies = _Replies(nc, f"{nc.new_inbox()}.")
            try:
                await nc.subscribe(f"{replies.prefix}>", cb=replies.receive)
            except BaseException:
                self._replies = None
                raise
        return replies

    async def publish_event(self, event: CloudEvent) -> None:
        """Publish one event directly and wait for its ack. For tools and department sources; services use the
        outbox, so that the state change and the event commit together."""
        await self.js.publish(
            subject_for(self.prefix, event.event_type), event.to_json(), headers={MSG_ID_HEADER: event.id}
        )


class _Batch:
    """One publish_batch's messages: how many went out, and JetStream's answer to each, by its place."""

    def __init__(self, number: int, inbox: str) -> None:
        self.number = number
        self.inbox = inbox  # the reply subject of message n is inbox + n
        self.queued = 0
        self.answers: dict[int, PubAck | Exception] = {}
        self.answered = 0
        self.waiting = False  # all queued: done is set once each has its answer
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Replies:
    """JetStream's answers to one connection's publishes, on reply subjects under an inbox of its own: one
    subscription for every batch, each reply subject naming its batch and place (``<inbox>.<batch>.<place>``)."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix
        self.batches: dict[int, _Batch] = {}
        self._numbers = 0

    def begin(self) -> _Batch:
        self._numbers += 1
        batch = _Batch(self._numbers, f"{self.prefix}{self._numbers}.")
        self.batches[batch.number] = batch
        return batch

    def end(self, batch: _Batch) -> None:
        """The batch stops listening: an answer that comes later (after its timeout) is dropped."""
        self.batches.pop(batch.number, None)

    async def receive(self, msg: Msg) -> None:
        number, _, place = msg.subject[len(self.prefix) :].partition(".")
        try:
            batch, n = self.batches.get(int(number)), int(place)
        except ValueError:
            return
        if batch is None or n in batch.answers:
            return
        batch.answers[n] = _answer(msg)
        batch.answered += 1
        if batch.waiting and batch.answered >= batch.queued and not batch.done.done():
            batch.done.set_result(None)


def _answer(msg: Msg) -> PubAck | Exception:
    """JetStream's answer to a publish, as nats-py's publish_async reads it: the acknowledgement, or the error."""
    if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
        return nats.js.errors.NoStreamResponseError()
    try:
        response = orjson.loads(msg.data)
        if "error" in response:
            nats.js.errors.APIError.from_error(response["error"])  # raises the error of its code
        ack: PubAck = PubAck.from_response(response)
    except Exception as exc:  # an error, or an answer that is not one: this message is not acknowledged
        return exc
    return ack
