"""The suite's PostgreSQL helpers: a service's empty database becomes a copy of a migrated template, and a database
that already holds something is left to alembic, its rows kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from shared.migrations import current
from tests.support.postgres import PostgresServer
from tests.support.scratch import keep_scratch_in_memory
from tests.support.services import migrated


async def test_an_empty_database_becomes_a_copy_of_the_services_migrated_template(
    postgres_server: PostgresServer,
) -> None:
    first, second = postgres_server.create_database(), postgres_server.create_database()
    name = first.rsplit("/", 1)[1]
    assert postgres_server.is_empty(name)

    await migrated(first, "routing")
    await migrated(second, "routing")  # the template made for the first is copied again

    assert not postgres_server.is_empty(name)
    assert await current(first) == await current(second) is not None
    offices = postgres_server.psql("SELECT count(*) FROM offices", name)
    assert offices.strip() == "0"


async def test_a_database_holding_something_is_upgraded_and_keeps_it(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    postgres_server.psql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('mine')", name)

    await migrated(url, "routing")

    assert postgres_server.psql("SELECT note FROM kept", name).strip() == "mine"
    assert await current(url) is not None


async def test_a_dropped_database_is_gone_even_with_someone_connected(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            postgres_server.drop_database(url)
    except DBAPIError:
        pass  # its connection was ended by the drop
    finally:
        await engine.dispose()
    listed = postgres_server.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")  # noqa: S608
    assert listed.strip() == "0"
    postgres_server.drop_database(url)  # once more: nothing to drop is no error


def test_scratch_goes_to_memory_only_unless_chosen_and_only_with_room(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert keep_scratch_in_memory() is None  # an operator's choice stands

    monkeypatch.delenv("TMPDIR")
    monkeypatch.setattr("tests.support.scratch.MEMORY", tmp_path / "absent")
    assert keep_scratch_in_memory() is None

    monkeypatch.setattr("tests.support.scratch.MEMORY", tmp_path)
    monkeypatch.setattr("tests.support.scratch.NEEDED_BYTES", 2**62)
    assert keep_scratch_in_memory() is None

    monkeypatch.setattr("tests.support.scratch.NEEDED_BYTES", 1)
    monkeypatch.setattr("tempfile.tempdir", None)
    assert keep_scratch_in_memory() == tmp_path
    assert os.environ["TMPDIR"] == str(tmp_path)
    assert tempfile.gettempdir() == str(tmp_path)
