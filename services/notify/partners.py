"""Partners: what an administrator granted them, for what purpose, and the events they receive.

This module keeps the grants (with the event-type rules that subscriptions check against them too) and the partners'
consumer: the fan-out of each event to the subscriptions covering it, the residents' consent to partners
(services/notify/partner_consent.py) and the counts of the aggregate feed (services/notify/aggregates.py). The
subscriptions' own lifecycle, which a partner drives over the API, is in services/notify/subscriptions.py.

Who receives what:
- A partner receives an event type only if an administrator granted it (``PUT /v1/partners/{id}/grants``), each
  grant with its stated purpose: ``payment``, ``notification``, ``outreach`` or ``statistics`` (aggregate feeds only).
- An event about a resident reaches a partner only if that resident consented to that partner: ``partner:<id>``
  (every type granted to it) or ``partner:<id>:<event type>`` (that type). Without it the partner gets nothing at
  all, not even a trace in its delivery list. An aggregate (``aggregate.determinations_counted``) names no resident
  and needs no consent.
- What a partner receives is the event's *partner view* (``shared.events.partner_view``: the fields the catalogue
  marks safe, with only the pseudonymous resident id) in a CloudEvents envelope with the original ``id``, ``type``,
  ``source`` and ``time``. Amounts (a program's or a decision's ``amount``) only where the grant's purpose needs
  them, which only ``payment`` does; under any other purpose the key is absent.
- Withdrawing the consent stops delivery at once: what is queued is dropped and recorded ``withdrawn``
  (services/notify/partner_consent.py).

Some events are addressed to one partner (``shared.events.addressee``): a referral of a resident to a partner's
offering goes to that partner alone, if it was granted the type, and never to another partner granted the same type.

Transports:
- NATS: the envelope is published on ``<prefix>.partner.<partner id>.<event type>`` through the outbox (one message
  per partner and event, de-duplicated by JetStream). The partner's NATS user may subscribe to its own subjects only.
- Webhooks: one delivery row per subscription and event, sent in order and signed (see services/notify/webhooks.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.aggregates import count_noted, note_determination
from services.notify.models import (
    DeliveryStatus,
    GrantPurpose,
    Partner,
    PartnerGrant,
    SubscriptionStatus,
    Transport,
    WebhookDelivery,
    utcnow,
)
from services.notify.notifications import PARTNER_WORK, mark_work
from services.notify.partner_consent import PartnerConsents, covers
from services.notify.repository import Repository
from services.notify.schemas import GrantIn
from services.notify.settings import NotifySettings
from shared.auth import Principal
from shared.consumer import named_id
from shared.events import (
    CATALOGUE,
    PARTNER_VISIBLE_TYPES,
    RESIDENT_PARTNER_TYPES,
    TYPE_PREFIX,
    CloudEvent,
    ConsentChanged,
    EligibilityDetermined,
    EventData,
    addressee,
    partner_subject,
    partner_view,
    without_amounts,
)
from shared.outbox import Outbox
from shared.problems import Forbidden, NotFound, UnprocessableContent

PARTNER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,39}$"
_PARTNER_ID = re.compile(PARTNER_ID_PATTERN)
# Outbox rows for partners need their own ids: one event goes to several partners under the same CloudEvents id.
_PARTNER_OUTBOX_NAMESPACE = uuid.UUID("0f9a3c52-6d1e-4b8e-9a57-5d2b51f7c1a0")


def valid_partner_id(partner_id: str) -> bool:
    """Partner ids become NATS subject tokens and user names: lower-case letters, digits, '-' and '_' only."""
    return bool(_PARTNER_ID.match(partner_id))


def partner_visible_type(raw: str, field: str) -> str:
    """The catalogue name of a partner-visible type; 422 naming ``field`` otherwise."""
    name = raw.removeprefix(TYPE_PREFIX)
    if name not in CATALOGUE:
        raise UnprocessableContent.for_field(field, f"unknown event type '{raw}'", type_="unknown")
    if name not in PARTNER_VISIBLE_TYPES:
        raise UnprocessableContent.for_field(field, f"'{name}' is not partner-visible", type_="not_partner_visible")
    return name


def check_event_types(event_types: list[str], field: str = "event_types") -> list[str]:
    """Catalogue names of partner-visible types, de-duplicated in order; 422 naming the first bad one."""
    out: list[str] = []
    for index, raw in enumerate(event_types):
        name = partner_visible_type(raw, f"{field}[{index}]")
        if name not in out:
            out.append(name)
    return out


# ---------------------------------------------------------------------------------------------- grants


async def visible(repo: Repository, principal: Principal, partner_id: str) -> Partner:
    """A partner, for an administrator or the partner itself (404 otherwise)."""
    partner = await repo.visible_partner(principal, partner_id)
    if partner is None:
        raise NotFound(f"No partner {partner_id}.")
    return partner


def check_grants(grants: list[GrantIn], field: str = "grants") -> dict[str, GrantPurpose]:
    """Event type -> purpose; 422 naming the first grant whose type is unknown, not partner-visible or given twice,
    or whose purpose does not fit it (``statistics`` is for aggregate feeds, which name no resident)."""
    out: dict[str, GrantPurpose] = {}
    for index, grant in enumerate(grants):
        name = partner_visible_type(grant.event_type, f"{field}[{index}].event_type")
        if name in out:
            raise UnprocessableContent.for_field(
                f"{field}[{index}].event_type", f"'{name}' is granted twice; one purpose per type", type_="duplicate"
            )
        purpose = GrantPurpose(grant.purpose)
        if purpose is GrantPurpose.STATISTICS and name in RESIDENT_PARTNER_TYPES:
            raise UnprocessableContent.for_field(
                f"{field}[{index}].purpose",
                f"'{name}' is about a resident; statistics are served by aggregate feeds",
                type_="purpose_mismatch",
            )
        out[name] = purpose
    return out


async def set_grants(repo: Repository, principal: Principal, partner_id: str, grants: list[GrantIn]) -> Partner:
    """Replace the partner's grants (422 naming the first bad one), creating the partner on first use. A type whose
    purpose changes keeps its grant with the new purpose. Revoked types stop at once: queued webhook deliveries of
    them are cancelled when their turn comes (and a purpose that no longer needs amounts loses them there too)."""
    wanted = check_grants(grants)
    by = principal.subject
    now = utcnow()
    partner = await repo.partner(partner_id, for_update=True)
    if partner is None:
        partner = Partner(id=partner_id, name=partner_id, created_at=now, updated_at=now, updated_by=by, grants=[])
        repo.session.add(partner)
    kept = [g for g in partner.grants if g.event_type in wanted]
    for grant in kept:
        if grant.purpose != wanted[grant.event_type].value:
            grant.purpose = wanted[grant.event_type].value
            grant.granted_at = now
            grant.granted_by = by
    have = {g.event_type for g in kept}
    partner.grants = kept + [
        PartnerGrant(partner_id=partner_id, event_type=t, purpose=p.value, granted_at=now, granted_by=by)
        for t, p in wanted.items()
        if t not in have
    ]
    partner.updated_at = now
    partner.updated_by = by
    await repo.session.flush()
    await repo.session.refresh(partner, ["grants"])
    return partner


async def require_granted(repo: Repository, partner_id: str, event_types: list[str]) -> None:
    granted = await repo.granted_types(partner_id)
    missing = [t for t in event_types if t not in granted]
    if missing:
        raise Forbidden(
            f"Not granted to this partner: {', '.join(missing)}. An administrator grants event types.",
            errors=[{"field": "event_types", "message": f"not granted: {t}", "type": "not_granted"} for t in missing],
        )


# ---------------------------------------------------------------------------------------------- fan-out


class PartnerFeeds:
    """The partners' consumer: the residents' consent to partners, the aggregate counts, and the fan-out of every
    partner-visible event, each in the consumer's transaction."""

    def __init__(self, outbox: Outbox, settings: NotifySettings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.prefix = settings.bus_prefix
        self.consents = PartnerConsents(self.prefix)

    async def consent_changed(self, session: AsyncSession, event: CloudEvent, data: ConsentChanged) -> None:
        await self.consents.consent_changed(session, event, data)

    async def eligibility_determined(
        self, session: AsyncSession, event: CloudEvent, data: EligibilityDetermined
    ) -> None:
        await note_determination(session, self.settings, data)
        await self.fan_out(session, event, data)

    async def load(self, session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        """The consumer's load (``Subscription.load``): whether the residents of a transaction's events asked for
        erasure, and their consents to partners, in a query each instead of two lookups per event."""
        residents = {r for e in events if isinstance(e.data, dict) and (r := named_id(e.data.get("resident_id")))}
        repo = Repository(session)
        await repo.load_erasures(residents)
        await repo.load_partner_consents(residents)

    async def finish(self, session: AsyncSession) -> None:
        """The consumer's finish (``Subscription.finish``): the transaction's determinations counted at once."""
        await count_noted(session, self.settings)

    async def fan_out(self, session: AsyncSession, event: CloudEvent, data: EventData) -> None:
        event_type = event.event_type
        if event_type not in PARTNER_VISIBLE_TYPES:
            return
        repo = Repository(session)
        # The resident named as the partner view names them (the view itself is made further down, if needed).
        resident_id = uuid.UUID(str(event.data["resident_id"])) if event_type in RESIDENT_PARTNER_TYPES else None
        consent = await repo.consent_to_partners(resident_id) if resident_id is not None else None
        if resident_id is not None and consent is None:
            return  # the resident consented to no partner: nothing for anyone (most residents; no more to look up)
        subscriptions = await repo.subscriptions_for(event_type)
        # An addressed event (a referral to a partner's offering) is for the partner it names only.
        to = addressee(event)
        if to is not None:
            subscriptions = [s for s in subscriptions if s.partner_id == to]
        if not subscriptions:
            return
        # The partner view is made only for an event that goes to someone (most go to no one).
        view = partner_view(event)
        purposes = await repo.grant_purposes(event_type)
        envelopes: dict[str, CloudEvent] = {}
        nats_partners: set[str] = set()
        now = utcnow()
        for subscription in subscriptions:
            partner_id = subscription.partner_id
            if resident_id is not None and not covers(consent, partner_id, event_type):
                continue  # the resident did not consent to this partner (for this type): nothing, not even a trace
            if partner_id not in envelopes:
                needs_amounts = GrantPurpose(purposes[partner_id]).needs_amounts
                envelopes[partner_id] = envelope_for(event, view if needs_amounts else without_amounts(view))
            envelope = envelopes[partner_id]
            if subscription.transport == Transport.NATS.value:
                if subscription.status == SubscriptionStatus.ACTIVE.value and partner_id not in nats_partners:
                    nats_partners.add(partner_id)
                    await self._publish(repo, partner_id, envelope)
                continue
            if await repo.webhook_delivery_exists(subscription.id, event.id):
                continue
            repo.session.add(
                WebhookDelivery(
                    id=uuid.uuid4(),
                    subscription_id=subscription.id,
                    partner_id=partner_id,
                    transport=Transport.WEBHOOK.value,
                    event_id=event.id,
                    event_type=event_type,
                    resident_id=resident_id,
                    payload=envelope.to_json().decode(),
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            mark_work(repo.session, PARTNER_WORK)
        await repo.session.flush()

    async def _publish(self, repo: Repository, partner_id: str, envelope: CloudEvent) -> None:
        # The outbox row's id (the Nats-Msg-Id) is per partner, while the envelope keeps the event's own id.
        await self.outbox.emit_event(
            repo.session,
            envelope,
            subject=partner_subject(self.prefix, partner_id, envelope.type),
            msg_id=str(uuid.uuid5(_PARTNER_OUTBOX_NAMESPACE, f"{partner_id}/{envelope.id}")),
        )


def envelope_for(event: CloudEvent, data: dict[str, Any]) -> CloudEvent:
    """The partner's envelope: the event's identity, none of its internal extensions, the given data."""
    return CloudEvent(
        id=event.id,
        source=event.source,
        type=event.type,
        subject=event.subject,
        time=event.time,
        data=data,
    )


def shaped_for(payload: str, purpose: GrantPurpose) -> str:
    """A queued envelope as the grant's purpose allows it now (a purpose changed since it was queued)."""
    if purpose.needs_amounts:
        return payload
    envelope = CloudEvent.from_json(payload)
    return envelope.model_copy(update={"data": without_amounts(envelope.data)}).to_json().decode()
