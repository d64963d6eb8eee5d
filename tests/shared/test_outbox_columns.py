"""Events written in columns (``Outbox.emit_frame``: one envelope template per kind of event, the varying fields
filled in per row, one bulk write) are, byte for byte, the envelopes the per-event path (``new_event`` +
``CloudEvent.to_json``, as ``Outbox.emit`` and ``emit_many`` write them) makes of the same data, id and time — on
SQLite and on PostgreSQL. The relay, the ``Nats-Msg-Id`` dedupe and every consumer see no difference."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import polars as pl
import pytest
from sqlalchemy import MetaData, select

from shared.db import Database
from shared.events import (
    CloudEvent,
    Department,
    EligibilityOpportunity,
    Localized,
    MissingFact,
    ScreeningQuestionAsked,
    new_event,
)
from shared.outbox import PENDING_KEY, Outbox, dashed, envelope_template, event_ids, write_kept
from shared.tables import platform_tables
from tests.support.databases import database_with
from tests.support.round_trips import statements_sent

metadata = MetaData()
tables = platform_tables(metadata)
SOURCE = "/onestop/eligibility"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with database_with(database_url, metadata) as database:
        yield database


EventDataLike = EligibilityOpportunity | ScreeningQuestionAsked


def per_event(data: EventDataLike, *, subject: str, event_id: str, time: dt.datetime, traceparent: str | None) -> str:
    """The envelope as the per-event path writes it, with the given id and time."""
    event = new_event(data, source=SOURCE, subject=subject, traceparent=traceparent)
    return event.model_copy(update={"id": event_id, "time": time}).to_json().decode()


def opportunity(
    resident_id: uuid.UUID, amount: int | None, screening_id: uuid.UUID, now: dt.datetime
) -> EligibilityOpportunity:
    return EligibilityOpportunity(
        screening_id=screening_id,
        resident_id=resident_id,
        program_code="basic_pension",
        # Text JSON must escape (quotes, a backslash, a line break, a control character) and Korean.
        program_name=Localized(ko='기초연금 "노인"\n\\', en="Basic\tpension \u0001"),
        department="welfare",
        amount=amount,
        amount_period="monthly" if amount is not None else None,
        found_at=now,
    )


async def test_events_written_in_columns_are_the_per_event_envelopes_byte_for_byte(db: Database) -> None:
    outbox = Outbox(tables, prefix="onestop", source=SOURCE)
    now = dt.datetime(2026, 3, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    at = dt.datetime(2026, 3, 2, 3, 4, 6, tzinfo=dt.UTC)  # no microseconds: written without a fraction
    screening_id = uuid.uuid4()
    residents = [uuid.uuid4() for _ in range(5)]
    # Amounts on the edges of their text: zero, negative, a single digit, beyond 32 bits.
    amounts = [0, -1, 7, 2**40 + 3, 1_234_567]
    with_amount = outbox.template(opportunity(residents[0], 1, screening_id, now), holes=["resident_id", "amount"],
                                  time=at)  # fmt: skip
    without = outbox.template(opportunity(residents[0], None, screening_id, now), holes=["resident_id"], time=at)
    ids = [str(uuid.uuid4()) for _ in range(7)]
    hex_ids = pl.Series([r.hex for r in residents])
    first = (
        pl.DataFrame({"id": ids[:5], "resident_id": hex_ids})
        .with_columns(
            dashed(pl.col("resident_id")).alias("resident_id"), pl.Series("amount", [str(a) for a in amounts])
        )
        .with_columns(pl.col("resident_id").alias("subject"))
    )
    second = pl.DataFrame({"id": ids[5:], "subject": [str(r) for r in residents[:2]],
                           "resident_id": [str(r) for r in residents[:2]]})  # fmt: skip
    async with db.session() as session:
        written = await outbox.emit_frames(session, [(with_amount, first), (without, second)])
        assert session.info[PENDING_KEY] is True, "the relay is woken when this commits"
    assert written.to_list() == ids
    async with db.read_session() as session:
        rows = (await session.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all()
    assert [r.event_id for r in rows] == ids, "in the order given, each under its own id (the Nats-Msg-Id)"
    assert {r.subject for r in rows} == {"onestop.eligibility.opportunity"}
    assert all(r.published_at is None and r.created_at.tzinfo is not None for r in rows)
    expected = [
        per_event(opportunity(r, a, screening_id, now), subject=str(r), event_id=i, time=at, traceparent=None)
        for r, a, i in zip(residents, amounts, ids[:5], strict=True)
    ] + [
        per_event(opportunity(r, None, screening_id, now), subject=str(r), event_id=i, time=at, traceparent=None)
        for r, i in zip(residents[:2], ids[5:], strict=True)
    ]
    assert [r.payload for r in rows] == expected
    # And what a consumer reads back is the event.
    back = CloudEvent.from_json(rows[3].payload)
    assert back.data_as(EligibilityOpportunity).amount == 2**40 + 3
    assert back.id == ids[3]
    assert back.subject == str(residents[3])


async def test_fresh_ids_and_a_question_with_a_list_and_a_trace(db: Database) -> None:
    """Without ids given, each event gets a fresh random UUID; the trace the bulk write runs under is in every
    envelope, as ``emit_many`` puts it there; a model with lists and nested texts is cut as well."""
    outbox = Outbox(tables, prefix="onestop", source=SOURCE)
    now = dt.datetime.now(dt.UTC)
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    question = ScreeningQuestionAsked(
        question_id=uuid.uuid4(), screening_id=uuid.uuid4(), resident_id=uuid.uuid4(), program_code="housing_benefit",
        program_name=Localized(ko="주거급여", en="Housing benefit"), department="housing",
        fact=MissingFact(name="tenure", type="string", question=Localized(ko="주거 형태는?", en="Tenure?")),
        choices=["owner", "tenant", "rent-free"], why=Localized(ko="왜 \"묻는지\"", en="Why we ask"), asked_at=now,
    )  # fmt: skip
    template = envelope_template(question, source=SOURCE, holes=["question_id", "resident_id"], time=now,
                                 traceparent=trace)  # fmt: skip
    people = [uuid.uuid4() for _ in range(3)]
    asked = [uuid.uuid4() for _ in range(3)]
    frame = pl.DataFrame({"subject": [str(p) for p in people], "resident_id": [str(p) for p in people],
                          "question_id": [str(q) for q in asked]})  # fmt: skip
    async with db.session() as session:
        ids = (await outbox.emit_frame(session, template, frame)).to_list()
    assert len(set(ids)) == 3
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    async with db.read_session() as session:
        rows = (await session.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all()
    assert [r.event_id for r in rows] == ids
    for row, person, q, event_id in zip(rows, people, asked, ids, strict=True):
        data = question.model_copy(update={"resident_id": person, "question_id": q})
        assert row.payload == per_event(data, subject=str(person), event_id=event_id, time=now, traceparent=trace)


def test_only_identifiers_and_numbers_are_holes() -> None:
    """A text field varies in ways a template cannot cut safely (escaping): it is refused, as is a field the model
    does not have."""
    now = dt.datetime.now(dt.UTC)
    data = opportunity(uuid.uuid4(), 5, uuid.uuid4(), now)
    with pytest.raises(ValueError, match="program_code"):
        envelope_template(data, source=SOURCE, holes=["program_code"], time=now, traceparent=None)
    with pytest.raises(ValueError, match="nonsense"):
        envelope_template(data, source=SOURCE, holes=["nonsense"], time=now, traceparent=None)


def test_event_ids_are_fresh_random_uuids() -> None:
    ids = event_ids(20_000).to_list()
    assert len(set(ids)) == len(ids) == 20_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i for u, i in zip(parsed, ids, strict=True))
    # Random: every hex digit position that is not fixed by the version and variant takes many values.
    assert all(len({i[k] for i in ids}) == 16 for k in (0, 9, 20, 35))
    assert event_ids(0).to_list() == []


async def test_the_events_of_a_transaction_are_written_together_in_the_order_emitted(db: Database) -> None:
    """``emit`` writes nothing at once: the transaction's events go out with its next flush, one INSERT for all of
    them, in the order emitted (the relay publishes by id); a savepoint rolled back takes its events back; and a
    bulk write after them (``emit_many``) comes after them."""

    outbox = Outbox(tables, prefix="onestop", source=SOURCE)
    opportunity = EligibilityOpportunity(
        screening_id=uuid.uuid4(), resident_id=uuid.uuid4(), program_code="youth_rent",
        program_name=Localized(ko="청년월세", en="Youth rent"), department=Department.WELFARE, amount=200_000,
        amount_period="monthly", found_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    with statements_sent(db) as statements:
        async with db.session() as session:
            first = [await outbox.emit(session, opportunity) for _ in range(3)]
            async with session.begin_nested() as savepoint:
                await outbox.emit(session, opportunity)
                await savepoint.rollback()
            assert len(statements) == 1, "the three before the savepoint, written as it began, in one INSERT"
            more = [await outbox.emit(session, opportunity) for _ in range(3)]
            assert len(statements) == 1, "nothing written yet"
            bulk = await outbox.emit_many(session, [opportunity, opportunity])
            assert session.info[PENDING_KEY]
    inserts = [s for s in statements if s.startswith("INSERT INTO outbox")]
    assert len(inserts) == 3, "three and three emitted one by one, then the bulk write: an INSERT each"
    async with db.read_session() as session:
        stored = (await session.execute(select(tables.outbox.c.event_id).order_by(tables.outbox.c.id))).scalars()
        assert list(stored) == [e.id for e in [*first, *more, *bulk]]


async def test_an_envelope_made_before_the_transaction_writes_is_written_at_once_after_the_events_before_it(
    db: Database,
) -> None:
    """``event`` makes the envelope ``emit`` would write, and its text, without writing anything (a request builds
    what it writes before it takes SQLite's writer lock); ``write`` then writes it at once, in one INSERT, after the
    events emitted before it and not written yet, and wakes the relay when the transaction commits."""
    outbox = Outbox(tables, prefix="onestop", source=SOURCE)
    data = opportunity(uuid.uuid4(), 100, uuid.uuid4(), dt.datetime.now(dt.UTC))
    with statements_sent(db) as statements:
        async with db.session() as session:
            before = await outbox.emit(session, data)
            made, payload = outbox.event(data, subject="made-apart")
            assert statements == [], "nothing written: neither the event emitted nor the one made"
            assert session.info.get(PENDING_KEY) is True  # set by emit
            session.info.pop(PENDING_KEY)
            await outbox.write(session, [(made, payload)])
            inserts = [s for s in statements if s.startswith("INSERT INTO outbox")]
            assert len(inserts) == 2, "the event emitted before (flushed first), then the one made"
            assert session.info[PENDING_KEY] is True, "the relay is woken when this commits"
    async with db.read_session() as session:
        rows = (await session.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all()
    assert [r.event_id for r in rows] == [before.id, made.id]
    assert rows[1].subject == "onestop.eligibility.opportunity"
    assert rows[1].payload == payload == made.to_json().decode()
    back = CloudEvent.from_json(rows[1].payload)
    assert (back.subject, back.source, back.data_as(EligibilityOpportunity)) == ("made-apart", SOURCE, data)


async def test_events_kept_aside_are_written_at_once_in_the_order_emitted_and_none_is_lost(db: Database) -> None:
    """A transaction that keeps its events aside (``keep_aside``: a consumer's) adds no ORM row per event: they are
    written in one core INSERT by ``write_kept`` (or before a bulk write after them), the envelopes byte for byte
    what ``emit`` writes. Within a savepoint an event is added at once, and its rollback takes it back; one emitted
    there while others wait aside, or a commit with events left unwritten, fails rather than lose or reorder any."""
    outbox = Outbox(tables, prefix="onestop", source=SOURCE)
    data = opportunity(uuid.uuid4(), 100, uuid.uuid4(), dt.datetime.now(dt.UTC))
    with statements_sent(db) as statements:
        async with db.session() as session:
            outbox.keep_aside(session)
            first = [await outbox.emit(session, data) for _ in range(3)]
            assert statements == [], "nothing written"
            assert not session.new, "nothing added to the session"
            assert session.info[PENDING_KEY]
            await write_kept(session)
            assert len([s for s in statements if s.startswith("INSERT INTO outbox")]) == 1
            async with session.begin_nested() as savepoint:
                await outbox.emit(session, data)
                assert len(session.new) == 1, "within a savepoint, added at once"
                await savepoint.rollback()
            async with session.begin_nested():
                kept_in_savepoint = await outbox.emit(session, data)
            more = [await outbox.emit(session, data) for _ in range(2)]
            bulk = await outbox.emit_many(session, [data])
            await write_kept(session)  # nothing left: written before the bulk write
    inserts = [s for s in statements if s.startswith("INSERT INTO outbox")]
    assert len(inserts) == 4, "the three; the savepoint's; the two kept, before the bulk write; the bulk write"
    async with db.read_session() as session:
        rows = (await session.execute(select(tables.outbox).order_by(tables.outbox.c.id))).all()
    expected = [*first, kept_in_savepoint, *more, *bulk]
    assert [r.event_id for r in rows] == [e.id for e in expected]
    assert [r.payload for r in rows] == [e.to_json().decode() for e in expected]
    assert {r.subject for r in rows} == {"onestop.eligibility.opportunity"}

    async def emitted_in_a_savepoint_while_others_wait() -> None:
        async with db.session() as session:
            outbox.keep_aside(session)
            await outbox.emit(session, data)
            async with session.begin_nested():
                await outbox.emit(session, data)

    lost: list[CloudEvent] = []

    async def left_unwritten() -> None:
        async with db.session() as session:
            outbox.keep_aside(session)
            lost.append(await outbox.emit(session, data))

    with pytest.raises(RuntimeError, match="before a savepoint"):
        await emitted_in_a_savepoint_while_others_wait()
    with pytest.raises(RuntimeError, match="not written before the commit"):
        await left_unwritten()
    async with db.read_session() as session:
        ids = (await session.execute(select(tables.outbox.c.event_id))).scalars().all()
    assert lost[0].id not in ids
    assert len(ids) == len(expected), "neither transaction wrote anything"
