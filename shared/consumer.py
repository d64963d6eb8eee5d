"""Durable JetStream pull consumers whose effects happen exactly once.

Each event's id is recorded in the inbox table in the same transaction as the handler's effects; the message is
acknowledged only after that transaction commits. A redelivery (lost ack, crash, reconnect) finds the id in the
inbox and is acknowledged without running the handler again.

Each subscription declares the handler of every event type it takes (:func:`on`); the :class:`Dispatch` built from
them derives the filter subjects, validates each event once against its catalogue model and hands the handler the
typed data. An event no handler is declared for is dead-lettered with the reason, in every service alike.

Messages are taken in batches and applied in one transaction — their inbox rows and their effects together (one
commit for many events is what lets a Python consumer apply thousands of events a second on SQLite). When another
write transaction waits to begin (an API request, on SQLite, where the process's writes go one at a time) or the
service is serving requests, the batch's transaction ends once it has run for ``transaction_budget`` seconds and the
rest of the batch goes on in the next, so the request waits for one short transaction at most. Before each
transaction the consumer yields to the event loop and gives way to the requests being served (``foreground``: until
they end, or its patience runs out), and a service applies at most ``slots`` batches at once.

What the handlers leave to the end of a transaction (``Subscription.finish``: work that would otherwise be redone for
every event of a batch) runs after its events and before its inbox rows and commit, and fails with it.

If anything in a transaction fails, it is rolled back and the same events are applied again in one transaction with
a savepoint each: the events that fail there are rolled back alone and the rest commits. Each event that failed is
then retried alone, in its own transaction, with backoff; after ``max_deliver`` attempts it is recorded as a dead
letter and published to the dead-letter subject (both through the outbox, in one transaction) while the events
behind it carry on. Should even the transaction with savepoints fail (at its commit), every event is retried alone.

After a crash, what the dead process had taken and not acknowledged comes back once its ack wait runs out; a
restarted consumer takes nothing before that, so that nothing newer overtakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import Bus
from shared.db import Database, background, unwritten_rows
from shared.events import CloudEvent, EventData, UnknownEventType, dead_letter_subject, spec_for, subject_for
from shared.observability import Metrics, event_id_var
from shared.outbox import PENDING_KEY
from shared.tables import PlatformTables
from shared.tracing import TRACEPARENT, consume_span
from shared.turns import YIELD_EVERY, Foreground, Turns

log = logging.getLogger(__name__)

E = TypeVar("E", bound=EventData)

# An event handler: the consumer's transaction, the envelope, and the event's data validated against its model.
Apply = Callable[[AsyncSession, CloudEvent, E], Awaitable[None]]
# Work done for a batch before its write transaction, in a read-only unit of work (see Subscription.prepare).
Prepare = Callable[[AsyncSession, Sequence[CloudEvent]], Awaitable[None]]
# Work done once in each transaction of a consumer, after its events (see Subscription.finish).
Finish = Callable[[AsyncSession], Awaitable[None]]
# Rows a transaction's events will look up, loaded at its start (see Subscription.load).
Load = Callable[[AsyncSession, Sequence[CloudEvent]], Awaitable[None]]

# Errors no retry can cure: the event itself does not fit its schema. They go to the dead letters at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValidationError, UnknownEventType)


# JetStream's answer to a change of where an existing consumer starts ("deliver policy can not be updated").
DELIVER_POLICY_FIXED = 10012

# How long a busy consumer waits for a batch to fill before handling what it has.
BUSY_WAIT = 0.05

# How long one transaction of a batch may run, when other writers wait, before it commits and the rest of the batch
# goes on in the next.
TRANSACTION_BUDGET = 0.02

# A batch's transaction writes what its events added once this many rows are waiting, not all at its end: a flush
# prepares every row it writes (the ORM's bookkeeping, each value converted) before its first statement, with the loop
# held. A batch of eligibility's or routing's events adds a thousand rows and more; prepared together they held the
# loop for 50-60 ms (stack samples under load). Rows of one table still go in multi-row statements of their own.
WRITE_EVERY = 256


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help; the event goes straight to the dead letters."""


