"""Delivering resident notifications, in the background (never in the consumer: intake or SMTP being slow must not
hold up the event stream).

Two steps, each on rows claimed with a lease so that two workers (two replicas) never work on the same row:

1. *dispatch* a notification whose bundling window closed: it appears in the in-app inbox (a delivery on channel
   ``inbox``, sent at once), then intake is asked for the resident's contact and channel defaults, the resident's own
   preferences in notify override them, and one delivery per push channel (email, SMS) is created. When intake
   cannot be reached the notification waits and is tried again with backoff; it is never dropped.
2. *send* each due email/SMS delivery; on failure retry with exponential backoff and jitter; after
   ``delivery_max_attempts`` it is ``dead`` (listed for administrators, who can retry it). SMS due in the resident's
   quiet hours wait until they end. Nothing goes out for a withdrawn application.

``notification.sent`` / ``notification.failed`` are emitted through the outbox in the transaction that records the
outcome.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import Table, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.channels import ChannelError, EmailSender, SmsSender, build_email
from services.notify.contacts import Contact, ContactDirectory, ContactUnavailable
from services.notify.letters import LetterPrinter, PrintedLetter, Recipient
from services.notify.models import (
    Delivery,
    DeliveryStatus,
    Letter,
    LetterStatus,
    Notification,
    NotificationStatus,
    Preference,
    ResidentChannel,
    TrackedApplication,
    utcnow,
)
from services.notify.notifications import mark_work, withdrawn
from services.notify.rendering import MessageInput, Renderer
from services.notify.repository import Repository, new_claim_token
from services.notify.schedule import backoff, quiet_until, zone
from services.notify.settings import NotifySettings
from shared.clock import Clock
from shared.db import Database, execute_rows
from shared.events import CloudEvent, EventData, Language, NotificationFailed, NotificationSent
from shared.outbox import Outbox
from shared.problems import Conflict, NotFound

log = logging.getLogger(__name__)

PUSH_CHANNELS = (ResidentChannel.EMAIL.value, ResidentChannel.SMS.value, ResidentChannel.POST.value)


@dataclass(frozen=True)
class _About:
    """The notification a delivery carries, as its events tell it: read with the delivery before the attempt, so that
    recording a sent one needs no read of the rows again."""

    notification_id: uuid.UUID
    resident_id: uuid.UUID
    application_id: uuid.UUID | None
    kind: str
    source_event_ids: tuple[str, ...]

    @classmethod
    def of(cls, notification: Notification) -> _About:
        return cls(
            notification.id,
            notification.resident_id,
            notification.application_id,
            notification.kind,
            tuple(notification.source_event_ids),
        )


@dataclass(frozen=True)
class _Send:
    """A delivery about to be attempted: what the transaction that held it read."""

    delivery_id: uuid.UUID
    resident_id: uuid.UUID
    channel: str
    message: MessageInput
    preference: Preference | None
    fallback_language: str
    about: _About


@dataclass(frozen=True)
class _Outcome:
    """What became of an attempt on ``channel``: sent (in ``language``, ``printed`` for a letter) or failed with
    ``error``."""

    delivery_id: uuid.UUID
    channel: str
    about: _About
    language: str | None = None
    printed: PrintedLetter | None = None
    error: str | None = None
    permanent: bool = False


@dataclass
class Senders:
    email: EmailSender
    sms: SmsSender
    post: LetterPrinter


# Made once: a statement used again keeps its cache key.
_INSERT_DELIVERIES = insert(cast(Table, Delivery.__table__))


@dataclass
class _Writes:
    """What a worker's transaction adds and never reads back — new deliveries, the events it emits — written at its
    end in a core INSERT each, in the order added: through the ORM's unit of work an object a row cost more than the
    statement (a dispatched notification adds two deliveries and an event, a sent delivery an event)."""

    outbox: Outbox
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[CloudEvent, str]] = field(default_factory=list)

    def delivery(
        self,
        notification: Notification,
        channel: str,
        status: str,
        now: dt.datetime,
        *,
        attempts: int = 0,
        due: dt.datetime | None = None,
        sent_at: dt.datetime | None = None,
    ) -> None:
        # Every row with the same columns: one multi-row statement.
        self.deliveries.append(
            {"id": uuid.uuid4(), "notification_id": notification.id, "resident_id": notification.resident_id,
             "channel": channel, "status": status, "attempts": attempts, "next_attempt_at": due or now,
             "created_at": now, "updated_at": now, "sent_at": sent_at}
        )  # fmt: skip

    def emit(self, data: EventData) -> None:
        self.events.append(self.outbox.event(data))

    async def write(self, session: AsyncSession) -> None:
        if self.deliveries:
            await execute_rows(session, _INSERT_DELIVERIES, self.deliveries)
        if self.events:
            await self.outbox.write(session, self.events)


def message_input(notification: Notification, language: str) -> MessageInput:
    return MessageInput(
        kind=notification.kind,
        language=language,
        application_id=str(notification.application_id) if notification.application_id else None,
        items=[item.data for item in notification.items],
    )


def effective_language(preference: Preference | None, contact: Contact | None, fallback: str) -> str:
    if preference is not None and preference.language:
        return preference.language
    if contact is not None and contact.preferred_language in ("ko", "en"):
        return contact.preferred_language
    return fallback


def effective_channels(preference: Preference | None, contact: Contact | None) -> list[str]:
    """The resident's own choice in notify wins; otherwise intake's defaults. The inbox always keeps a copy."""
    if preference is not None and preference.channels is not None:
        chosen = list(preference.channels)
    elif contact is not None:
        chosen = list(contact.preferred_channels)
    else:
        chosen = []
    return [c for c in PUSH_CHANNELS if c in chosen]


def sms_quiet_until(preference: Preference | None, now: dt.datetime, default_timezone: str) -> dt.datetime | None:
    if preference is None:
        return None
    return quiet_until(
        now,
        preference.quiet_hours_start,
        preference.quiet_hours_end,
        zone(preference.timezone, default_timezone),
    )


class ResidentDelivery:
    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        settings: NotifySettings,
        contacts: ContactDirectory,
        renderer: Renderer,
        senders: Senders,
        clock: Clock,
        attempts: Counter | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.contacts = contacts
        self.renderer = renderer
        self.senders = senders
        self.clock = clock
        self.lease = dt.timedelta(seconds=settings.claim_lease_seconds)
        self.attempts = attempts

    async def run_once(self) -> int:
        """One pass over what is due; returns how many rows were worked on. Each claimed batch is worked on in a
        handful of transactions (read, write), not two per row; should the batch's write fail, its rows are worked on
        one by one, so that one bad row holds up no other."""
        token, ids = await self._claim(Repository.claim_notifications)
        if ids:
            await self._batch(ids, token, self.dispatch_all, self.dispatch)
        done = len(ids)
        token, ids = await self._claim(Repository.claim_deliveries)
        if ids:
            await self._batch(ids, token, self.send_all, self.send)
        return done + len(ids)

    async def _claim(self, claim: Callable[..., Awaitable[Sequence[uuid.UUID]]]) -> tuple[str, Sequence[uuid.UUID]]:
        token = new_claim_token()
        async with self.db.session() as session:
            ids = await claim(
                Repository(session), token, now=utcnow(), lease=self.lease, limit=self.settings.worker_batch_size
            )
        return token, ids

    async def _batch(
        self,
        ids: Sequence[uuid.UUID],
        token: str,
        work_all: Callable[[Sequence[uuid.UUID], str], Awaitable[None]],
        work_one: Callable[[uuid.UUID, str], Awaitable[None]],
    ) -> None:
        try:
            await work_all(ids, token)
        except Exception:
            log.exception("delivery batch failed; its rows are worked on one by one", extra={"rows": len(ids)})
            await self._each(ids, token, work_one)

    async def _each(
        self, ids: Sequence[uuid.UUID], token: str, work: Callable[[uuid.UUID, str], Awaitable[None]]
    ) -> None:
        limit = asyncio.Semaphore(self.settings.worker_concurrency)

        async def one(row_id: uuid.UUID) -> None:
            async with limit:
                try:
                    await work(row_id, token)
                except Exception:
                    # The claim runs out and the row is tried again; the error is logged without personal data.
                    log.exception("delivery step failed", extra={"row": str(row_id)})

        await asyncio.gather(*(one(i) for i in ids))

    async def _contacts(self, resident_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Contact | str | None]:
        """Each resident's contact (None: intake does not know them), or why it could not be had; asked of intake
        outside any transaction, the batch's residents in one request."""
        try:
            return dict(await self.contacts.lookup_many(resident_ids))
        except ContactUnavailable as exc:
            return dict.fromkeys(resident_ids, str(exc))

    # ------------------------------------------------------------------------------------------ 1. dispatch

    async def dispatch_all(self, notification_ids: Sequence[uuid.UUID], token: str) -> None:
        """Dispatch a claimed batch: the residents read, their contacts asked of intake (outside any transaction),
        then every notification's deliveries written in one transaction."""
        async with self.db.read_session() as session:
            residents = await Repository(session).claimed_residents(notification_ids, token)
        if not residents:
            return
        contacts = await self._contacts(list(residents.values()))
        async with self.db.session() as session:
            repo = Repository(session)
            held = await repo.held_all(Notification, list(residents), token)
            applications = await repo.applications_by_id(
                [n.application_id for n in held.values() if n.application_id is not None]
            )
            preferences = await repo.preferences([n.resident_id for n in held.values()])
            now = utcnow()
            writes = _Writes(self.outbox)
            for notification_id in notification_ids:
                notification = held.get(notification_id)
                if notification is None:
                    continue
                found = contacts.get(notification.resident_id)
                self._dispatch_held(
                    writes,
                    notification,
                    applications.get(notification.application_id) if notification.application_id else None,
                    preferences.get(notification.resident_id),
                    found if not isinstance(found, str) else None,
                    found if isinstance(found, str) else None,
                    now,
                )
            await writes.write(session)

    async def dispatch(self, notification_id: uuid.UUID, token: str) -> None:
        """Dispatch one notification on its own (when its batch failed)."""
        async with self.db.read_session() as session:
            residents = await Repository(session).claimed_residents([notification_id], token)
        if notification_id not in residents:
            return
        contact: Contact | None = None
        error: str | None = None
        try:
            contact = await self.contacts.lookup(residents[notification_id])
        except ContactUnavailable as exc:
            error = str(exc)
        async with self.db.session() as session:
            repo = Repository(session)
            notification = await repo.held(Notification, notification_id, token)
            if notification is None:
                return
            application = await repo.find_application(notification.application_id)
            preference = await repo.preference(notification.resident_id)
            writes = _Writes(self.outbox)
            self._dispatch_held(writes, notification, application, preference, contact, error, utcnow())
            await writes.write(session)

    def _dispatch_held(
        self,
        writes: _Writes,
        notification: Notification,
        application: TrackedApplication | None,
        preference: Preference | None,
        contact: Contact | None,
        error: str | None,
        now: dt.datetime,
    ) -> None:
        """A held notification: into the inbox, then one delivery per push channel with an address on file (its rows
        and events added to ``writes``)."""
        if notification.status == NotificationStatus.COLLECTING.value:
            if withdrawn(application, notification.kind):
                notification.status = NotificationStatus.SUPPRESSED.value
                notification.last_error = "application withdrawn"
                _release(notification)
                return
            self._release_to_inbox(writes, notification, now)
        if withdrawn(application, notification.kind):
            notification.status = NotificationStatus.DISPATCHED.value
            _release(notification)
            return
        if error is not None:
            notification.step_attempts += 1
            notification.last_error = error
            notification.next_step_at = now + dt.timedelta(
                seconds=backoff(
                    notification.step_attempts,
                    base=self.settings.retry_base_seconds,
                    cap=self.settings.retry_max_seconds,
                )
            )
            _release(notification)
            log.warning("contact lookup failed; will retry", extra={"notification_id": str(notification.id)})
            return
        notification.language = effective_language(preference, contact, notification.language)
        for channel in effective_channels(preference, contact):
            if not _address(contact, channel):
                continue  # no address on file for it: the inbox copy is what the resident gets
            due = now
            if channel == ResidentChannel.SMS.value:
                due = sms_quiet_until(preference, now, self.settings.timezone) or now
            writes.delivery(notification, channel, DeliveryStatus.PENDING.value, now, due=due)
        notification.status = NotificationStatus.DISPATCHED.value
        notification.last_error = None
        _release(notification)

    def _release_to_inbox(self, writes: _Writes, notification: Notification, now: dt.datetime) -> None:
        notification.status = NotificationStatus.READY.value
        notification.released_at = now
        writes.delivery(notification, ResidentChannel.INBOX.value, DeliveryStatus.SENT.value, now, attempts=1,
                        sent_at=now)  # fmt: skip
        writes.emit(self._sent(_About.of(notification), ResidentChannel.INBOX.value, notification.language))

    # ------------------------------------------------------------------------------------------ 2. send

    async def send_all(self, delivery_ids: Sequence[uuid.UUID], token: str) -> None:
        """Send a claimed batch: what is to go out read in one transaction (the withdrawn suppressed, SMS in quiet
        hours put off), each message rendered and sent outside any transaction, the outcomes written in one."""
        async with self.db.session() as session:
            repo = Repository(session)
            held = await repo.held_all(Delivery, delivery_ids, token)
            applications = await repo.applications_by_id(
                [d.notification.application_id for d in held.values() if d.notification.application_id is not None]
            )
            preferences = await repo.preferences([d.resident_id for d in held.values()])
            now = utcnow()
            sends = []
            for delivery_id in delivery_ids:
                delivery = held.get(delivery_id)
                if delivery is None:
                    continue
                application_id = delivery.notification.application_id
                application = applications.get(application_id) if application_id is not None else None
                send = self._to_send(delivery, application, preferences.get(delivery.resident_id), now)
                if send is not None:
                    sends.append(send)
        if not sends:
            return
        contacts = await self._contacts([s.resident_id for s in sends])
        limit = asyncio.Semaphore(self.settings.worker_concurrency)

        async def attempt(send: _Send) -> _Outcome | None:
            async with limit:
                try:
                    return await self._attempt(send, contacts[send.resident_id])
                except Exception:
                    # The claim runs out and the row is tried again; the error is logged without personal data.
                    log.exception("delivery step failed", extra={"row": str(send.delivery_id)})
                    return None

        outcomes = [o for o in await asyncio.gather(*(attempt(s) for s in sends)) if o is not None]
        if outcomes:
            await self._record_all(outcomes, token)

    async def send(self, delivery_id: uuid.UUID, token: str) -> None:
        """Send one delivery on its own (when its batch failed)."""
        now = utcnow()
        async with self.db.session() as session:
            repo = Repository(session)
            delivery = await repo.held(Delivery, delivery_id, token)
            if delivery is None:
                return
            application = await repo.find_application(delivery.notification.application_id)
            preference = await repo.preference(delivery.resident_id)
            send = self._to_send(delivery, application, preference, now)
        if send is not None:
            contacts = await self._contacts([send.resident_id])
            await self._record_one(await self._attempt(send, contacts[send.resident_id]), token)

    def _to_send(
        self,
        delivery: Delivery,
        application: TrackedApplication | None,
        preference: Preference | None,
        now: dt.datetime,
    ) -> _Send | None:
        """What a held delivery is to send, or None when it is not to go out now (recorded on the row)."""
        notification = delivery.notification
        if withdrawn(application, notification.kind):
            delivery.status = DeliveryStatus.SUPPRESSED.value
            delivery.last_error = "application withdrawn"
            delivery.updated_at = now
            _release(delivery)
            return None
        if delivery.channel == ResidentChannel.SMS.value:
            quiet = sms_quiet_until(preference, now, self.settings.timezone)
            if quiet is not None:
                delivery.next_attempt_at = quiet  # not an attempt: it simply waits for the morning
                delivery.updated_at = now
                _release(delivery)
                return None
        fallback_language = notification.language
        return _Send(
            delivery_id=delivery.id,
            resident_id=delivery.resident_id,
            channel=delivery.channel,
            message=message_input(notification, fallback_language),
            preference=preference,
            fallback_language=fallback_language,
            about=_About.of(notification),
        )

    async def _attempt(self, send: _Send, found: Contact | str | None) -> _Outcome:
        """Render and send one message (outside any transaction) to the resident's contact (``found``: or why it
        could not be had)."""
        try:
            if isinstance(found, str):
                raise ContactUnavailable(found)
            contact = found
            address = _address(contact, send.channel)
            if address is None:
                raise ChannelError(f"no {send.channel} address on file", permanent=True)
            language = effective_language(send.preference, contact, send.fallback_language)
            message = send.message
            told = MessageInput(message.kind, language, message.application_id, message.items)
            printed = await self._deliver(send.delivery_id, send.channel, address, told, language, contact)
        except (ChannelError, ContactUnavailable) as exc:
            permanent = isinstance(exc, ChannelError) and exc.permanent
            return _Outcome(send.delivery_id, send.channel, send.about, error=redact(str(exc)), permanent=permanent)
        return _Outcome(send.delivery_id, send.channel, send.about, language=language, printed=printed)

    async def _record_all(self, outcomes: Sequence[_Outcome], token: str) -> None:
        """The outcomes of a batch in one transaction; should it fail, each in its own."""
        try:
            async with self.db.session() as session:
                await self._record(Repository(session), outcomes, token)
        except Exception:
            log.exception("recording a batch of deliveries failed; recording them one by one")
            for outcome in outcomes:
                try:
                    await self._record_one(outcome, token)
                except Exception:
                    log.exception("recording a delivery failed", extra={"row": str(outcome.delivery_id)})

    async def _record_one(self, outcome: _Outcome, token: str) -> None:
        async with self.db.session() as session:
            await self._record(Repository(session), [outcome], token)

    async def _record(self, repo: Repository, outcomes: Sequence[_Outcome], token: str) -> None:
        """The sent are recorded in one UPDATE of the rows on which this worker's claim still stands (under load
        nearly every outcome: reading the rows back and writing each through the ORM was most of the step's cost);
        the failures on the rows read, each as its attempts count says."""
        now = utcnow()
        sent = [o.delivery_id for o in outcomes if o.error is None]
        recorded = await repo.record_sent(sent, token, now) if sent else set()
        failed = [o.delivery_id for o in outcomes if o.error is not None]
        held = await repo.held_all(Delivery, failed, token) if failed else {}
        writes = _Writes(self.outbox)
        for outcome in outcomes:  # the events in the order of the outcomes
            if outcome.error is None:
                if outcome.delivery_id not in recorded:
                    log.error("a sent delivery lost its claim", extra={"delivery_id": str(outcome.delivery_id)})
                    continue
                assert outcome.language is not None
                if outcome.printed is not None:  # handed to the post room: listed for the office to print and post
                    repo.session.add(_letter(outcome, outcome.printed, outcome.language, now))
                writes.emit(self._sent(outcome.about, outcome.channel, outcome.language))
                self._count(outcome.channel, "sent")
            elif (delivery := held.get(outcome.delivery_id)) is not None:
                self._record_failure(writes, delivery, outcome.error, permanent=outcome.permanent)
        await writes.write(repo.session)

    async def _deliver(
        self,
        delivery_id: uuid.UUID,
        channel: str,
        address: str,
        message: MessageInput,
        language: str,
        contact: Contact | None,
    ) -> PrintedLetter | None:
        """Render ``message`` as ``channel`` needs it (a text message: its SMS text alone) and send it."""
        if channel == ResidentChannel.EMAIL.value:
            rendered = self.renderer.email(message)
            email = build_email(
                self.settings, to=address, rendered=rendered, delivery_id=delivery_id, language=language
            )
            await self.senders.email.send(email)
        elif channel == ResidentChannel.POST.value:
            assert contact is not None  # _address found the postal address
            assert contact.postal_name is not None
            return await self.senders.post.print(
                delivery_id=delivery_id,
                recipient=Recipient(name=contact.postal_name, address=address),
                rendered=self.renderer.text(message),
                language=language,
                day=self.clock.today(),
            )
        else:
            text = self.renderer.sms(message)
            await self.senders.sms.send(delivery_id=delivery_id, to=address, text=text, language=language)
        return None

    def _record_failure(self, writes: _Writes, delivery: Delivery, error: str, *, permanent: bool) -> None:
        now = utcnow()
        delivery.attempts += 1
        delivery.last_error = error[:1000]
        delivery.updated_at = now
        dead = permanent or delivery.attempts >= self.settings.delivery_max_attempts
        if dead:
            delivery.status = DeliveryStatus.DEAD.value
        else:
            delivery.status = DeliveryStatus.FAILED.value
            delivery.next_attempt_at = now + dt.timedelta(
                seconds=backoff(
                    delivery.attempts, base=self.settings.retry_base_seconds, cap=self.settings.retry_max_seconds
                )
            )
        _release(delivery)
        self._count(delivery.channel, "dead" if dead else "failed")
        log.warning(
            "delivery failed",
            extra={"delivery_id": str(delivery.id), "channel": delivery.channel, "attempt": delivery.attempts,
                   "dead": dead, "error": error[:200]},
        )  # fmt: skip
        # Tell intake's status on the first failure and when giving up, not on every retry in between.
        if dead or delivery.attempts == 1:
            notification = delivery.notification
            writes.emit(
                NotificationFailed(
                    notification_id=notification.id,
                    resident_id=notification.resident_id,
                    application_id=notification.application_id,
                    source_event_ids=notification.source_event_ids,
                    channel=delivery.channel,
                    template=notification.kind,
                    attempts=delivery.attempts,
                    error=error[:500],
                    dead=dead,
                    failed_at=now,
                ),
            )

    # ------------------------------------------------------------------------------------------ helpers

    def _count(self, channel: str, result: str) -> None:
        if self.attempts is not None:
            self.attempts.labels(transport="resident", channel=channel, result=result).inc()

    def _sent(self, about: _About, channel: str, language: str) -> NotificationSent:
        return NotificationSent(
            notification_id=about.notification_id,
            resident_id=about.resident_id,
            application_id=about.application_id,
            source_event_ids=list(about.source_event_ids),
            channel=channel,
            template=about.kind,
            language=Language(language if language in ("ko", "en") else "ko"),
            sent_at=utcnow(),
        )


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")


