"""The subscription lifecycle's rules where the API tests do not reach them: pausing what is paused, resuming what is
active, a rotation without a grace period, and the redeliveries that are refused (also of what a resident's withdrawn
consent stopped). Domain functions on a real database (SQLite and PostgreSQL), in transactions as a request would run
them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import partners, subscriptions
from services.notify.main import MIGRATIONS
from services.notify.models import DeliveryStatus, Subscription, SubscriptionStatus, WebhookDelivery, utcnow
from services.notify.notifications import WORK_PENDING
from services.notify.repository import Repository
from services.notify.schemas import GrantIn, RotateSecretIn, SubscriptionIn
from services.notify.settings import NotifySettings
from shared.auth import Principal, Role
from shared.db import Database
from shared.migrations import upgrade
from shared.problems import Conflict, NotFound

BANK_ID = "hanbit-bank"
BANK = Principal(subject=f"partner:{BANK_ID}", role=Role.PARTNER, partner_id=BANK_ID)
NGO = Principal(subject="partner:saebom-ngo", role=Role.PARTNER, partner_id="saebom-ngo")
ADMIN = Principal(subject="admin-1", role=Role.ADMIN)
GRACE_SECONDS = 3600.0


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade(database_url, MIGRATIONS)
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings(database_url: str) -> NotifySettings:
    return NotifySettings(
        database_url=database_url,
        webhook_allowed_networks=["127.0.0.1/32"],
        webhook_secret_grace_seconds=GRACE_SECONDS,
    )


async def subscribe(db: Database, settings: NotifySettings, transport: str = "webhook") -> uuid.UUID:
    url = "http://127.0.0.1:9/hooks" if transport == "webhook" else None
    async with db.session() as session:
        repo = Repository(session)
        await partners.set_grants(repo, ADMIN, BANK_ID, [GrantIn(event_type="case.decided", purpose="payment")])
        created = await subscriptions.create(
            repo, settings, BANK, SubscriptionIn(transport=transport, url=url, event_types=["case.decided"])
        )
        return created.id


async def webhook_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery:
    found = await session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id))
    assert found is not None
    return found


async def queue(db: Database, subscription_id: uuid.UUID, **columns: object) -> uuid.UUID:
    """A webhook delivery of the subscription, as the fan-out and the worker would have left it."""
    now = utcnow()
    delivery = WebhookDelivery(**{
        "id": uuid.uuid4(), "subscription_id": subscription_id, "partner_id": BANK_ID, "event_id": str(uuid.uuid4()),
        "event_type": "case.decided", "payload": "{}", "status": DeliveryStatus.PENDING.value, "attempts": 0,
        "next_attempt_at": now, "created_at": now, "updated_at": now, **columns,
    })  # fmt: skip
    async with db.session() as session:
        session.add(delivery)
    return delivery.id


async def test_pausing_a_paused_subscription_keeps_why_and_when_it_was_paused(
    db: Database, settings: NotifySettings
) -> None:
    subscription_id = await subscribe(db, settings)
    async with db.session() as session:
        paused = await subscriptions.pause(Repository(session), BANK, subscription_id)
        assert (paused.status, paused.paused_reason) == ("paused", "paused on request")
        first = (paused.paused_at, paused.updated_at)
        # The worker paused it meanwhile, for its own reason (services/notify/partner_delivery.py).
        paused.paused_reason = "30 failed attempts in a row; last: HTTP 500"

    async with db.session() as session:
        again = await subscriptions.pause(Repository(session), ADMIN, subscription_id)
        assert again.status == SubscriptionStatus.PAUSED.value
        assert again.paused_reason == "30 failed attempts in a row; last: HTTP 500"
        assert (again.paused_at, again.updated_at) == first


async def test_resuming_an_active_subscription_changes_nothing_and_wakes_no_delivery(
    db: Database, settings: NotifySettings
) -> None:
    subscription_id = await subscribe(db, settings)
    backing_off = utcnow() + dt.timedelta(hours=1)
    delivery_id = await queue(db, subscription_id, status=DeliveryStatus.FAILED.value, attempts=2,
                              next_attempt_at=backing_off)  # fmt: skip
    async with db.session() as session:
        subscription = await session.get(Subscription, subscription_id)
        assert subscription is not None
        subscription.consecutive_failures = 2

    async with db.session() as session:
        resumed = await subscriptions.resume(Repository(session), BANK, subscription_id)
        assert (resumed.status, resumed.consecutive_failures) == ("active", 2)
        assert not session.info.get(WORK_PENDING), "no worker is woken for nothing"
    async with db.session() as session:
        delivery = await webhook_delivery(session, delivery_id)
        assert delivery.next_attempt_at == backing_off, "its backoff still holds"

    # Resuming a paused one, by contrast, starts afresh: the failure count is cleared and the queue's head is due now.
    async with db.session() as session:
        await subscriptions.pause(Repository(session), BANK, subscription_id)
    async with db.session() as session:
        resumed = await subscriptions.resume(Repository(session), BANK, subscription_id)
        assert (resumed.status, resumed.consecutive_failures, resumed.paused_at) == ("active", 0, None)
        assert session.info.get(WORK_PENDING)
    async with db.session() as session:
        delivery = await webhook_delivery(session, delivery_id)
        assert delivery.next_attempt_at <= utcnow()


async def test_a_rotation_keeps_the_old_secret_signing_only_for_a_grace_period(
    db: Database, settings: NotifySettings
) -> None:
    subscription_id = await subscribe(db, settings)
    async with db.session() as session:
        original = (await subscriptions.visible(Repository(session), BANK, subscription_id)).secret
        rotated = await subscriptions.rotate_secret(Repository(session), settings, BANK, subscription_id, None)
        assert rotated.secret not in (None, original)
        assert rotated.previous_secret == original
        assert rotated.previous_secret_expires_at is not None
        now = utcnow()
        assert rotated.signing_secrets(now) == [rotated.secret, original]
        after_grace = now + dt.timedelta(seconds=GRACE_SECONDS + 1)
        assert rotated.signing_secrets(after_grace) == [rotated.secret]

    async with db.session() as session:
        second = await subscriptions.visible(Repository(session), BANK, subscription_id)
        before = second.secret
        at_once = await subscriptions.rotate_secret(
            Repository(session), settings, BANK, subscription_id, RotateSecretIn(grace_seconds=0)
        )
        assert (at_once.previous_secret, at_once.previous_secret_expires_at) == (None, None)
        assert at_once.secret != before
        assert at_once.signing_secrets(utcnow()) == [at_once.secret]


async def test_a_nats_subscription_has_no_secret_to_rotate(db: Database, settings: NotifySettings) -> None:
    subscription_id = await subscribe(db, settings, transport="nats")
    async with db.session() as session:
        with pytest.raises(Conflict) as refused:
            await subscriptions.rotate_secret(Repository(session), settings, BANK, subscription_id, None)
        assert refused.value.status == 409
    async with db.session() as session:
        subscription = await subscriptions.visible(Repository(session), BANK, subscription_id)
        assert (subscription.secret, subscription.previous_secret) == (None, None)


async def test_a_delivery_the_residents_withdrawn_consent_stopped_is_never_sent_again(
    db: Database, settings: NotifySettings
) -> None:
    subscription_id = await subscribe(db, settings)
    withdrawn = await queue(db, subscription_id, status=DeliveryStatus.WITHDRAWN.value, payload="",
                            withdrawn_at=utcnow(), resident_id=uuid.uuid4())  # fmt: skip
    for caller in (BANK, ADMIN):
        async with db.session() as session:
            with pytest.raises(Conflict, match="withdrew their consent"):
                await subscriptions.redeliver(Repository(session), caller, withdrawn)
    async with db.session() as session:
        delivery = await webhook_delivery(session, withdrawn)
        assert (delivery.status, delivery.payload) == ("withdrawn", "")


async def test_redelivery_is_refused_while_attempted_and_once_the_subscription_is_deleted(
    db: Database, settings: NotifySettings
) -> None:
    subscription_id = await subscribe(db, settings)
    held = await queue(db, subscription_id, status=DeliveryStatus.FAILED.value, attempts=3, last_error="HTTP 500",
                       claim_token="worker-1", claimed_until=utcnow() + dt.timedelta(minutes=1))  # fmt: skip
    async with db.session() as session:
        repo = Repository(session)
        with pytest.raises(Conflict, match="being attempted"):
            await subscriptions.redeliver(repo, BANK, held)
        with pytest.raises(NotFound):
            await subscriptions.redeliver(repo, NGO, held)  # another partner's delivery does not exist for it

    # The worker's lease ran out (it died): the partner may ask again, and the delivery starts a fresh round.
    async with db.session() as session:
        delivery = await webhook_delivery(session, held)
        delivery.claimed_until = utcnow() - dt.timedelta(seconds=1)
    async with db.session() as session:
        again = await subscriptions.redeliver(Repository(session), BANK, held)
        assert (again.status, again.attempts, again.last_error) == ("pending", 0, None)
        assert session.info.get(WORK_PENDING)

    async with db.session() as session:
        await subscriptions.delete(Repository(session), BANK, subscription_id)
    async with db.session() as session:
        with pytest.raises(Conflict, match="deleted"):
            await subscriptions.redeliver(Repository(session), ADMIN, held)
        delivery = await webhook_delivery(session, held)
        assert delivery.status == DeliveryStatus.CANCELLED.value, "cancelled with the subscription"
        with pytest.raises(NotFound):
            await subscriptions.visible(Repository(session), ADMIN, subscription_id)
        subscription = await session.get(Subscription, subscription_id)
        assert subscription is not None
        assert (subscription.secret, subscription.previous_secret) == (None, None), "its secrets are forgotten"
