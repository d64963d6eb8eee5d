"""The inbox's rules where the API tests do not reach them: a message read twice keeps the first time, and only the
resident's own released messages are in it. Domain functions on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from services.notify import inbox
from services.notify.main import MIGRATIONS
from services.notify.models import Notification, utcnow
from services.notify.repository import Repository
from shared.auth import Principal, Role
from shared.db import Database
from shared.migrations import upgrade
from shared.problems import NotFound


def notification(resident: uuid.UUID, *, released_at: dt.datetime | None) -> Notification:
    now = utcnow()
    return Notification(
        id=uuid.uuid4(), resident_id=resident, kind="case.decided", language="ko", created_at=now, next_step_at=now,
        status="ready" if released_at else "collecting", released_at=released_at,
    )  # fmt: skip


async def test_a_message_read_twice_keeps_the_first_time_and_others_are_not_found(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    db = Database(database_url)
    resident = uuid.uuid4()
    me = inbox.Reader.own(Principal(subject=f"resident:{resident}", role=Role.RESIDENT, resident_id=resident))
    try:
        now = utcnow()
        messages = {
            "released": notification(resident, released_at=now),
            "collecting": notification(resident, released_at=None),  # its bundling window is still open
            "another resident's": notification(uuid.uuid4(), released_at=now),
        }
        async with db.session() as session:
            session.add_all(messages.values())

        async with db.session() as session:
            first = await inbox.mark_read(Repository(session), me, messages["released"].id)
            first_read = first.notification.read_at
            assert first_read is not None
        async with db.session() as session:
            repo = Repository(session)
            again = await inbox.mark_read(repo, me, messages["released"].id)
            assert again.notification.read_at == first_read
            assert (await inbox.messages(repo, me, unread_only=True, before=None, limit=10)).page == []

        for name in ("collecting", "another resident's"):
            async with db.session() as session:
                with pytest.raises(NotFound):
                    await inbox.mark_read(Repository(session), me, messages[name].id)
            async with db.session() as session:
                untouched = await session.get(Notification, messages[name].id)
                assert untouched is not None
                assert untouched.read_at is None, name
        async with db.session() as session:
            listed = await inbox.messages(Repository(session), me, unread_only=False, before=None, limit=10)
            assert [m.notification.id for m in listed.page] == [messages["released"].id]
            assert listed.unread == 0
    finally:
        await db.dispose()
