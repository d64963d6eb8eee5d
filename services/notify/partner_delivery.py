"""Delivering partner webhooks in the background: at least once, in order per subscription, with retries.

Only the first unfinished delivery of each active subscription is due (the next waits until it was delivered or gave
up). A failed attempt is retried with exponential backoff and jitter; after ``webhook_max_attempts`` the delivery is
``dead`` and the queue moves on (the partner can ask for it again: ``POST /v1/deliveries/{id}/redeliver``). After
``webhook_pause_after_failures`` failed attempts in a row the subscription is paused; its deliveries keep queueing
until the partner or an administrator resumes it.

Before every attempt the worker checks again what may have changed since the delivery was queued: the grant (revoked:
``cancelled``; a purpose that no longer needs amounts: they are taken out), and the resident's consent to the partner
(withdrawn: ``withdrawn``, nothing kept). A withdrawal that arrives while an attempt is on its way cannot recall it: if
the partner took it, it is recorded ``sent``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import httpx
from prometheus_client import Counter

from services.notify.models import RETRYABLE, DeliveryStatus, GrantPurpose, SubscriptionStatus, WebhookDelivery, utcnow
from services.notify.partner_consent import covers, withdraw
from services.notify.partners import shaped_for
from services.notify.repository import Repository, new_claim_token
from services.notify.schedule import backoff
from services.notify.settings import NotifySettings
from services.notify.webhooks import AddressPolicy, Attempt, post
from shared.db import Database

log = logging.getLogger(__name__)


class PartnerDelivery:
    def __init__(
        self, *, db: Database, settings: NotifySettings, client: httpx.AsyncClient, attempts: Counter | None = None
    ) -> None:
        self.db = db
        self.attempts = attempts
        self.settings = settings
        self.client = client
        self.policy = AddressPolicy.from_settings(
            settings.webhook_forbidden_networks, settings.webhook_allowed_networks
        )
        self.lease = dt.timedelta(seconds=max(settings.claim_lease_seconds, settings.webhook_timeout_seconds * 3))

    async def run_once(self) -> int:
        token = new_claim_token()
        async with self.db.session() as session:
            seqs = await Repository(session).claim_webhook_heads(
                token, now=utcnow(), lease=self.lease, limit=self.settings.worker_batch_size
            )
        if not seqs:
            return 0
        limit = asyncio.Semaphore(self.settings.worker_concurrency)

        async def one(seq: int) -> None:
            async with limit:
                try:
                    await self.deliver(seq, token)
                except Exception:
                    log.exception("webhook delivery step failed", extra={"seq": seq})

        await asyncio.gather(*(one(s) for s in seqs))
        return len(seqs)

    async def deliver(self, seq: int, token: str) -> None:
        now = utcnow()
        async with self.db.session() as session:
            repo = Repository(session)
            delivery = await repo.held_webhook_delivery(seq, token)
            if delivery is None:
                return
            if delivery.status not in RETRYABLE:
                _release(delivery)  # withdrawn (or cancelled) after it was claimed
                return
            subscription = await repo.subscription(delivery.subscription_id)
            if subscription is None or subscription.status != SubscriptionStatus.ACTIVE.value or not subscription.url:
                _release(delivery)  # paused or deleted meanwhile: it waits (or was cancelled with the subscription)
                return
            purpose = await repo.grant_purpose(delivery.partner_id, delivery.event_type)
            if purpose is None:
                delivery.status = DeliveryStatus.CANCELLED.value
                delivery.last_error = "the grant for this event type was revoked"
                delivery.updated_at = now
                _release(delivery)
                return
            if delivery.resident_id is not None:
                consent = await repo.find_partner_consent(delivery.resident_id)
                if not covers(consent, delivery.partner_id, delivery.event_type):
                    withdraw(delivery, now)
                    _release(delivery)
                    return
            delivery.payload = shaped_for(delivery.payload, GrantPurpose(purpose))
            url, body, msg_id = subscription.url, delivery.payload.encode(), f"msg_{delivery.id.hex}"
            signing = subscription.signing_secrets(now)
        attempt = await post(
            self.client,
            url,
            msg_id=msg_id,
            body=body,
            signing_secrets=signing,
            policy=self.policy,
            timeout=self.settings.webhook_timeout_seconds,
        )
        await self._record(seq, token, attempt)

    async def _record(self, seq: int, token: str, attempt: Attempt) -> None:
        s = self.settings
        async with self.db.session() as session:
            repo = Repository(session)
            delivery = await repo.held_webhook_delivery(seq, token)
            if delivery is None:
                log.error("a webhook attempt lost its claim", extra={"seq": seq})
                return
            subscription = await repo.subscription(delivery.subscription_id, for_update=True)
            now = utcnow()
            delivery.attempts += 1
            delivery.last_status_code = attempt.status_code
            delivery.updated_at = now
            _release(delivery)
            if delivery.status == DeliveryStatus.WITHDRAWN.value:
                # Withdrawn while the attempt was on its way: what the partner took is recorded as sent; what it did
                # not stays withdrawn and is not tried again.
                if attempt.ok:
                    delivery.status = DeliveryStatus.SENT.value
                    delivery.delivered_at = now
                    delivery.withdrawn_at = None
                    delivery.last_error = "sent while the resident withdrew their consent"
                return
            if self.attempts is not None:
                result = "sent" if attempt.ok else "dead" if delivery.attempts >= s.webhook_max_attempts else "failed"
                self.attempts.labels(transport="webhook", channel="webhook", result=result).inc()
            if attempt.ok:
                delivery.status = DeliveryStatus.SENT.value
                delivery.delivered_at = now
                delivery.last_error = None
                if subscription is not None:
                    subscription.consecutive_failures = 0
                return
            delivery.last_error = attempt.error
            if delivery.attempts >= s.webhook_max_attempts:
                delivery.status = DeliveryStatus.DEAD.value
            else:
                delivery.status = DeliveryStatus.FAILED.value
                delivery.next_attempt_at = now + dt.timedelta(
                    seconds=backoff(
                        delivery.attempts, base=s.webhook_retry_base_seconds, cap=s.webhook_retry_max_seconds
                    )
                )
            if subscription is not None:
                subscription.consecutive_failures += 1
                if (
                    subscription.status == SubscriptionStatus.ACTIVE.value
                    and subscription.consecutive_failures >= s.webhook_pause_after_failures
                ):
                    subscription.status = SubscriptionStatus.PAUSED.value
                    subscription.paused_at = now
                    subscription.paused_reason = (
                        f"{subscription.consecutive_failures} failed attempts in a row; last: {attempt.error}"
                    )
                    subscription.updated_at = now
                    log.warning("webhook subscription paused", extra={"subscription_id": str(subscription.id)})


def _release(delivery: WebhookDelivery) -> None:
    delivery.claim_token = None
    delivery.claimed_until = None
