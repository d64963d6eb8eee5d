"""Partners: what an administrator granted them and the events they receive.

This module keeps the grants (with the event-type rules that subscriptions check against them too) and the fan-out of
each event to the subscriptions covering it, in the consumer. The subscriptions' own lifecycle, which a partner drives
over the API, is in services/notify/subscriptions.py.

What a partner receives is the event's *partner view* (``shared.events.partner_view``: the fields the catalogue marks
safe, with only the pseudonymous resident id) in a CloudEvents envelope with the original ``id``, ``type``,
``source`` and ``time``.

What the resident's ``partner:<partner id>`` consent adds: an object ``data.consented`` with a few more facts about
that resident's own case, never contact details (notify does not hold any):
- ``application.submitted`` and ``eligibility.determined``: the resident's ``district_code`` and
  ``preferred_language`` (so an NGO can route the family to its local branch, in their language);
- ``case.decided``: the decided ``amount`` and the ``reason`` in Korean and English (so a bank can expect a payment).
Without the consent (or after it is withdrawn) ``consented`` is absent. The consent in force when notify handles the
event applies; nothing already sent is recalled.

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
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.models import (
    DeliveryStatus,
    Partner,
    PartnerGrant,
    SubscriptionStatus,
    Transport,
    WebhookDelivery,
    utcnow,
)
from services.notify.notifications import mark_work
from services.notify.repository import Repository
from shared.auth import Principal
from shared.events import (
    CATALOGUE,
    PARTNER_VISIBLE_TYPES,
    TYPE_PREFIX,
    ApplicationSubmitted,
    CaseDecided,
    CloudEvent,
    EligibilityDetermined,
    EventData,
    addressee,
    partner_subject,
    partner_view,
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


def check_event_types(event_types: list[str], field: str = "event_types") -> list[str]:
    """Catalogue names of partner-visible types, de-duplicated in order; 422 naming the first bad one."""
    out: list[str] = []
    for index, raw in enumerate(event_types):
        name = raw.removeprefix(TYPE_PREFIX)
        if name not in CATALOGUE:
            raise UnprocessableContent.for_field(f"{field}[{index}]", f"unknown event type '{raw}'", type_="unknown")
        if name not in PARTNER_VISIBLE_TYPES:
            raise UnprocessableContent.for_field(
                f"{field}[{index}]", f"'{name}' is not partner-visible", type_="not_partner_visible"
            )
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


async def set_grants(repo: Repository, principal: Principal, partner_id: str, event_types: list[str]) -> Partner:
    """Replace the partner's grants with ``event_types`` (422 naming the first that is unknown or not
    partner-visible), creating the partner on first use. Revoked types stop at once: queued webhook deliveries of
    them are cancelled when their turn comes."""
    event_types = check_event_types(event_types)
    by = principal.subject
    now = utcnow()
    partner = await repo.partner(partner_id, for_update=True)
    if partner is None:
        partner = Partner(id=partner_id, name=partner_id, created_at=now, updated_at=now, updated_by=by, grants=[])
        repo.session.add(partner)
    wanted = set(event_types)
    partner.grants = [g for g in partner.grants if g.event_type in wanted] + [
        PartnerGrant(partner_id=partner_id, event_type=t, granted_at=now, granted_by=by)
        for t in event_types
        if t not in set(partner.granted_types)
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


class PartnerFanOut:
    """Runs in the consumer's transaction for every partner-visible event."""

    def __init__(self, outbox: Outbox, prefix: str) -> None:
        self.outbox = outbox
        self.prefix = prefix

    async def __call__(self, session: AsyncSession, event: CloudEvent, data: EventData) -> None:
        event_type = event.event_type
        if event_type not in PARTNER_VISIBLE_TYPES:
            return
        repo = Repository(session)
        subscriptions = await repo.subscriptions_for(event_type)
        # An addressed event (a referral to a partner's offering) is for the partner it names only.
        to = addressee(event)
        if to is not None:
            subscriptions = [s for s in subscriptions if s.partner_id == to]
        if not subscriptions:
            return
        base_view = partner_view(event)
        resident_id = base_view.get("resident_id")
        consents: dict[str, Any] = {}
        if resident_id:
            state = await repo.find_resident_state(uuid.UUID(str(resident_id)))
            consents = state.consents if state is not None else {}
        envelopes: dict[str, CloudEvent] = {}
        nats_partners: set[str] = set()
        now = utcnow()
        for subscription in subscriptions:
            partner_id = subscription.partner_id
            if partner_id not in envelopes:
                extras = consented_extras(event) if consents.get(f"partner:{partner_id}") is True else {}
                envelopes[partner_id] = envelope_for(event, {**base_view, **({"consented": extras} if extras else {})})
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
                    event_id=event.id,
                    event_type=event_type,
                    payload=envelope.to_json().decode(),
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            mark_work(repo.session)
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


def consented_extras(event: CloudEvent) -> dict[str, Any]:
    """What a resident's ``partner:<id>`` consent adds to that partner's payload (see the module docstring)."""
    name = event.event_type
    if name == ApplicationSubmitted.event_type:
        context = event.data_as(ApplicationSubmitted).resident
    elif name == EligibilityDetermined.event_type:
        context = event.data_as(EligibilityDetermined).resident
    elif name == CaseDecided.event_type:
        decided = event.data_as(CaseDecided)
        return {"amount": decided.amount, "reason": decided.reason.model_dump() if decided.reason else None}
    else:
        return {}
    return {"district_code": context.district_code, "preferred_language": context.preferred_language.value}
