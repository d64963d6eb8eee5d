"""``Repository.registry_page`` reads a page of consenting residents and their department facts as columns (CSV from
``COPY`` on PostgreSQL, one packed text per resident through a covering index on SQLite): every value arrives as the
ORM reads it — JSON texts with commas, quotes, line breaks and Korean, timestamps with and without microseconds, an
open or closed validity — on SQLite and on PostgreSQL, page after page, for named residents alone, and for those whose
review day has come (the daily run); with what the residents declared in answer to screening questions."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import polars as pl
import pytest
from sqlalchemy import insert

from services.eligibility import repository
from services.eligibility.main import MIGRATIONS
from services.eligibility.models import DepartmentFactRow, ResidentAnswerRow, ResidentRow, ScreeningReviewRow
from services.eligibility.population import read_page
from services.eligibility.repository import Repository
from shared.db import Database
from shared.migrations import upgrade

NOW = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)
DAY = NOW.date()
VALUES: list[Any] = [
    0,
    -12,
    2**40,
    True,
    False,
    'a, "quoted"\nline',
    "기초연금",
    ["x", "y,z"],
    {"k": "v", "n": [1, 2]},
    1.5,
    "",
]


def resident(n: int, *, consenting: bool) -> dict[str, Any]:
    return {
        "resident_id": uuid.UUID(int=n * 7919 + 1),
        "registry_version": n if n % 5 else None,
        "birth_date": dt.date(1950 + n % 60, 1 + n % 12, 1 + n % 28) if n % 7 else None,
        "district_code": "11440",
        "household": [{"relation": "child", "birth_date": "2020-01-01"}] if n % 2 else [],
        "vulnerability": ["disability"] if n % 3 == 0 else [],
        "consents": {"proactive_screening": consenting, "note": 'a "b", c'},
        "proactive_screening": consenting,
    }


def fact(n: int, k: int, rid: uuid.UUID) -> dict[str, Any]:
    observed = NOW - dt.timedelta(days=k, microseconds=(n * 37 + k) % 3 * 123_457)  # some with microseconds
    return {
        "report_id": uuid.uuid4(), "resident_id": rid, "name": f"fact_{k}", "value": VALUES[(n + k) % len(VALUES)],
        "department": "tax" if k % 2 else "welfare", "source": "test", "observed_at": observed,
        "valid_until": observed + dt.timedelta(days=30) if k % 3 == 0 else None, "reported_at": observed,
    }  # fmt: skip


async def test_pages_of_residents_and_their_facts_arrive_as_the_orm_reads_them(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    people = [resident(n, consenting=n % 4 != 0) for n in range(1, 41)]
    facts = [fact(n, k, p["resident_id"]) for n, p in enumerate(people) for k in range(n % 6)]
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(insert(ResidentRow), people)
            await session.execute(insert(DepartmentFactRow), facts)
        consenting = sorted(p["resident_id"] for p in people if p["proactive_screening"])
        by_id = {p["resident_id"]: p for p in people}
        pages: list[tuple[pl.DataFrame, pl.DataFrame]] = []
        after: str | None = None
        async with db.read_session() as session:
            repo = Repository(session)
            while True:
                page = await repo.registry_page(after, 7, None)
                if not page[0].height:
                    break
                pages.append(page)
                after = page[0].get_column("resident_id")[-1]
            named = [consenting[2], consenting[-1], people[3]["resident_id"]]  # the last does not consent
            alone = await repo.registry_page(None, 100, named)
        # The daily run's residents: those whose review day has come (not after the day), or who have none.
        reviewed = {consenting[0]: DAY, consenting[1]: DAY + dt.timedelta(days=1), consenting[4]: DAY - dt.timedelta(1)}
        async with db.session() as session:
            await session.execute(
                insert(ScreeningReviewRow),
                [{"resident_id": r, "review_on": d, "screened_on": DAY} for r, d in reviewed.items()],
            )
            await session.execute(
                insert(ResidentAnswerRow),
                [{"resident_id": consenting[4], "name": "civil_servant", "value": False, "answered_at": NOW},
                 {"resident_id": consenting[1], "name": "earned_income", "value": 1200, "answered_at": NOW}],
            )  # fmt: skip
        async with db.read_session() as session:
            repo = Repository(session)
            due: list[tuple[pl.DataFrame, pl.DataFrame]] = []
            after = None
            while (page := await repo.registry_page(after, 5, due=DAY))[0].height:
                due.append(page)
                after = page[0].get_column("resident_id")[-1]
            answers = await repo.declared_answers(consenting[0], consenting[-1])
            answered = await read_page(repo, None, 3, [consenting[4], consenting[1]])
    finally:
        await db.dispose()

    assert [len(p[0]) for p in pages] == [7, 7, 7, 7, 2]
    residents = pl.concat([p[0] for p in pages])
    assert residents.get_column("resident_id").to_list() == [r.hex for r in consenting]
    for row in residents.iter_rows(named=True):
        expected = by_id[uuid.UUID(row["resident_id"])]
        assert row["registry_version"] == expected["registry_version"]
        assert row["birth_date"] == expected["birth_date"]
        assert row["district_code"] == expected["district_code"]
        for name in ("household", "vulnerability", "consents"):
            assert json.loads(row[name]) == expected[name], name
    got = pl.concat([p[1] for p in pages])
    wanted = [f for f in facts if by_id[f["resident_id"]]["proactive_screening"]]
    assert got.height == len(wanted) > 0, "every fact of the consenting residents, none of the others"
    for page_residents, page_facts in pages:
        assert set(page_facts.get_column("resident_id")) <= set(page_residents.get_column("resident_id"))
    expected_rows = {
        (f["resident_id"].hex, f["name"]): (json.dumps(f["value"]), f["department"], f["observed_at"], f["valid_until"])
        for f in wanted
    }
    for row in got.iter_rows(named=True):
        value, department, observed, valid = expected_rows[(row["resident_id"], row["name"])]
        assert json.loads(row["value"]) == json.loads(value)
        assert row["department"] == department
        assert row["observed_at"] == observed
        assert row["valid_until"] == valid
        assert isinstance(row["id"], int)
    assert got.schema["observed_at"] == pl.Datetime("us", "UTC")
    assert got.schema["valid_until"] == pl.Datetime("us", "UTC")
    assert got.get_column("valid_until").null_count() not in (0, got.height), "open and closed validities both"

    due_ids = pl.concat([p[0] for p in due]).get_column("resident_id").to_list()
    assert due_ids == [r.hex for r in consenting if r != consenting[1]], "only the one reviewed after the day waits"
    for page_residents, page_facts in due:
        assert set(page_facts.get_column("resident_id")) <= set(page_residents.get_column("resident_id"))
    assert pl.concat([p[1] for p in due]).height == sum(1 for f in wanted if f["resident_id"] != consenting[1]), (
        "each due resident's facts, and theirs alone"
    )
    assert sorted(answers.rows()) == sorted(
        [(consenting[4].hex, "civil_servant", "false"), (consenting[1].hex, "earned_income", "1200")]
    )
    assert answered.ids == sorted([consenting[4].hex, consenting[1].hex])
    assert sorted(answered.answers.rows()) == sorted(answers.rows()), "a page of named residents, with their answers"

    residents_alone, facts_alone = alone
    assert residents_alone.get_column("resident_id").to_list() == [named[0].hex, named[1].hex]
    assert set(facts_alone.get_column("resident_id")) <= {named[0].hex, named[1].hex}
    assert facts_alone.height == sum(1 for f in facts if f["resident_id"] in named[:2])


async def test_the_pages_of_one_read_see_one_snapshot(database_url: str) -> None:
    """The pages read in one read-only unit of work all see the registry as it was when the first was read: a
    resident who consents (and a fact reported) meanwhile is not on a later page. On PostgreSQL the ``COPY`` of each
    page runs in the unit of work's ``REPEATABLE READ`` transaction, not in a transaction of its own."""
    await upgrade(database_url, MIGRATIONS)
    people = [resident(n, consenting=True) for n in range(1, 11)]
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(insert(ResidentRow), people)
            await session.execute(insert(DepartmentFactRow), [fact(1, 1, p["resident_id"]) for p in people])
        late = {**resident(11, consenting=True), "resident_id": uuid.UUID(int=2**128 - 1)}  # after every other id
        async with db.read_session() as session:
            repo = Repository(session)
            first = await repo.registry_page(None, 5, None)
            async with db.session() as writer:
                await writer.execute(insert(ResidentRow), [late])
                await writer.execute(insert(DepartmentFactRow), [fact(2, 1, people[-1]["resident_id"])])
            rest = await repo.registry_page(first[0].get_column("resident_id")[-1], 100, None)
        async with db.read_session() as session:
            now_seen = await Repository(session).registry_page(first[0].get_column("resident_id")[-1], 100, None)
    finally:
        await db.dispose()
    assert first[0].height == 5
    assert rest[0].get_column("resident_id").to_list() == sorted(p["resident_id"].hex for p in people)[5:]
    assert rest[1].height == 5, "the fact reported meanwhile is not read"
    assert now_seen[0].height == 6, "a later read sees the resident"
    assert now_seen[1].height == 6, "and the fact"


