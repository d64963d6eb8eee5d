"""Retention: expired inbox ids and idempotency keys are purged, recent ones kept; failures are stored without
the personal data a validation error would quote."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ValidationError
from sqlalchemy import insert, select

from shared.consumer import error_text
from shared.db import Database
from shared.housekeeping import Housekeeping
from tests.support.bus_harness import metadata, tables


async def test_expired_inbox_ids_and_idempotency_keys_are_purged(database_url: str) -> None:
    db = Database(database_url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
    async with db.session() as session:
        await session.execute(
            insert(tables.inbox),
            [
                {"consumer": "c", "event_id": "old", "handled_at": now - dt.timedelta(days=31)},
                {"consumer": "c", "event_id": "recent", "handled_at": now - dt.timedelta(days=29)},
            ],
        )
        await session.execute(
            insert(tables.idempotency_keys),
            [
                {
                    "principal": "p",
                    "key": k,
                    "method": "POST",
                    "path": "/x",
                    "fingerprint": "f",
                    "status_code": 201,
                    "response": "{}",
                    "created_at": now - age,
                }
                for k, age in (("old", dt.timedelta(hours=25)), ("recent", dt.timedelta(hours=23)))
            ],
        )
    housekeeping = Housekeeping(
        db, tables, inbox_retention=dt.timedelta(days=30), idempotency_retention=dt.timedelta(hours=24), interval=60
    )
    assert await housekeeping.purge(now) == {"inbox": 1, "idempotency_keys": 1}
    async with db.session() as session:
        assert list((await session.execute(select(tables.inbox.c.event_id))).scalars()) == ["recent"]
        assert list((await session.execute(select(tables.idempotency_keys.c.key))).scalars()) == ["recent"]
    assert await housekeeping.purge(now) == {"inbox": 0, "idempotency_keys": 0}
    await db.dispose()


async def test_a_service_s_own_purges_run_on_each_pass_and_one_failing_stops_none(database_url: str) -> None:
    db = Database(database_url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    housekeeping = Housekeeping(
        db, tables, inbox_retention=dt.timedelta(days=30), idempotency_retention=dt.timedelta(hours=24), interval=60
    )
    seen: list[dt.datetime] = []

    async def broken(now: dt.datetime) -> dict[str, int]:
        raise RuntimeError("a purge that fails")

    async def kept_records(now: dt.datetime) -> dict[str, int]:
        seen.append(now)
        return {"decision_files": 2}

    housekeeping.register("broken", broken)
    housekeeping.register("erasure", kept_records)
    now = dt.datetime(2032, 1, 1, tzinfo=dt.UTC)
    assert await housekeeping.purge(now) == {"inbox": 0, "idempotency_keys": 0, "erasure.decision_files": 2}
    assert seen == [now]
    await db.dispose()


def test_a_validation_failure_is_recorded_without_the_input() -> None:
    class Contact(BaseModel):
        phone: int

    try:
        Contact.model_validate({"phone": "010-9876-5432"})
    except ValidationError as exc:
        text = error_text(exc)
    assert "phone" in text
    assert "010-9876-5432" not in text
    assert error_text(RuntimeError("database is locked")) == "RuntimeError: database is locked"
