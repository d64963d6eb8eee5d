"""Event consumers: eligibility determinations make and update cases; withdrawals close them; a resident's answer
resumes the cases waiting on them; offers and their answers feed outreach, take-up and expected demand.

One durable consumer takes all three event types so that they are applied in the order the stream holds them; each
handler copes with redelivery (the inbox) and with reordering (evaluation rounds, the withdrawal mark)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.routing import cases, outreach
from services.routing.context import RoutingContext
from services.routing.repository import Repository
from shared.consumer import Subscription, on
from shared.events import (
    ApplicationInfoProvided,
    ApplicationWithdrawn,
    CloudEvent,
    EligibilityDetermined,
    OpportunityAccepted,
    OpportunityDeclined,
    OpportunityExpired,
    OpportunityOffered,
)


def subscriptions(ctx: RoutingContext) -> Sequence[Subscription]:
    async def determined(session: AsyncSession, event: CloudEvent, data: EligibilityDetermined) -> None:
        await cases.apply_determination(Repository(session), ctx, data)

    async def withdrawn(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        await cases.withdraw(Repository(session), ctx, data)

    async def info_provided(session: AsyncSession, event: CloudEvent, data: ApplicationInfoProvided) -> None:
        await cases.info_provided(Repository(session), ctx, data)

    async def offered(session: AsyncSession, event: CloudEvent, data: OpportunityOffered) -> None:
        await outreach.on_offered(Repository(session), ctx, data)

    async def accepted(session: AsyncSession, event: CloudEvent, data: OpportunityAccepted) -> None:
        await outreach.on_accepted(Repository(session), ctx, data)

    async def declined(session: AsyncSession, event: CloudEvent, data: OpportunityDeclined) -> None:
        await outreach.on_declined(Repository(session), ctx, data)

    async def expired(session: AsyncSession, event: CloudEvent, data: OpportunityExpired) -> None:
        await outreach.on_expired(Repository(session), ctx, data)

    return [
        Subscription(
            name="cases",
            handlers=[
                on(EligibilityDetermined, determined),
                on(ApplicationWithdrawn, withdrawn),
                on(ApplicationInfoProvided, info_provided),
            ],
        ),
        # Offers and their answers, in intake's order: outreach to the vulnerable, take-up, expected demand. Apart
        # from the cases, so that screening a population never holds up the routing of an application.
        Subscription(
            name="offers",
            handlers=[
                on(OpportunityOffered, offered),
                on(OpportunityAccepted, accepted),
                on(OpportunityDeclined, declined),
                on(OpportunityExpired, expired),
            ],
        ),
    ]
