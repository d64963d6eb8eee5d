"""Two workers (two replicas) claiming due deliveries at the same time never get the same row; an administrator's
retry waits for the worker holding the delivery."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from services.notify import delivery
from services.notify.main import MIGRATIONS
from services.notify.models import Delivery, Notification, utcnow
from services.notify.notifications import WORK_PENDING
from services.notify.repository import Repository, new_claim_token
from shared.db import Database
from shared.migrations import upgrade
from shared.problems import Conflict


async def test_concurrent_claims_split_the_due_rows_between_workers(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    workers = [Database(database_url) for _ in range(3)]
    try:
        now = utcnow()
        async with workers[0].session() as session:
            for _ in range(30):
                notification = Notification(
                    id=uuid.uuid4(), resident_id=uuid.uuid4(), kind="case.decided", status="dispatched",
                    language="ko", created_at=now, next_step_at=now,
                )  # fmt: skip
                session.add(notification)
                await session.flush()
                for channel in ("email", "sms"):
                    session.add(
                        Delivery(
                            id=uuid.uuid4(), notification_id=notification.id, resident_id=notification.resident_id,
                            channel=channel, status="pending", attempts=0, next_attempt_at=now, created_at=now,
                            updated_at=now,
                        )
                    )  # fmt: skip

        async def claim(db: Database) -> list[uuid.UUID]:
            got: list[uuid.UUID] = []
            for _ in range(10):
                async with db.session() as session:
                    got += await Repository(session).claim_deliveries(
                        new_claim_token(), now=utcnow(), lease=dt.timedelta(minutes=1), limit=7
                    )
            return got

        claimed = await asyncio.gather(*(claim(db) for db in workers))
        everything = [row for rows in claimed for row in rows]
        assert len(everything) == 60, "every due row was claimed"
        assert len(set(everything)) == 60, "and none twice"

        # Held rows are not handed out again until their lease runs out.
        async with workers[0].session() as session:
            again = await Repository(session).claim_deliveries(
                "late", now=utcnow(), lease=dt.timedelta(minutes=1), limit=100
            )
            assert again == []
            expired = await Repository(session).claim_deliveries(
                "later", now=utcnow() + dt.timedelta(minutes=2), lease=dt.timedelta(minutes=1), limit=100
            )
            assert len(expired) == 60
    finally:
        for db in workers:
            await db.dispose()


async def test_an_administrator_retries_a_failed_delivery_only_once_no_worker_holds_it(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    db = Database(database_url)
    try:
        now = utcnow()
        async with db.session() as session:
            notification = Notification(
                id=uuid.uuid4(), resident_id=uuid.uuid4(), kind="case.decided", status="dispatched", language="ko",
                created_at=now, next_step_at=now,
            )  # fmt: skip
            session.add(notification)
            await session.flush()
            failed = Delivery(
                id=uuid.uuid4(), notification_id=notification.id, resident_id=notification.resident_id,
                channel="email", status="failed", attempts=3, last_error="550 mailbox unavailable",
                next_attempt_at=now, created_at=now, updated_at=now,
            )  # fmt: skip
            session.add(failed)
        async with db.session() as session:
            held = await Repository(session).claim_deliveries(
                "worker-1", now=utcnow(), lease=dt.timedelta(minutes=1), limit=10
            )
            assert held == [failed.id]

        async with db.session() as session:
            with pytest.raises(Conflict, match="being attempted"):
                await delivery.retry(Repository(session), failed.id)
            still = await session.get(Delivery, failed.id)
            assert still is not None
            assert (still.status, still.attempts, still.claim_token) == ("failed", 3, "worker-1")
            still.claimed_until = utcnow() - dt.timedelta(seconds=1)  # the worker died; its lease ran out

        async with db.session() as session:
            retried = await delivery.retry(Repository(session), failed.id)
            assert (retried.status, retried.attempts, retried.claim_token, retried.claimed_until) == (
                "pending", 0, None, None
            )  # fmt: skip
            assert session.info.get(WORK_PENDING), "the workers are woken for it"
    finally:
        await db.dispose()