class UnhandledEventType(PermanentError):
    """An event of a type the consumer declares no handler for (it matched a subject but carries another type)."""


@dataclass(frozen=True)
class EventHandler(Generic[E]):
    """One entry of a consumer's mapping: the event model and what applies it."""

    model: type[E]
    apply: Apply[E]


def on(model: type[E], apply: Apply[E]) -> EventHandler[E]:
    """``on(CaseRouted, record_case)``: the handler for one event type (type-checked against the model)."""
    event_type = getattr(model, "event_type", None)
    if event_type is None or spec_for(event_type).data_model is not model:
        raise TypeError(f"{model.__name__} is not the catalogue model of an event type")
    return EventHandler(model, apply)


class Dispatch:
    """A consumer's handlers by event type. It validates each event once, against its catalogue model, and refuses
    a type it has no handler for (dead-lettered with the reason): one policy, the same in every service."""

    def __init__(self, consumer: str, handlers: Sequence[EventHandler[Any]]) -> None:
        self.consumer = consumer
        self.handlers: dict[str, EventHandler[Any]] = {}
        for handler in handlers:
            if handler.model.event_type in self.handlers:
                raise ValueError(f"{consumer}: two handlers for {handler.model.event_type}")
            self.handlers[handler.model.event_type] = handler

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self.handlers)

    async def __call__(self, session: AsyncSession, event: CloudEvent) -> None:
        handler = self.handlers.get(event.event_type)
        if handler is None:
            raise UnhandledEventType(f"{self.consumer} has no handler for {event.type}")
        await handler.apply(session, event, handler.model.model_validate(event.data))


@dataclass(frozen=True)
class Subscription:
    """What a service consumes and how: the handler of each event type it takes. The filter subjects follow from the
    handlers. Settings give the defaults for anything left as None."""

    name: str
    handlers: Sequence[EventHandler[Any]]
    concurrency: int = 1
    batch_size: int | None = None
    max_deliver: int | None = None
    ack_wait: float | None = None
    max_ack_pending: int | None = None
    retry_delays: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    # Computation the handlers would otherwise do while holding the database's writer lock (evaluating rules), done
    # ahead for a batch in a read-only unit of work: it writes nothing and leaves results the handlers use only if
    # their inputs are still the same. A failure here only loses the head start.
    prepare: Prepare | None = None
    # What the handlers leave to the end of the transaction instead of redoing it for every event of a batch (intake
    # derives an application's status once from all the batch changed of it). Run in every transaction that applied
    # events, after them (outside their savepoints) and before the inbox rows and the commit: it fails with the
    # transaction, whose events are then applied apart and, failing alone, retried and dead-lettered as ever.
    finish: Finish | None = None
    # What the handlers of a transaction's events will look up, loaded at its start in a query per kind (and what is
    # not there noted as such, shared.db.note_absent), instead of a lookup per event. In the transaction, outside any
    # savepoint; it fails with it.
    load: Load | None = None

    def __post_init__(self) -> None:
        Dispatch(self.name, self.handlers)  # refuses two handlers for one type when the service is defined

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(h.model.event_type for h in self.handlers)


@dataclass
class _Item:
    msg: Msg
    event: CloudEvent | None
    error: str | None = None
    deliveries: int = field(default=1)


class DeadLetterNotFound(LookupError):
    pass


