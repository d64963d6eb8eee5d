"""The resident's in-app inbox: the notifications released to it, read in the resident's language, marked read.

A module of its own rather than a part of notifications.py, which composes messages from events inside the consumer:
this is what the resident does with them afterwards, over the API. Only released notifications are in the inbox (a
message still collecting its bundle is not), and only the resident's own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from services.notify.delivery import effective_language
from services.notify.models import Notification, Preference, utcnow
from services.notify.repository import Repository
from shared.problems import NotFound


@dataclass(frozen=True)
class Message:
    """A message as its resident reads it: in the language they chose in notify, else in the one it was composed
    in."""

    notification: Notification
    language: str


@dataclass(frozen=True)
class Messages:
    page: list[Message]
    unread: int  # in the whole inbox, not only on this page


async def messages(
    repo: Repository, resident_id: uuid.UUID, *, unread_only: bool, before: dt.datetime | None, limit: int
) -> Messages:
    """The resident's messages, newest first, released before ``before`` (for paging; a time without a zone is
    taken as UTC)."""
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=dt.UTC)
    rows = await repo.inbox(resident_id, unread_only=unread_only, limit=limit, before=before)
    preference = await repo.preference(resident_id)
    return Messages(page=[_as_read(n, preference) for n in rows], unread=await repo.unread_count(resident_id))


async def message(repo: Repository, resident_id: uuid.UUID, notification_id: uuid.UUID) -> Message:
    notification = await _own(repo, resident_id, notification_id)
    return _as_read(notification, await repo.preference(resident_id))


async def mark_read(repo: Repository, resident_id: uuid.UUID, notification_id: uuid.UUID) -> Message:
    """Marked read once: reading it again keeps the first time."""
    notification = await _own(repo, resident_id, notification_id)
    if notification.read_at is None:
        notification.read_at = utcnow()
    return _as_read(notification, await repo.preference(resident_id))


async def _own(repo: Repository, resident_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    notification = await repo.inbox_item(resident_id, notification_id)
    if notification is None:
        raise NotFound("No such message in your inbox.")
    return notification


def _as_read(notification: Notification, preference: Preference | None) -> Message:
    return Message(notification, effective_language(preference, None, notification.language))
