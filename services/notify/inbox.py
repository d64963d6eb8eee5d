"""The resident's in-app inbox: the notifications released to it, read in the resident's language, marked read.

A module of its own rather than a part of notifications.py, which composes messages from events inside the consumer:
this is what the resident does with them afterwards, over the API. Only released notifications are in the inbox (a
message still collecting its bundle is not), and only the resident's own — or, for a representative the resident named
to read their messages (intake's representation.changed, projected here), that resident's, while the representation
holds; each such read is in notify's audit log with the authority it was made under, which the resident can read.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from services.notify.delivery import effective_language
from services.notify.models import Notification, Preference, audit_log, utcnow
from services.notify.repository import Repository
from services.notify.schemas import AccessLogEntry, AccessLogPage, AuthorityOut
from shared.audit import Authority
from shared.auth import Principal
from shared.problems import NotFound

READ_MESSAGES = "read_messages"
PURPOSE_REPRESENTATION = "representation"


@dataclass(frozen=True)
class Reader:
    """Whose inbox the caller reads: their own (no authority), or a resident's who named them representative."""

    principal: Principal
    resident_id: uuid.UUID
    authority: Authority | None = None

    @classmethod
    def own(cls, principal: Principal) -> Reader:
        assert principal.resident_id is not None  # a resident token always names the resident (shared.auth)
        return cls(principal, principal.resident_id)

    async def record(self, repo: Repository, action: str, notification_id: uuid.UUID | None) -> None:
        """A read for the resident goes into the audit log, naming the resident and the authority."""
        if self.authority is None:
            return
        await audit_log.record(
            repo.session,
            self.principal,
            action=action,
            record_type="message" if notification_id else "inbox",
            record_id=notification_id,
            purpose=PURPOSE_REPRESENTATION,
            resident_id=self.resident_id,
            authority=self.authority,
        )


async def reader(repo: Repository, principal: Principal, resident_id: uuid.UUID | None, today: dt.date) -> Reader:
    """The caller (a resident) reads their own inbox, or — naming ``resident_id`` — the inbox of a resident who named
    them representative in the read_messages scope, through its expiry and until revoked. Any other inbox is not
    found, whether it exists or not."""
    if resident_id is None or resident_id == principal.resident_id:
        return Reader.own(principal)
    assert principal.resident_id is not None
    for representation in await repo.current_representations(principal.resident_id, resident_id, today):
        if READ_MESSAGES in representation.scopes:
            return Reader(principal, resident_id, Authority("representative", representation.representation_id))
    raise NotFound("No such inbox.")


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
    repo: Repository, reader: Reader, *, unread_only: bool, before: dt.datetime | None, limit: int
) -> Messages:
    """The resident's messages, newest first, released before ``before`` (for paging; a time without a zone is
    taken as UTC)."""
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=dt.UTC)
    rows = await repo.inbox(reader.resident_id, unread_only=unread_only, limit=limit, before=before)
    preference = await repo.preference(reader.resident_id)
    await reader.record(repo, "list", None)
    return Messages(page=[_as_read(n, preference) for n in rows], unread=await repo.unread_count(reader.resident_id))


async def message(repo: Repository, reader: Reader, notification_id: uuid.UUID) -> Message:
    notification = await _own(repo, reader.resident_id, notification_id)
    await reader.record(repo, "read", notification.id)
    return _as_read(notification, await repo.preference(reader.resident_id))


async def mark_read(repo: Repository, reader: Reader, notification_id: uuid.UUID) -> Message:
    """Marked read once: reading it again keeps the first time."""
    notification = await _own(repo, reader.resident_id, notification_id)
    if notification.read_at is None:
        notification.read_at = utcnow()
    await reader.record(repo, "mark read", notification.id)
    return _as_read(notification, await repo.preference(reader.resident_id))


async def _own(repo: Repository, resident_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    notification = await repo.inbox_item(resident_id, notification_id)
    if notification is None:
        raise NotFound("No such message in your inbox.")
    return notification


def _as_read(notification: Notification, preference: Preference | None) -> Message:
    return Message(notification, effective_language(preference, None, notification.language))


async def access_log(repo: Repository, resident_id: uuid.UUID, *, cursor: str | None, limit: int) -> AccessLogPage:
    """What notify's audit log holds about the resident (who read their messages for them), newest first."""
    entries = await audit_log.of_resident(
        repo.session, resident_id, before_id=int(cursor) if cursor else None, limit=limit + 1
    )
    page = entries[:limit]
    return AccessLogPage(
        items=[
            AccessLogEntry.from_row(
                e,
                authority=AuthorityOut(kind=e.authority_kind, id=e.authority_id)
                if e.authority_kind and e.authority_id
                else None,
            )
            for e in page
        ],
        next_cursor=str(page[-1].id) if len(entries) > limit else None,
    )
