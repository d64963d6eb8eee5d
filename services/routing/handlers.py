"""Event consumers: eligibility determinations make and update cases; withdrawals close them; a resident's answer
resumes the cases waiting on them.

One durable consumer takes all three event types so that they are applied in the order the stream holds them; each
handler copes with redelivery (the inbox) and with reordering (evaluation rounds, the withdrawal mark)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.routing import cases
from services.routing.context import routing_context
from shared.consumer import Subscription
from shared.events import (
    ApplicationInfoProvided,
    ApplicationWithdrawn,
    CloudEvent,
    EligibilityDetermined,
)
from shared.service import Runtime

CASE_EVENTS = (
    EligibilityDetermined.event_type,
    ApplicationWithdrawn.event_type,
    ApplicationInfoProvided.event_type,
)


def subscriptions(runtime: Runtime) -> Sequence[Subscription]:
    ctx = routing_context(runtime)

    async def handle(session: AsyncSession, event: CloudEvent) -> None:
        kind = event.event_type
        if kind == EligibilityDetermined.event_type:
            await cases.apply_determination(session, ctx, event.data_as(EligibilityDetermined))
        elif kind == ApplicationWithdrawn.event_type:
            await cases.withdraw(session, ctx, event.data_as(ApplicationWithdrawn))
        elif kind == ApplicationInfoProvided.event_type:
            await cases.info_provided(session, ctx, event.data_as(ApplicationInfoProvided))

    return [Subscription(name="cases", event_types=CASE_EVENTS, handler=handle)]
