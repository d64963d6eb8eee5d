"""A partner's subscriptions, from creation to deletion, and a webhook delivery sent again on request.

Kept apart from partners.py, which holds what an administrator grants and the fan-out of each event to the
subscriptions covering it: this module is the lifecycle a partner drives over the API, and what a subscription row
is made of (the seed builds its NATS subscriptions here too). The grant rules it relies on (which event types exist
and are partner-visible, which the partner is granted) stay in partners.py, beside the grants they guard.

Rules:
- A subscription is seen by its partner and by administrators; to anyone else it does not exist (404). A deleted one
  is seen by no one.
- A webhook subscription needs an http(s) URL that passes the safety check (services/notify/webhooks.py); a NATS one
  has none. Either covers only event types the partner is granted (403 naming the missing ones).
- Pausing an active subscription stops sending (its deliveries queue up); resuming a paused one sends the queue in
  order, starting now. Pausing what is paused, or resuming what is active, changes nothing.
- A new signing secret replaces the old one, which keeps signing for a grace period (settings, or the request's).
- Deleting cancels what is queued and forgets the secrets.
- A delivery the resident's withdrawn consent stopped is never sent again.
"""

from __future__ import annotations

import datetime as dt
import uuid

from services.notify.models import (
    RETRYABLE,
    DeliveryStatus,
    Subscription,
    SubscriptionStatus,
    Transport,
    WebhookDelivery,
    utcnow,
)
from services.notify.notifications import PARTNER_WORK, mark_work
from services.notify.partners import check_event_types, require_granted
from services.notify.repository import Repository
from services.notify.schemas import RotateSecretIn, SubscriptionIn
from services.notify.settings import NotifySettings
from services.notify.webhooks import AddressPolicy, UnsafeUrl, check_url, new_secret
from shared.auth import Principal
from shared.events import partner_subject
from shared.problems import Conflict, NotFound, UnprocessableContent


def new_subscription(
    *,
    partner_id: str,
    transport: Transport,
    event_types: list[str],
    url: str | None,
    description: str | None,
    secret: str | None,
    by: str,
) -> Subscription:
    now = utcnow()
    return Subscription(
        id=uuid.uuid4(),
        partner_id=partner_id,
        transport=transport.value,
        event_types=event_types,
        url=url,
        description=description,
        secret=secret,
        status=SubscriptionStatus.ACTIVE.value,
        consecutive_failures=0,
        created_by=by,
        created_at=now,
        updated_at=now,
    )


def nats_subjects(prefix: str, subscription: Subscription) -> list[str]:
    """Where a NATS subscription's events are published (a webhook subscription has none)."""
    if subscription.transport != Transport.NATS.value:
        return []
    return [partner_subject(prefix, subscription.partner_id, t) for t in subscription.event_types]


# ---------------------------------------------------------------------------------------------- lifecycle


async def create(
    repo: Repository, settings: NotifySettings, principal: Principal, request: SubscriptionIn
) -> Subscription:
    """A new active subscription of the calling partner; a webhook one gets its signing secret."""
    partner_id = principal.partner_id
    assert partner_id is not None  # a partner token always names the partner (shared.auth)
    event_types = check_event_types(request.event_types)
    transport = Transport(request.transport)
    await _check_endpoint(settings, transport, request.url)
    await require_granted(repo, partner_id, event_types)
    subscription = new_subscription(
        partner_id=partner_id,
        transport=transport,
        event_types=event_types,
        url=request.url,
        description=request.description,
        secret=new_secret() if transport is Transport.WEBHOOK else None,
        by=principal.subject,
    )
    repo.session.add(subscription)
    await repo.session.flush()
    return subscription


async def _check_endpoint(settings: NotifySettings, transport: Transport, url: str | None) -> None:
    if transport is Transport.WEBHOOK:
        if url is None:
            raise UnprocessableContent.for_field("url", "a webhook subscription needs a url", type_="missing")
        policy = AddressPolicy.from_settings(settings.webhook_forbidden_networks, settings.webhook_allowed_networks)
        try:
            await check_url(url, policy)
        except UnsafeUrl as exc:
            raise UnprocessableContent.for_field("url", str(exc), type_="forbidden_url") from None
    elif url is not None:
        raise UnprocessableContent.for_field("url", "a NATS subscription has no url", type_="unexpected")


