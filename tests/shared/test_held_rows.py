"""A consumer's transaction can hold what it loads (``shared.db.hold_loaded``): a row read once and dropped by the code
that read it is found again in the identity map, with no statement; without it, the next ``get`` reads it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import String, event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Database, hold_loaded
from tests.support.databases import database_with


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "held_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with database_with(database_url, Base.metadata) as database:
        async with database.session() as session:
            await session.execute(insert(Row).values(id=1, name="one"))
        yield database


def _counting(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "held_rows" in statement:
            seen.append(statement)

    return seen


async def _name(session: Any) -> str:
    row = await session.get(Row, 1)  # what a handler reads and forgets when it returns
    assert row is not None
    return str(row.name)


async def test_a_held_session_reads_a_row_once_and_finds_it_again(db: Database) -> None:
    seen = _counting(db.engine.sync_engine)
    async with db.session() as session:
        hold_loaded(session)
        assert [await _name(session) for _ in range(3)] == ["one"] * 3
    assert len(seen) == 1, "read once, then found in the identity map"


async def test_without_it_a_dropped_row_is_read_again(db: Database) -> None:
    seen = _counting(db.engine.sync_engine)
    async with db.session() as session:
        assert [await _name(session) for _ in range(3)] == ["one"] * 3
    assert len(seen) == 3, "each get read the row again"


async def test_a_held_row_changed_in_the_transaction_is_seen_changed(db: Database) -> None:
    async with db.session() as session:
        hold_loaded(session)
        row = await session.get(Row, 1)
        assert row is not None
        row.name = "changed"
        del row
        assert await _name(session) == "changed"
    async with db.read_session() as session:
        assert await _name(session) == "changed"
