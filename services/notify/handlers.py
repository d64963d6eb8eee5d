"""What notify consumes: resident-relevant events (messages to residents) and partner-visible events (partners)."""

from __future__ import annotations

from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.notifications import ResidentMessages
from services.notify.partners import PartnerFanOut
from services.notify.settings import NotifySettings
from shared.consumer import Handler, Subscription
from shared.events import PARTNER_VISIBLE_TYPES, CloudEvent
from shared.service import Runtime


def subscriptions(runtime: Runtime) -> list[Subscription]:
    settings = cast(NotifySettings, runtime.settings)
    messages = ResidentMessages(settings)
    routes: dict[str, Handler] = {
        "consent.changed": messages.consent_changed,
        "resident.updated": messages.resident_updated,
        "application.submitted": messages.application_submitted,
        "application.withdrawn": messages.application_withdrawn,
        "eligibility.determined": messages.eligibility_determined,
        "eligibility.opportunity": messages.eligibility_opportunity,
        "case.routed": messages.case_routed,
        "case.info_requested": messages.case_info_requested,
        "case.resumed": messages.case_resumed,
        "case.transferred": messages.case_transferred,
        "case.decided": messages.case_decided,
        "case.sla_breached": messages.case_sla_breached,
    }

    async def residents(session: AsyncSession, event: CloudEvent) -> None:
        handler = routes.get(event.event_type)
        if handler is not None:
            await handler(session, event)

    return [
        Subscription(name="residents", event_types=tuple(routes), handler=residents),
        # Separate from the residents' consumer so that neither can hold the other up.
        Subscription(
            name="partners",
            event_types=tuple(sorted(PARTNER_VISIBLE_TYPES)),
            handler=PartnerFanOut(runtime.outbox, settings.bus_prefix),
        ),
    ]
