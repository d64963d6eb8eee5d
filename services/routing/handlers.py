"""Event consumers: eligibility determinations make and update cases; withdrawals close them; a resident's answer
resumes the cases waiting on them; an application's submission tells its channel. Beside them, what routing learns
from intake about residents: their consents (a referral to a partner needs one) and their ratings (open data).

The case events share one durable consumer so that they are applied in the order the stream holds them; each
handler copes with redelivery (the inbox) and with reordering (evaluation rounds, the withdrawal mark). Consents and
feedback have consumers of their own: neither waits behind a backlog of cases, nor holds one up."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.routing import cases, consents, feedback
from services.routing.context import RoutingContext
from services.routing.repository import Repository
from shared.consumer import Subscription, on
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CloudEvent,
    ConsentChanged,
    EligibilityDetermined,
    FeedbackGiven,
)


def subscriptions(ctx: RoutingContext) -> Sequence[Subscription]:
    async def determined(session: AsyncSession, event: CloudEvent, data: EligibilityDetermined) -> None:
        await cases.apply_determination(Repository(session), ctx, data)

    async def submitted(session: AsyncSession, event: CloudEvent, data: ApplicationSubmitted) -> None:
        await cases.submitted(Repository(session), ctx, data)

    async def withdrawn(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        await cases.withdraw(Repository(session), ctx, data)

    async def info_provided(session: AsyncSession, event: CloudEvent, data: ApplicationInfoProvided) -> None:
        await cases.info_provided(Repository(session), ctx, data)

    async def consent_changed(session: AsyncSession, event: CloudEvent, data: ConsentChanged) -> None:
        await consents.record(Repository(session), ctx, data)

    async def feedback_given(session: AsyncSession, event: CloudEvent, data: FeedbackGiven) -> None:
        await feedback.record(Repository(session), ctx, data)

    return [
        Subscription(
            name="cases",
            handlers=[
                on(EligibilityDetermined, determined),
                on(ApplicationSubmitted, submitted),
                on(ApplicationWithdrawn, withdrawn),
                on(ApplicationInfoProvided, info_provided),
            ],
        ),
        Subscription(name="consents", handlers=[on(ConsentChanged, consent_changed)]),
        Subscription(name="feedback", handlers=[on(FeedbackGiven, feedback_given)]),
    ]