async def test_a_page_is_parsed_off_the_event_loop(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of thousands of residents is parsed by Polars (CSV from COPY on PostgreSQL, packed texts on SQLite):
    done on the event loop's thread it held the loop 100 ms and more, every request and event waiting. It is parsed
    on another thread (Polars lets go of the GIL meanwhile), and the page is the same."""
    await upgrade(database_url, MIGRATIONS)
    people = [resident(n, consenting=True) for n in range(1, 11)]
    facts = [fact(n, k, p["resident_id"]) for n, p in enumerate(people) for k in range(3)]
    parsed_on: list[int] = []
    unpacked, read_csv = repository._unpacked, pl.read_csv

    def unpacking(*args: Any, **kwargs: Any) -> Any:
        parsed_on.append(threading.get_ident())
        return unpacked(*args, **kwargs)

    def reading(*args: Any, **kwargs: Any) -> Any:
        parsed_on.append(threading.get_ident())
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(repository, "_unpacked", unpacking)
    monkeypatch.setattr(pl, "read_csv", reading)
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(insert(ResidentRow), people)
            await session.execute(insert(DepartmentFactRow), facts)
        async with db.read_session() as session:
            residents, found = await Repository(session).registry_page(None, 100, None)
    finally:
        await db.dispose()
    assert residents.height == len(people)
    assert found.height == len(facts)
    assert parsed_on, "the page was parsed"
    assert threading.get_ident() not in parsed_on, "parsed on the event loop's thread"
