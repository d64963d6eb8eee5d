"""Event consumers: eligibility determinations make and update cases; withdrawals close them; a resident's answer
resumes the cases waiting on them.

One durable consumer takes all three event types so that they are applied in the order the stream holds them; each
handler copes with redelivery (the inbox) and with reordering (evaluation rounds, the withdrawal mark)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.routing import cases
from services.routing.context import RoutingContext
from services.routing.repository import Repository
from shared.consumer import Subscription, on
from shared.events import ApplicationInfoProvided, ApplicationWithdrawn, CloudEvent, EligibilityDetermined


def subscriptions(ctx: RoutingContext) -> Sequence[Subscription]:
    async def determined(session: AsyncSession, event: CloudEvent, data: EligibilityDetermined) -> None:
        await cases.apply_determination(Repository(session), ctx, data)

    async def withdrawn(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        await cases.withdraw(Repository(session), ctx, data)

    async def info_provided(session: AsyncSession, event: CloudEvent, data: ApplicationInfoProvided) -> None:
        await cases.info_provided(Repository(session), ctx, data)

    return [
        Subscription(
            name="cases",
            handlers=[
                on(EligibilityDetermined, determined),
                on(ApplicationWithdrawn, withdrawn),
                on(ApplicationInfoProvided, info_provided),
            ],
        )
    ]