async def visible(
    repo: Repository, principal: Principal, subscription_id: uuid.UUID, *, for_update: bool = True
) -> Subscription:
    """The subscription if the caller may see it (404 otherwise), locked for the change the caller may make (not
    when it is only read: a GET's transaction is read-only)."""
    subscription = await repo.visible_subscription(principal, subscription_id, for_update=for_update)
    if subscription is None:
        raise NotFound(f"No subscription {subscription_id}.")
    return subscription


async def read(repo: Repository, principal: Principal, subscription_id: uuid.UUID) -> Subscription:
    return await visible(repo, principal, subscription_id, for_update=False)


async def pause(repo: Repository, principal: Principal, subscription_id: uuid.UUID) -> Subscription:
    subscription = await visible(repo, principal, subscription_id)
    if subscription.status == SubscriptionStatus.ACTIVE.value:
        now = utcnow()
        subscription.status = SubscriptionStatus.PAUSED.value
        subscription.paused_at = now
        subscription.paused_reason = "paused on request"
        subscription.updated_at = now
    return subscription


async def resume(repo: Repository, principal: Principal, subscription_id: uuid.UUID) -> Subscription:
    """Active again with a clean failure count; the first queued delivery is due now (those after it follow)."""
    subscription = await visible(repo, principal, subscription_id)
    if subscription.status == SubscriptionStatus.PAUSED.value:
        subscription.status = SubscriptionStatus.ACTIVE.value
        subscription.paused_at = None
        subscription.paused_reason = None
        subscription.consecutive_failures = 0
        subscription.updated_at = utcnow()
        await repo.wake_queue_head(subscription.id)
        mark_work(repo.session, PARTNER_WORK)
    return subscription


async def rotate_secret(
    repo: Repository,
    settings: NotifySettings,
    principal: Principal,
    subscription_id: uuid.UUID,
    request: RotateSecretIn | None,
) -> Subscription:
    """A new signing secret; the old one keeps signing for the grace period (none with a grace of 0)."""
    subscription = await visible(repo, principal, subscription_id)
    if subscription.transport != Transport.WEBHOOK.value:
        raise Conflict("Only webhook subscriptions have a signing secret.")
    asked = request.grace_seconds if request is not None else None
    grace_seconds = settings.webhook_secret_grace_seconds if asked is None else float(asked)
    now = utcnow()
    subscription.previous_secret = subscription.secret if grace_seconds > 0 else None
    subscription.previous_secret_expires_at = now + dt.timedelta(seconds=grace_seconds) if grace_seconds > 0 else None
    subscription.secret = new_secret()
    subscription.updated_at = now
    return subscription


async def delete(repo: Repository, principal: Principal, subscription_id: uuid.UUID) -> None:
    """Nothing more is sent: queued deliveries are cancelled, the secrets forgotten."""
    subscription = await visible(repo, principal, subscription_id)
    now = utcnow()
    subscription.status = SubscriptionStatus.DELETED.value
    subscription.deleted_at = now
    subscription.updated_at = now
    subscription.secret = subscription.previous_secret = None
    await repo.cancel_queued_webhooks(subscription.id, "subscription deleted")


# ---------------------------------------------------------------------------------------------- redelivery


async def visible_delivery(
    repo: Repository, principal: Principal, delivery_id: uuid.UUID, *, for_update: bool = False
) -> WebhookDelivery:
    """A webhook delivery if the caller may see it (404 otherwise)."""
    delivery = await repo.visible_webhook_delivery(principal, delivery_id, for_update=for_update)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id}.")
    return delivery


async def redeliver(repo: Repository, principal: Principal, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again, with a fresh round of attempts and in its place in the subscription's order; not while
    it is being attempted, nor for a deleted subscription, nor one the resident's withdrawn consent stopped (409).
    (One sent before a withdrawal is stopped by the worker, which checks the consent again before every attempt.)"""
    delivery = await visible_delivery(repo, principal, delivery_id, for_update=True)
    if delivery.status == DeliveryStatus.WITHDRAWN.value:
        raise Conflict("The resident withdrew their consent; this delivery is not sent again.")
    subscription = await repo.subscription(delivery.subscription_id)
    if subscription is None or subscription.status == SubscriptionStatus.DELETED.value:
        raise Conflict("The subscription was deleted.")
    now = utcnow()
    if delivery.status in RETRYABLE and delivery.claimed_until is not None and delivery.claimed_until > now:
        raise Conflict("The delivery is being attempted right now.")
    delivery.status = DeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.last_error = None
    delivery.updated_at = now
    mark_work(repo.session, PARTNER_WORK)
    return delivery