def redact(text: str) -> str:
    """An error as we keep and publish it: without the email addresses or phone numbers a server may have quoted."""

    def phone(match: re.Match[str]) -> str:
        return "<phone>" if sum(c.isdigit() for c in match.group()) >= 9 else match.group()

    return _PHONE.sub(phone, _EMAIL.sub("<email>", text))


def _letter(outcome: _Outcome, printed: PrintedLetter, language: str, now: dt.datetime) -> Letter:
    about = outcome.about
    return Letter(
        id=outcome.delivery_id,
        notification_id=about.notification_id,
        resident_id=about.resident_id,
        kind=about.kind,
        language=language,
        file_name=printed.file_name,
        pages=printed.pages,
        status=LetterStatus.TO_SEND.value,
        created_at=now,
    )


def _release(row: Notification | Delivery) -> None:
    row.claim_token = None
    row.claimed_until = None


def _address(contact: Contact | None, channel: str) -> str | None:
    if contact is None:
        return None
    if channel == ResidentChannel.EMAIL.value:
        return contact.email
    if channel == ResidentChannel.SMS.value:
        return contact.phone
    if channel == ResidentChannel.POST.value and contact.postal_name:
        return contact.postal_address
    return None


async def retry(repo: Repository, delivery_id: uuid.UUID) -> Delivery:
    """An administrator's retry of a dead or failed delivery: a fresh round of attempts, due now. Not while a worker
    is attempting it (409)."""
    delivery = await repo.notification_delivery(delivery_id)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id}.")
    if delivery.status not in (DeliveryStatus.DEAD.value, DeliveryStatus.FAILED.value):
        raise Conflict(f"The delivery is {delivery.status}; only dead or failed deliveries can be retried.")
    now = utcnow()
    if delivery.claimed_until is not None and delivery.claimed_until > now:
        raise Conflict("The delivery is being attempted right now.")
    await repo.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            claim_token=None,
            claimed_until=None,
            updated_at=now,
        )
    )
    await repo.session.refresh(delivery)
    mark_work(repo.session)
    return delivery
