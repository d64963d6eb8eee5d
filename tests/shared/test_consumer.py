"""The typed event dispatch every consumer uses: handlers declared per event model, filter subjects derived from them,
each event validated against its model before its handler runs, and one policy for what no handler is declared for
(a dead letter with the reason). Against a real nats-server and real databases."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import MSG_ID_HEADER
from shared.consumer import Dispatch, Subscription, UnhandledEventType, on
from shared.events import (
    TYPE_PREFIX,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseEventBase,
    CaseRouted,
    CloudEvent,
    subject_for,
)
from tests.support.bus_harness import EVENT_TYPE, POISON, Harness, effects, tables, withdrawn
from tests.support.nats import NatsServer
from tests.support.waiting import wait_until


@pytest.fixture
async def harness(nats_server: NatsServer, bus_prefix: str, database_url: str) -> AsyncIterator[Harness]:
    h = await Harness(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    yield h
    await h.stop()


async def _letters(h: Harness) -> list:  # type: ignore[type-arg]
    async with h.db.session() as session:
        return list((await session.execute(select(tables.dead_letters).order_by(tables.dead_letters.c.id))).all())


async def _settled(h: Harness) -> bool:
    assert h.consumer is not None
    info = await h.bus.js.consumer_info(h.bus.stream, h.consumer.durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def _publish_raw(h: Harness, event_id: str, envelope: dict[str, object]) -> None:
    """What a misbehaving producer could put on a subject the consumer takes."""
    subject = subject_for(h.bus.prefix, EVENT_TYPE)
    await h.bus.js.publish(subject, orjson.dumps(envelope), headers={MSG_ID_HEADER: event_id})


def _envelope(event_id: str, event_type: str, data: Mapping[str, object]) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/test/rogue",
        "type": event_type,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "data": data,
    }


async def test_an_event_no_handler_is_declared_for_is_dead_lettered_at_once_with_the_reason(harness: Harness) -> None:
    """On a subject the consumer takes, an envelope of another catalogue type and one of no known type: neither
    reaches a handler, both are dead letters after one delivery naming why, and the good event behind them is
    applied once."""
    other = withdrawn().model_dump(mode="json")
    await _publish_raw(harness, "other-type", _envelope("other-type", TYPE_PREFIX + "application.submitted", other))
    await _publish_raw(harness, "no-type", _envelope("no-type", TYPE_PREFIX + "nothing.here", other))
    good = harness.event(withdrawn())
    await harness.bus.publish_event(good)

    await harness.start_consumer()
    await wait_until(lambda: _settled(harness))

    letters = {row.event_id: row for row in await _letters(harness)}
    assert sorted(letters) == ["no-type", "other-type"]
    assert all(row.deliveries == 1 for row in letters.values()), "no retries for what no handler takes"
    assert "UnhandledEventType" in letters["other-type"].error
    assert "has no handler for onestop.application.submitted" in letters["other-type"].error
    assert "has no handler for onestop.nothing.here" in letters["no-type"].error
    assert await harness.effect_counts() == {good.data["application_id"]: 1}


async def test_data_that_does_not_fit_its_model_never_reaches_the_handler_and_its_values_are_not_kept(
    harness: Harness,
) -> None:
    secret = "Kim Minji, 010-1234-5678"
    bad = {"application_id": "not-a-uuid", "resident_id": str(uuid.uuid4()), "reason": secret}
    await _publish_raw(harness, "bad-data", _envelope("bad-data", TYPE_PREFIX + EVENT_TYPE, bad))
    good = harness.event(withdrawn())
    await harness.bus.publish_event(good)

    await harness.start_consumer()
    await wait_until(lambda: _settled(harness))

    [letter] = await _letters(harness)
    assert (letter.event_id, letter.deliveries) == ("bad-data", 1)
    assert "application_id" in letter.error
    assert "withdrawn_at" in letter.error, "every field that does not fit is named"
    assert secret not in letter.error, "the input may be personal data; only locations and reasons are kept"
    assert await harness.effect_counts() == {good.data["application_id"]: 1}


async def _ignore(session: AsyncSession, event: CloudEvent, data: object) -> None:
    return None


def test_the_filter_subjects_are_the_declared_event_types() -> None:
    subscription = Subscription(
        name="things", handlers=[on(ApplicationWithdrawn, _ignore), on(ApplicationSubmitted, _ignore)]
    )
    assert subscription.event_types == ("application.withdrawn", "application.submitted")


def test_a_handler_is_declared_for_a_catalogue_model_only() -> None:
    with pytest.raises(TypeError, match="CaseEventBase is not the catalogue model"):
        on(CaseEventBase, _ignore)  # a base of several events names no event type
    on(CaseRouted, _ignore)


def test_two_handlers_for_one_event_type_are_refused_when_the_service_is_defined() -> None:
    with pytest.raises(ValueError, match=r"two handlers for application\.withdrawn"):
        Subscription(name="things", handlers=[on(ApplicationWithdrawn, _ignore), on(ApplicationWithdrawn, _ignore)])


async def test_the_dispatch_hands_each_handler_its_validated_model() -> None:
    seen: list[object] = []

    async def record(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        seen.append(data)

    dispatch = Dispatch("things", [on(ApplicationWithdrawn, record)])
    data = withdrawn()
    event = CloudEvent(
        id="e1", source="/test", type=TYPE_PREFIX + EVENT_TYPE, time=dt.datetime.now(dt.UTC),
        data=data.model_dump(mode="json"),
    )  # fmt: skip
    await dispatch(None, event)  # type: ignore[arg-type]
    assert seen == [data]
    assert isinstance(seen[0], ApplicationWithdrawn)
    with pytest.raises(UnhandledEventType):
        await dispatch(None, event.model_copy(update={"type": TYPE_PREFIX + "application.submitted"}))  # type: ignore[arg-type]


class _WritesThenFails(Harness):
    """A handler that writes its effect and then, for a poison event, fails: what it wrote must not stay."""

    @staticmethod
    async def apply(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        await session.execute(
            insert(effects).values(
                application_id=str(data.application_id), event_id=event.id, applied_at=dt.datetime.now(dt.UTC)
            )
        )
        if data.reason == POISON:
            raise RuntimeError("this event always fails, after writing")


async def test_a_batch_with_a_poison_event_commits_the_rest_in_one_transaction_and_dead_letters_the_poison(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    h = await _WritesThenFails(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url).setup()
    # How many effects each committed transaction wrote (what a rollback, or one to a savepoint, undid not counted).
    committed: list[int] = []
    writes: list[int] = [0]  # effects written so far in the transaction, and at each savepoint open in it

    def begin(conn: object) -> None:
        writes[:] = [0]

    def statement(conn: object, cursor: object, sql: str, *args: object) -> None:
        if sql.lstrip().upper().startswith("INSERT INTO EFFECTS"):
            writes[-1] += 1

    def savepoint(conn: object, name: str) -> None:
        writes.append(writes[-1])

    def rollback_savepoint(conn: object, name: str, context: object) -> None:
        writes.pop()

    def release_savepoint(conn: object, name: str, context: object) -> None:
        writes[-2:] = [writes[-1]]

    def commit(conn: object) -> None:
        if writes[0]:
            committed.append(writes[0])

    engine = h.db.engine.sync_engine
    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "savepoint", savepoint)
    event.listen(engine, "rollback_savepoint", rollback_savepoint)
    event.listen(engine, "release_savepoint", release_savepoint)
    event.listen(engine, "commit", commit)
    try:
        lead = h.event(withdrawn())  # an idle consumer takes one message; the batch behind it comes whole
        poison = h.event(withdrawn(reason=POISON))
        good = [h.event(withdrawn()) for _ in range(10)]
        for e in [lead, *good[:5], poison, *good[5:]]:
            await h.bus.publish_event(e)
        consumer = await h.start_consumer()
        await wait_until(lambda: _settled(h))

        assert await h.effect_counts() == {e.data["application_id"]: 1 for e in [lead, *good]}, (
            "each good event once; nothing the poison wrote stayed"
        )
        assert committed == [1, 10], "the ten events beside the poison committed together, in one transaction"
        [letter] = await _letters(h)
        assert (letter.event_id, letter.deliveries) == (poison.id, consumer.max_deliver)
        assert "after writing" in letter.error
    finally:
        await h.stop()


class _FinishesEachTransaction(_WritesThenFails):
    """A consumer that leaves work to the end of each transaction (Subscription.finish): it sees the events the
    transaction applied, and writes in it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finished: list[list[str]] = []
        self.loads: list[int] = []

    @staticmethod
    async def apply(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        assert event.id in session.info["loaded"], "loaded at the start of its transaction"
        await _WritesThenFails.apply(session, event, data)
        session.info.setdefault("applied", []).append(event.id)

    async def load(self, session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        session.info["loaded"] = {e.id for e in events}
        self.loads.append(len(events))

    async def finish(self, session: AsyncSession) -> None:
        applied = session.info.pop("applied", [])
        self.finished.append(applied)
        await session.execute(
            insert(effects).values(
                application_id="finish", event_id=str(uuid.uuid4()), applied_at=dt.datetime.now(dt.UTC)
            )
        )


async def test_a_consumers_finish_runs_once_per_transaction_after_its_events_and_commits_with_them(
    nats_server: NatsServer, bus_prefix: str, database_url: str
) -> None:
    h = _FinishesEachTransaction(nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url)
    await h.setup()
    try:
        lead = h.event(withdrawn())  # taken alone (an idle consumer takes one message), the rest as one batch
        poison = h.event(withdrawn(reason=POISON))
        good = [h.event(withdrawn()) for _ in range(6)]
        for e in [lead, *good[:3], poison, *good[3:]]:
            await h.bus.publish_event(e)
        await h.start_consumer()
        await wait_until(lambda: _settled(h))
        assert h.finished[0] == [lead.id]
        assert h.loads[:2] == [1, 7], "each transaction loads for the events it is about to apply"
        # The batch failed as one transaction (its finish never committed), then its events were applied apart,
        # each in a savepoint: the finish saw the six that stayed; the poison, retried alone, never got to it.
        assert h.finished[-1] == [e.id for e in good]
        counts = await h.effect_counts()
        assert counts.pop("finish") == 2, "one finish committed with each transaction that applied events"
        assert counts == {e.data["application_id"]: 1 for e in [lead, *good]}
        [letter] = await _letters(h)
        assert letter.event_id == poison.id
    finally:
        await h.stop()


async def test_an_event_that_comes_back_after_it_was_dead_lettered_gets_no_second_letter(harness: Harness) -> None:
    """The last attempt can outlast ack_wait on a busy machine: JetStream sends the event again before the term
    reaches it. That copy fails too and is terminated, with the one letter already written (two letters for one
    event were seen once, on PostgreSQL, under the whole suite's load)."""
    h = harness
    poison = h.event(withdrawn(reason=POISON))
    await h.bus.publish_event(poison)
    await h.start_consumer()
    await wait_until(lambda: _settled(h))
    [letter] = await _letters(h)
    assert letter.event_id == poison.id
    # The same event again, as a redelivery would bring it (another message id: the stream keeps both).
    await _publish_raw(h, f"again-{poison.id}", orjson.loads(poison.to_json()))
    await wait_until(lambda: _settled(h))
    assert [(row.id, row.event_id) for row in await _letters(h)] == [(letter.id, poison.id)]