class Consumer:
    """Runs one :class:`Subscription` for one service."""

    def __init__(
        self,
        *,
        service: str,
        subscription: Subscription,
        bus: Bus,
        db: Database,
        tables: PlatformTables,
        metrics: Metrics,
        outbox_source: str,
        batch_size: int = 100,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
        transaction_budget: float = TRANSACTION_BUDGET,
        yield_every: float = YIELD_EVERY,
        write_every: int = WRITE_EVERY,
        slots: asyncio.Semaphore | None = None,
        foreground: Foreground | None = None,
    ) -> None:
        self.service = service
        self.sub = subscription
        self.bus = bus
        self.db = db
        self.tables = tables
        self.metrics = metrics
        self.outbox_source = outbox_source
        self.durable = f"{service}-{subscription.name}"
        self.dispatch = Dispatch(self.durable, subscription.handlers)
        self.batch_size = subscription.batch_size or batch_size
        self.max_deliver = subscription.max_deliver or max_deliver
        self.ack_wait = subscription.ack_wait or ack_wait
        self.max_ack_pending = subscription.max_ack_pending or max_ack_pending
        self.transaction_budget = transaction_budget
        self.yield_every = yield_every
        self.write_every = write_every
        # How long a busy fetch waits for the rest of what the server is sending: the fetch returns as soon as the
        # server says it has no more, so this only bounds a slow arrival (a loaded machine) before a partial batch.
        self.busy_wait = BUSY_WAIT
        # Shared by the service's consumers: how many batches are being applied at once (the event loop serves HTTP
        # too).
        self.slots = slots or asyncio.Semaphore(1)
        # The service's requests, which its batches give way to (none counted: never waits).
        self.foreground = foreground or Foreground(patience=0)
        self._workers: list[asyncio.Task[None]] = []
        self._fetching: set[asyncio.Future[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._resume_at: float | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # Two deliveries more than our own limit: if recording the dead letter itself fails on the last
            # attempt, the server still hands the event back instead of dropping it silently.
            max_deliver=self.max_deliver + 2,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=[subject_for(self.bus.prefix, t) for t in self.dispatch.event_types],
            max_waiting=max(512, self.sub.concurrency * 4),
        )

    async def start(self) -> None:
        info = await self._provision()
        self._stopping = False
        self._stopped.clear()
        # Messages a previous process took and never acknowledged (it was killed) come back only once their ack wait
        # runs out; whatever is newer would be taken first, and an application's events applied out of order (a
        # determination before its submission). Until then this process takes nothing: the server hands redeliveries
        # out before new messages, so the order holds. (A replica starting beside live ones merely starts later.)
        held = getattr(info, "num_ack_pending", 0) or 0
        self._resume_at = asyncio.get_running_loop().time() + self.ack_wait + 1.0 if held else None
        if held:
            log.info(
                "messages a previous process held come back first",
                extra={"consumer": self.durable, "held": held, "in_s": self.ack_wait},
            )
        for n in range(self.sub.concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"{self.durable}-{n}"))
        log.info("consumer started", extra={"consumer": self.durable, "workers": self.sub.concurrency})

    async def _provision(self) -> ConsumerInfo:
        """Create the durable consumer, or bring an existing one's editable settings in line with ours. Where it
        starts is not editable: one an operator rewound (``onestop restore``) keeps its start and takes the rest."""
        config = self.consumer_config()
        try:
            return await self.bus.js.add_consumer(self.bus.stream, config=config)
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) != DELIVER_POLICY_FIXED:
                raise
            current = (await self.bus.js.consumer_info(self.bus.stream, self.durable)).config
            config.deliver_policy = current.deliver_policy
            config.opt_start_seq, config.opt_start_time = current.opt_start_seq, current.opt_start_time
            info = await self.bus.js.add_consumer(self.bus.stream, config=config)
            log.info("consumer keeps the start it was given", extra={"consumer": self.durable,
                     "deliver_policy": str(current.deliver_policy), "start_seq": current.opt_start_seq})  # fmt: skip
            return info

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking new messages; let a batch being handled finish (its acks then reach the server)."""
        self._stopping = True
        self._stopped.set()
        for task in list(self._fetching):
            task.cancel()
        if self._workers:
            _done, pending = await asyncio.wait(self._workers, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._workers.clear()

    async def _work(self) -> None:
        background()
        psub: Any = None
        delay = 0.2
        busy = False
        if self._resume_at is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopped.wait(), timeout=max(0.0, self._resume_at - asyncio.get_running_loop().time())
                )
        try:
            while not self._stopping:
                try:
                    if psub is None:
                        psub = await self.bus.js.pull_subscribe_bind(self.durable, stream=self.bus.stream)
                    # nats-py's batch fetch waits until the batch is full or the request expires. Idle, we wait for
                    # one message (handled at once); busy, we take whole batches but wait at most busy_wait for one
                    # to fill, so a quiet stream is never held back and a loaded one is handled in bulk.
                    if busy:
                        fetch = asyncio.ensure_future(psub.fetch(self.batch_size, timeout=self.busy_wait))
                    else:
                        fetch = asyncio.ensure_future(psub.fetch(1, timeout=5))
                    self._fetching.add(fetch)
                    try:
                        msgs = await fetch
                    finally:
                        self._fetching.discard(fetch)
                except asyncio.CancelledError:
                    if self._stopping:
                        return
                    raise
                except TimeoutError:
                    # nats.errors.TimeoutError, or asyncio's own when the server's "no messages" answer to an idle
                    # fetch arrives just after the client's deadline (nats-py re-raises that one as it is): nothing
                    # to handle, not a failure to wait and back off for.
                    busy = False
                    continue
                except (nats.errors.Error, nats.js.errors.Error, OSError, RuntimeError) as exc:
                    # NATS restarting or unreachable: the client reconnects by itself; we wait and fetch again.
                    if self._stopping:
                        return
                    log.warning("fetch failed; retrying", extra={"consumer": self.durable, "error": repr(exc)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    if isinstance(exc, nats.js.errors.NotFoundError):
                        with contextlib.suppress(Exception):
                            await self.bus.js.add_consumer(self.bus.stream, config=self.consumer_config())
                    continue
                delay = 0.2
                busy = True
                try:
                    await self.handle_batch(msgs)
                except Exception:
                    # Nothing was acknowledged, so everything in the batch comes back after ack_wait.
                    log.exception("batch failed outside any handler", extra={"consumer": self.durable})
        finally:
            # A cancelled fetch leaves status messages in the subscription's queue that nobody will take; without
            # this, draining the connection on shutdown would wait for them for ever.
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()

    # ------------------------------------------------------------------------------------------ handling

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        items: list[_Item] = []
        for msg in msgs:
            deliveries = _deliveries(msg)
            try:
                items.append(_Item(msg, CloudEvent.from_json(msg.data), deliveries=deliveries))
            except (ValidationError, orjson.JSONDecodeError) as exc:
                items.append(_Item(msg, None, f"undecodable event: {exc}", deliveries))
        for item in items:
            if item.event is None:
                await self._dead_letter(item, permanent=True)
        rest = [i for i in items if i.event is not None]
        async with self.slots:
            if self.sub.prepare is not None and rest:
                await self.foreground.give_way()
                await self._prepare(self.sub.prepare, rest)
            while rest:
                # Before each transaction, whatever else is waiting gets the event loop, and requests being served
                # are let finish first (see shared.turns.Foreground).
                await self.foreground.give_way()
                if len(rest) == 1:
                    await self._handle_one(rest[0])
                    return
                applied: list[_Item] = []
                try:
                    await self._apply_within_budget(rest, applied)
                except Exception as exc:
                    # Again, each event in a savepoint: the events tried so far at least, and on.
                    log.info(
                        "batch failed; applying its events apart", extra={"consumer": self.durable, "error": repr(exc)}
                    )
                    taken = await self._apply_apart(rest, at_least=len(applied) + 1)
                    rest = rest[taken:]
                else:
                    await self._ack_all(applied)
                    rest = rest[len(applied) :]

    async def _prepare(self, prepare: Prepare, items: Sequence[_Item]) -> None:
        try:
            async with self.db.read_session() as session:
                await prepare(session, [_event(i) for i in items])
        except Exception as exc:
            log.warning(
                "preparing a batch failed; it is applied without", extra={"consumer": self.durable, "error": repr(exc)}
            )

    async def _apply_within_budget(self, items: Sequence[_Item], applied: list[_Item]) -> None:
        """Apply events in order in one transaction, until it has run for the budget while other writers wait; each
        one applied (or found in the inbox) is appended to ``applied``. Raises, and nothing is written, when any of
        them fails."""
        started = time.perf_counter()
        handled: list[str] = []
        async with self.db.session() as session:
            seen = await self._seen(session, items)
            await self._load(session, [_event(i) for i in items if _event(i).id not in seen])
            turns = Turns(self.yield_every)
            for item in items:
                event = _event(item)
                if event.id not in seen:
                    seen.add(event.id)  # the same id twice in one batch runs once
                    await self._run(session, item)
                    handled.append(event.id)
                    if unwritten_rows(session) >= self.write_every:
                        await session.flush()
                applied.append(item)
                await turns.let_others_run()
                if self._spent(started):
                    break
            await self._finish(session, handled)
            await self._record(session, handled)
        self._count(handled, len(applied))

    async def _apply_apart(self, items: Sequence[_Item], *, at_least: int) -> int:
        """Apply events in order in one transaction with a savepoint each, so that those that fail are rolled back
        alone and the rest commits; then retry each one that failed alone. Goes through ``at_least`` events, and on
        until the budget is spent while other writers wait; returns how many it took."""
        failed: list[_Item] = []
        handled: list[str] = []
        taken: list[_Item] = []
        started = time.perf_counter()
        try:
            async with self.db.session() as session:
                seen = await self._seen(session, items)
                await self._load(session, [_event(i) for i in items if _event(i).id not in seen])
                turns = Turns(self.yield_every)
                for item in items:
                    if len(taken) >= at_least and self._spent(started):
                        break
                    taken.append(item)
                    event = _event(item)
                    if event.id in seen:
                        continue
                    try:
                        async with session.begin_nested():
                            await self._run(session, item)
                            await session.flush()  # its writes fail here, inside its savepoint, or not at all
                    except Exception as exc:
                        log.info(
                            "event failed in its batch; it is retried alone",
                            extra={"consumer": self.durable, "event_id": event.id, "error": error_text(exc)},
                        )
                        failed.append(item)
                        continue
                    seen.add(event.id)
                    handled.append(event.id)
                    await turns.let_others_run()
                await self._finish(session, handled)
                await self._record(session, handled)
        except Exception as exc:
            log.info("batch failed again; handling one by one", extra={"consumer": self.durable, "error": repr(exc)})
            failed = taken
        else:
            self._count(handled, len(taken) - len(failed))
            apart = {id(i) for i in failed}
            await self._ack_all([i for i in taken if id(i) not in apart])
        for item in failed:
            await self._handle_one(item)
        return len(taken)

    def _spent(self, started: float) -> bool:
        """Whether a transaction begun at ``started`` has run its budget while other writers wait for it or requests
        are being served."""
        return time.perf_counter() - started >= self.transaction_budget and (
            self.db.writers_waiting() > 0 or self.foreground.requests > 0
        )

    async def _handle_one(self, item: _Item) -> None:
        try:
            async with self.db.session() as session:
                await self._apply(session, [item])
        except Exception as exc:
            item.error = error_text(exc)
            permanent = isinstance(exc, (PermanentError, *PERMANENT_ERRORS))
            if permanent or item.deliveries >= self.max_deliver:
                log.error(
                    "handler failed for good",
                    extra={"consumer": self.durable, "event_id": item.event.id if item.event else None},
                    exc_info=not permanent,
                )
                await self._dead_letter(item, permanent=permanent)
            else:
                delay = self.sub.retry_delays[min(item.deliveries - 1, len(self.sub.retry_delays) - 1)]
                log.warning(
                    "handler failed; will retry",
                    extra={"consumer": self.durable, "error": item.error, "attempt": item.deliveries, "in_s": delay},
                )
                self.metrics.events_handled.labels(consumer=self.durable, result="retried").inc()
                with contextlib.suppress(nats.errors.Error, OSError):
                    await item.msg.nak(delay=delay)
        else:
            await self._ack_all([item])

    async def _apply(self, session: AsyncSession, items: Sequence[_Item]) -> None:
        """Record the new ids in the inbox and run the handler for each, all in the caller's transaction."""
        events = [_event(i) for i in items]
        fresh = await self._claim(session, events)
        await self._load(session, [e for e in events if e.id in fresh])
        handled = []
        for item, event in zip(items, events, strict=True):
            if event.id not in fresh:
                continue
            fresh.discard(event.id)  # the same id twice in one batch runs once
            await self._run(session, item)
            handled.append(event.id)
        await self._finish(session, handled)
        self._count(handled, len(events))

    async def _run(self, session: AsyncSession, item: _Item) -> None:
        """Handle one event in a span of its own, continuing the publisher's trace (the NATS header; the envelope's
        before): each event of a batch is one span, a child of the span that emitted it."""
        event = _event(item)
        parent = _traceparent(item.msg) or event.traceparent
        token = event_id_var.set(event.id)
        try:
            with consume_span(self.service, self.durable, item.msg.subject, parent, event.id):
                await self.dispatch(session, event)
        finally:
            event_id_var.reset(token)

    async def _load(self, session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        if events and self.sub.load is not None:
            await self.sub.load(session, events)

    async def _finish(self, session: AsyncSession, handled: Sequence[str]) -> None:
        if handled and self.sub.finish is not None:
            await self.sub.finish(session)

    def _count(self, handled: Sequence[str], taken: int) -> None:
        self.metrics.events_handled.labels(consumer=self.durable, result="handled").inc(len(handled))
        self.metrics.events_handled.labels(consumer=self.durable, result="duplicate").inc(taken - len(handled))

    async def _seen(self, session: AsyncSession, items: Sequence[_Item]) -> set[str]:
        """The ids of these events the inbox already holds (handled before: a redelivery)."""
        return await self._seen_ids(session, list(dict.fromkeys(_event(i).id for i in items)))

    async def _seen_ids(self, session: AsyncSession, ids: Sequence[str]) -> set[str]:
        inbox = self.tables.inbox
        return set(
            (
                await session.execute(
                    select(inbox.c.event_id).where(inbox.c.consumer == self.durable, inbox.c.event_id.in_(ids))
                )
            ).scalars()
        )

    async def _record(self, session: AsyncSession, event_ids: Sequence[str]) -> None:
        """The inbox rows of the events handled in this transaction. A concurrent handler of the same id (another
        replica) makes this insert fail, and our transaction with it: the event then comes back, finds the id, and is
        acknowledged without effects."""
        if event_ids:
            now = dt.datetime.now(dt.UTC)
            await session.execute(
                insert(self.tables.inbox),
                [{"consumer": self.durable, "event_id": i, "handled_at": now} for i in event_ids],
            )

    async def _claim(self, session: AsyncSession, events: Sequence[CloudEvent]) -> set[str]:
        ids = list(dict.fromkeys(e.id for e in events))
        seen = await self._seen_ids(session, ids)
        fresh = [i for i in ids if i not in seen]
        await self._record(session, fresh)
        return set(fresh)

    async def _ack_all(self, items: Sequence[_Item]) -> None:
        for item in items:
            try:
                await item.msg.ack()
            except (nats.errors.Error, OSError) as exc:
                # The effects are committed; a redelivery will find the inbox row.
                log.warning("ack failed", extra={"consumer": self.durable, "error": repr(exc)})

    async def _dead_letter(self, item: _Item, *, permanent: bool) -> None:
        event = item.event
        payload = item.msg.data.decode("utf-8", errors="replace")
        event_id = event.id if event else f"seq-{_stream_sequence(item.msg)}"
        event_type = event.event_type if event else "unknown"
        now = dt.datetime.now(dt.UTC)
        letter = {
            "consumer": self.durable,
            "service": self.service,
            "error": item.error or "unknown error",
            "deliveries": item.deliveries,
            "failed_at": now.isoformat(),
            "permanent": permanent,
            "event": orjson.loads(item.msg.data) if event else payload,
        }
        table = self.tables.dead_letters
        try:
            async with self.db.session() as session:
                # Once a letter: an event that comes back after it was dead-lettered (its redelivery was on its way
                # before the term reached the server, as when the last attempt outlasted ack_wait) is terminated
                # again, without a second letter. A replayed letter that fails again makes a new one.
                known = await session.scalar(
                    select(table.c.id)
                    .where(
                        table.c.consumer == self.durable, table.c.event_id == event_id, table.c.replayed_at.is_(None)
                    )
                    .limit(1)
                )
                if known is not None:
                    log.info("dead-lettered already", extra={"consumer": self.durable, "dead_letter_id": known})
                    await _terminate(item)
                    return
                await session.execute(
                    insert(table).values(
                        consumer=self.durable,
                        event_id=event_id,
                        event_type=event_type,
                        subject=item.msg.subject,
                        payload=payload,
                        error=item.error or "unknown error",
                        deliveries=item.deliveries,
                        failed_at=now,
                    )
                )
                # The dead letter is published through the outbox too, so it is never lost or doubled.
                await session.execute(
                    insert(self.tables.outbox).values(
                        event_id=f"dlq-{self.durable}-{event_id}-{item.deliveries}",
                        subject=dead_letter_subject(self.bus.prefix, self.service, self.sub.name),
                        payload=orjson.dumps(letter).decode(),
                        created_at=now,
                    )
                )
                session.info[PENDING_KEY] = True
        except Exception:
            log.exception("could not record a dead letter; the event will come back", extra={"consumer": self.durable})
            with contextlib.suppress(nats.errors.Error, OSError):
                await item.msg.nak(delay=5)
            return
        self.metrics.dead_letters.labels(consumer=self.durable).inc()
        self.metrics.events_handled.labels(consumer=self.durable, result="dead").inc()
        await _terminate(item)

    # ------------------------------------------------------------------------------------------ replay

    async def replay(self, dead_letter_id: int) -> bool:
        """Run a dead letter's event through the handler again (after the cause was fixed).

        Returns True when it was handled now, False when the inbox shows it had been handled already."""
        table = self.tables.dead_letters
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(table).where(table.c.id == dead_letter_id, table.c.consumer == self.durable)
                )
            ).one_or_none()
        if row is None:
            raise DeadLetterNotFound(dead_letter_id)
        event = CloudEvent.from_json(row.payload)
        try:
            async with self.db.session() as session:
                fresh = await self._claim(session, [event])
                if fresh:
                    await self.dispatch(session, event)
                    await self._finish(session, [event.id])
                await session.execute(
                    update(table)
                    .where(table.c.id == dead_letter_id)
                    .values(replayed_at=dt.datetime.now(dt.UTC), replay_error=None)
                )
        except Exception as exc:
            async with self.db.session() as session:
                await session.execute(
                    update(table)
                    .where(table.c.id == dead_letter_id)
                    .values(replay_error=f"{type(exc).__name__}: {exc}")
                )
            raise
        return bool(fresh)


def named_id(value: Any) -> uuid.UUID | None:
    """An id as an event's data names it, read before the event is validated (a ``Subscription.load`` gathering what
    a batch will look up): ``None`` when it is missing or no UUID, which the handler's validation then reports."""
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


async def _terminate(item: _Item) -> None:
    with contextlib.suppress(nats.errors.Error, OSError):
        await item.msg.term()


def error_text(exc: BaseException) -> str:
    """What is logged and stored of a handler's failure. A validation error's own text quotes the input, which may
    be personal data; only the locations and reasons are kept."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return f"ValidationError: {problems}"
    return f"{type(exc).__name__}: {exc}"


def _event(item: _Item) -> CloudEvent:
    assert item.event is not None  # undecodable messages are dead-lettered before anything is applied
    return item.event


def _traceparent(msg: Msg) -> str | None:
    headers = getattr(msg, "headers", None) or {}
    value = headers.get(TRACEPARENT)
    return value if isinstance(value, str) else None


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except (AttributeError, ValueError, nats.errors.Error):
        return 1


def _stream_sequence(msg: Msg) -> Any:
    try:
        return msg.metadata.sequence.stream
    except (AttributeError, nats.errors.Error):
        return "unknown"
