"""What one request sends to its database: every statement and transaction boundary the calling task sends (not the
service's background work: consumers, the outbox relay). Requests made through a test's in-process client
(``httpx.ASGITransport``) run in the test's own task, so what that task sends is what the request cost.

Each entry is one round trip to the database: a statement, a ``BEGIN``, a ``COMMIT`` or ``ROLLBACK`` (a thread hop
each on SQLite — except ``BEGIN``, which goes in the hop of the transaction's first statement: shared.sqlite — a
message and its answer each on PostgreSQL); a connection checked out of a pool that pings it first
adds the ping (on PostgreSQL through asyncpg: ``BEGIN``, ``;``, ``ROLLBACK``); a connection given back to a pool is
rolled back, a round trip only when a transaction was left open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from shared.db import Database
from shared.events import CloudEvent, EventData
from tests.support.services import RunningService
from tests.support.waiting import wait_until

PING = ("BEGIN", ";", "ROLLBACK")


@contextlib.contextmanager
def round_trips(db: Database) -> Iterator[list[str]]:
    """The round trips of the calling task to ``db`` while the block runs, in order (statements as sent)."""
    task = asyncio.current_task()
    sent: list[str] = []

    def mine() -> bool:
        return asyncio.current_task() is task

    def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        if mine():
            sent.append(" ".join(text.split()))

    def boundary(kind: str) -> Any:
        def record(*args: Any) -> None:
            connection = next((a for a in args if isinstance(a, Connection)), None)
            autocommit = connection is not None and connection.get_execution_options().get("isolation_level") == (
                "AUTOCOMMIT"
            )
            if mine() and not autocommit:  # a statement in autocommit is its own transaction: no BEGIN, no COMMIT
                sent.append(kind)

        return record

    def returned(dbapi_connection: Any, *_: Any) -> None:
        # SQLite's connection rolls back only a transaction left open (shared.sqlite.OneHopConnection.rollback).
        if mine() and dbapi_connection._in_transaction():
            sent.append("ROLLBACK (connection returned)")

    def checkout(*_: Any) -> None:
        if mine():
            sent.extend(PING)

    # A transaction's BEGIN is seen by the sessions, not the engines: SQLite's BEGIN waits in the engines' own
    # "begin" listener (for the writer lock), and adding a listener beside one that waits breaks its iteration.
    listeners: list[tuple[Any, str, Any]] = [(Session, "after_begin", boundary("BEGIN"))]
    engines: list[Engine] = [db.engine.sync_engine]
    if db.read_engine.sync_engine.pool is not db.engine.sync_engine.pool:
        engines.append(db.read_engine.sync_engine)  # SQLite's file: read connections of their own
    for engine in engines:
        listeners += [
            (engine, "before_cursor_execute", statement),
            (engine, "commit", boundary("COMMIT")),
            (engine, "rollback", boundary("ROLLBACK")),
        ]
        if engine.pool._pre_ping:
            listeners.append((engine.pool, "checkout", checkout))
        if engine.dialect.name == "sqlite":
            listeners.append((engine.pool, "reset", returned))
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield sent
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


@dataclass
class ConsumerWork:
    """What a consumer's tasks sent: its statements as sent, with ``COMMIT`` where each transaction ended."""

    statements: list[str] = field(default_factory=list)

    @property
    def commits(self) -> int:
        return self.statements.count("COMMIT")

    def transactions(self) -> list[list[str]]:
        """The statements of each transaction (the last one possibly empty)."""
        out: list[list[str]] = [[]]
        for s in self.statements:
            if s == "COMMIT":
                out.append([])
            else:
                out[-1].append(s)
        return out

    def count(self, prefix: str) -> int:
        return len([s for s in self.statements if s.startswith(prefix)])


@contextlib.contextmanager
def consumer_statements(db: Database, durable: str) -> Iterator[ConsumerWork]:
    """What the tasks of the consumer ``durable`` send to ``db``'s write engine while the block runs (its batches run
    in tasks named after it)."""
    work = ConsumerWork()

    def by_consumer() -> bool:
        task = asyncio.current_task()
        return task is not None and task.get_name().startswith(f"{durable}-")

    def record(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        if by_consumer():
            work.statements.append(" ".join(text.split()))

    def committed(_conn: Any) -> None:
        if by_consumer():
            work.statements.append("COMMIT")

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", committed)
    try:
        yield work
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", committed)


async def one_batch(
    service: RunningService, consumer: str, events: Iterable[EventData | CloudEvent], *, timeout: float = 20.0
) -> ConsumerWork:
    """Publish ``events`` while the service's ``consumer`` (``events`` for ``<service>-events``) is stopped, then start
    it again and wait until it has handled them, recording what it sends meanwhile. Started again, it takes the first
    event alone (an idle consumer takes one message at once) and the rest as one batch: a test that wants a batch of
    its own events leads with an event of no interest.

    The consumer's transaction budget is lifted meanwhile: on a loaded machine a batch's events can outrun the budget
    while another consumer of the service waits to write, and the batch would then be cut into transactions of one
    event each. So is its wait for a batch to arrive whole: the server sends what it has and says when it is done,
    but on a loaded machine its messages can take longer than the 50 ms a busy fetch waits, and the batch would be
    handled in two. What the budget does is tested apart (tests/shared/test_consumer_under_load.py)."""
    running = service.runtime.consumers[consumer]
    await running.stop()
    for data in events:
        await service.publish(data)
    budget, busy_wait = running.transaction_budget, running.busy_wait
    running.transaction_budget, running.busy_wait = 3600.0, 2.0
    try:
        with consumer_statements(service.runtime.db, running.durable) as work:
            await running.start()
            await wait_until(lambda: service.settled(consumer), timeout=timeout)
    finally:
        running.transaction_budget, running.busy_wait = budget, busy_wait
    return work


@contextlib.contextmanager
def statements_sent(db: Database) -> Iterator[list[str]]:
    """Every statement ``db``'s write engine sends while the block runs, from any task, in order (as sent)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        sent.append(" ".join(text.split()))

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextlib.contextmanager
def objects_added(task_prefix: str) -> Iterator[list[str]]:
    """The classes of the ORM objects added to a session by tasks named ``task_prefix...`` while the block runs (a
    consumer's batches run in tasks named after it): a batch that writes its rows by Core statements adds none."""
    added: list[str] = []

    def pending(_session: Session, instance: object) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith(f"{task_prefix}-"):
            added.append(type(instance).__name__)

    event.listen(Session, "transient_to_pending", pending)
    try:
        yield added
    finally:
        event.remove(Session, "transient_to_pending", pending)
