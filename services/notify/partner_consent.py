"""Each resident's consent to partners, as the partners' consumer keeps it, and what withdrawing it stops at once.

The purposes (intake validates them; ``shared.events.ConsentChanged`` documents them):
- ``partner:<partner id>``: the partner receives the events about the resident of every type it is granted;
- ``partner:<partner id>:<event type>``: the partner receives the events of that type only.
Either is enough for a type; without one, nothing about the resident reaches the partner (an aggregate, which names
no resident, needs none).

The partners' consumer handles ``consent.changed`` itself, in stream order with the events it fans out, so an event
intake emitted after the consent is judged by it. A newer version replaces the whole set; a late older one changes
nothing.

When a consent no longer covers what is queued for a partner about the resident, it is dropped in the same
transaction, and the drop recorded with status ``withdrawn`` and the time (no payload is kept):
- webhook deliveries not delivered yet (pending, or failed and waiting for a retry). One a worker is posting at that
  very moment cannot be recalled: it is recorded ``sent`` if the partner took it;
- NATS copies still waiting in the outbox. The relay publishes within moments of the commit, so these are the copies
  held up by a slow or unreachable NATS. The drop is recorded on the partner's NATS subscription as a delivery with
  transport ``nats``. One gap remains: a copy the relay had already read, and is publishing at that very moment, goes
  out although its row is deleted and the drop recorded (the relay, shared by every service, takes no row locks).
Nothing already delivered is recalled: the partner is told through its agreement, not through the feed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.models import (
    DeliveryStatus,
    PartnerConsent,
    Transport,
    WebhookDelivery,
    utcnow,
)
from services.notify.repository import Repository
from shared.events import CloudEvent, ConsentChanged

WITHDRAWN_NOTE = "the resident withdrew their consent to this partner"


def partner_purposes(consents: dict[str, bool]) -> list[str]:
    """The partner purposes granted in a resident's full consent set."""
    return sorted(p for p, granted in consents.items() if granted and p.startswith("partner:"))


def covers(consent: PartnerConsent | None, partner_id: str, event_type: str) -> bool:
    return consent is not None and consent.covers(partner_id, event_type)


def withdraw(delivery: WebhookDelivery, now: dt.datetime) -> None:
    """Not sent, on purpose, and nothing about the resident kept for the partner."""
    delivery.status = DeliveryStatus.WITHDRAWN.value
    delivery.withdrawn_at = now
    delivery.updated_at = now
    delivery.payload = ""
    delivery.last_error = WITHDRAWN_NOTE


@dataclass(frozen=True)
class QueuedCopy:
    """A partner's NATS copy waiting in the outbox."""

    row_id: int
    partner_id: str
    event_type: str
    event_id: str
    resident_id: uuid.UUID | None


def queued_copy(prefix: str, row_id: int, subject: str, payload: str) -> QueuedCopy | None:
    """What an outbox row on ``<prefix>.partner.<partner id>.<event type>`` carries (None for any other row)."""
    partner_id, _, event_type = subject.removeprefix(f"{prefix}.partner.").partition(".")
    if not event_type:
        return None
    envelope = CloudEvent.model_validate(orjson.loads(payload))
    raw: Any = envelope.data.get("resident_id")
    return QueuedCopy(row_id, partner_id, event_type, envelope.id, uuid.UUID(str(raw)) if raw else None)


class PartnerConsents:
    """The partners' consumer's handler of ``consent.changed``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def consent_changed(self, session: AsyncSession, event: CloudEvent, data: ConsentChanged) -> None:
        repo = Repository(session)
        consent = await repo.partner_consent(data.resident_id)
        if data.version <= consent.version:
            return  # a late, older set (or this one again) never overrides a newer one
        consent.purposes = partner_purposes(data.consents)
        consent.version = data.version
        consent.updated_at = utcnow()
        await self.drop_uncovered(repo, consent)

    async def drop_uncovered(self, repo: Repository, consent: PartnerConsent) -> None:
        """Drop, and record, what is queued about the resident for a partner their consent no longer covers."""
        now = utcnow()
        for delivery in await repo.queued_deliveries_about(consent.resident_id):
            if not consent.covers(delivery.partner_id, delivery.event_type):
                withdraw(delivery, now)
        dropped: list[QueuedCopy] = []
        # Only the rows not published yet: the relay's backlog, normally a handful.
        for row_id, subject, payload in await repo.queued_partner_copies(self.prefix):
            copy = queued_copy(self.prefix, row_id, subject, payload)
            if copy is None or copy.resident_id != consent.resident_id:
                continue
            if not consent.covers(copy.partner_id, copy.event_type):
                dropped.append(copy)
        if not dropped:
            return
        gone = set(await repo.drop_queued_outbox_rows([c.row_id for c in dropped]))
        for copy in dropped:
            if copy.row_id in gone:
                await self._record_nats_drop(repo, copy, consent.resident_id, now)

    async def _record_nats_drop(
        self, repo: Repository, copy: QueuedCopy, resident_id: uuid.UUID, now: dt.datetime
    ) -> None:
        subscription = await repo.nats_subscription_of(copy.partner_id, copy.event_type)
        if subscription is None or await repo.webhook_delivery_exists(subscription.id, copy.event_id):
            return
        record = WebhookDelivery(
            id=uuid.uuid4(),
            subscription_id=subscription.id,
            partner_id=copy.partner_id,
            transport=Transport.NATS.value,
            event_id=copy.event_id,
            event_type=copy.event_type,
            resident_id=resident_id,
            payload="",
            status=DeliveryStatus.WITHDRAWN.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        withdraw(record, now)
        repo.session.add(record)
        await repo.session.flush()
