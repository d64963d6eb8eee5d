"""The aggregate feed's rules where the end-to-end test (test_partner_consent.py) does not reach them: periods from
midnight in the city, small groups withheld (and an outcome the total would give away), a count arriving after its
period was published going into the next, and each period published exactly once. Domain functions on a real
database (SQLite and PostgreSQL) with notify's own outbox."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from services.notify.aggregates import AggregatePublisher, count_determinations, counted, period_start
from services.notify.main import MIGRATIONS
from services.notify.models import AggregateCount, platform
from services.notify.settings import NotifySettings
from shared.db import Database
from shared.events import CloudEvent, DeterminationsCounted, Outcome
from shared.migrations import upgrade
from shared.outbox import Outbox
from tests.services.notify import support as f

SEOUL = ZoneInfo("Asia/Seoul")
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def test_periods_start_at_midnight_in_the_city() -> None:
    # 23:59:59 in Seoul on 4 March is still that day; a second later the next day begins (15:00 UTC).
    assert period_start(dt.datetime(2026, 3, 4, 14, 59, 59, tzinfo=dt.UTC), DAY, SEOUL) == dt.datetime(
        2026, 3, 3, 15, tzinfo=dt.UTC
    )
    assert period_start(dt.datetime(2026, 3, 4, 15, 0, 0, tzinfo=dt.UTC), DAY, SEOUL) == dt.datetime(
        2026, 3, 4, 15, tzinfo=dt.UTC
    )
    assert period_start(dt.datetime(2026, 3, 4, 15, 42, 7, tzinfo=dt.UTC), HOUR, SEOUL) == dt.datetime(
        2026, 3, 4, 15, tzinfo=dt.UTC
    )


def _rows(period: dt.datetime, counts: dict[tuple[str, str, str], int]) -> list[AggregateCount]:
    return [
        AggregateCount(period_start=period, district_code=d, program_code=p, outcome=o, count=n)
        for (d, p, o), n in counts.items()
    ]


def test_small_groups_are_left_out_and_an_outcome_the_total_would_give_away_is_withheld() -> None:
    start = dt.datetime(2026, 3, 3, 15, tzinfo=dt.UTC)
    rows = _rows(start, {
        ("11110", "child_allowance", "eligible"): 40,
        ("11110", "child_allowance", "ineligible"): 12,
        ("11110", "child_allowance", "needs_information"): 3,  # small, and alone: the next smallest goes too
        ("11140", "child_allowance", "eligible"): 25,
        ("11140", "child_allowance", "ineligible"): 2,
        ("11140", "child_allowance", "needs_review"): 1,  # two small ones: neither can be worked out
        ("11170", "parent_benefit", "eligible"): 9,  # a group under ten: left out altogether
        ("11440", "parent_benefit", "ineligible"): 10,
    })  # fmt: skip
    data = counted(start, start + DAY, rows, 10, start + DAY)
    shown = {(c.district_code, c.program_code): c for c in data.counts}
    assert set(shown) == {("11110", "child_allowance"), ("11140", "child_allowance"), ("11440", "parent_benefit")}
    assert data.withheld_groups == 1
    jongno = shown[("11110", "child_allowance")]
    assert (jongno.determinations, jongno.eligible, jongno.ineligible, jongno.needs_information, jongno.needs_review) \
        == (55, 40, None, None, 0)  # fmt: skip
    junggu = shown[("11140", "child_allowance")]
    assert (junggu.determinations, junggu.eligible, junggu.ineligible, junggu.needs_review) == (28, 25, None, None)
    mapo = shown[("11440", "parent_benefit")]
    assert (mapo.determinations, mapo.ineligible, mapo.eligible) == (10, 10, 0)
    assert data.min_group == 10


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade(database_url, MIGRATIONS)
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def _published(db: Database) -> list[DeterminationsCounted]:
    outbox = platform.outbox
    async with db.session() as session:
        payloads = await session.scalars(
            select(outbox.c.payload).where(outbox.c.subject == "test.aggregate.determinations_counted")
            .order_by(outbox.c.id)
        )  # fmt: skip
        return [CloudEvent.from_json(p).data_as(DeterminationsCounted) for p in payloads]


async def test_each_period_is_published_once_and_a_late_count_goes_into_the_next(db: Database) -> None:
    settings = NotifySettings(aggregate_period_seconds=3600, aggregate_min_group=1, bus_prefix="test")
    publisher = AggregatePublisher(db=db, outbox=Outbox(platform, prefix="test", source="/onestop/notify"),
                                   settings=settings)  # fmt: skip
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)  # a period that has ended
    first = period_start(earlier, HOUR, SEOUL)
    program = f.program("child_allowance", "아동수당", "CA", Outcome.ELIGIBLE)
    for _ in range(2):
        async with db.session() as session:
            await count_determinations(
                session, settings, f.determined(uuid.uuid4(), uuid.uuid4(), 1, [program]), earlier
            )

    assert await publisher.run_once() == 1
    assert await publisher.run_once() == 0, "published once"
    [one] = await _published(db)
    assert (one.period_start, one.period_end) == (first, first + HOUR)
    assert [(c.district_code, c.program_code, c.determinations, c.eligible) for c in one.counts] == [
        ("11110", "child_allowance", 2, 2)
    ]

    # A determination handled at a moment of that period, after it was published, is counted in the next one.
    async with db.session() as session:
        await count_determinations(session, settings, f.determined(uuid.uuid4(), uuid.uuid4(), 1, [program]), earlier)
    assert await publisher.run_once() == 1
    [_, two] = await _published(db)
    assert (two.period_start, two.period_end) == (first + HOUR, first + 2 * HOUR)
    assert [c.determinations for c in two.counts] == [1]

    # The period open now is not published before it ends.
    async with db.session() as session:
        await count_determinations(session, settings, f.determined(uuid.uuid4(), uuid.uuid4(), 1, [program]))
    assert await publisher.run_once() == 0
