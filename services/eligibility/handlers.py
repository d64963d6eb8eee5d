"""What eligibility consumes: applications (submitted, answers, withdrawals), the registry, consents and department
facts — one ordered subscription, so an application's events are handled in the order intake published them; and,
apart, where routing put each case (for scoping staff reads)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility import case_offices
from services.eligibility.context import EligibilityContext
from services.eligibility.repository import Repository
from shared.consumer import Apply, Subscription, on
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseRouted,
    CaseTransferred,
    CloudEvent,
    ConsentChanged,
    EventData,
    FactsReported,
    ResidentUpdated,
)

E = TypeVar("E", bound=EventData)


def _now(apply: Callable[[Repository, E, dt.datetime], Awaitable[None]]) -> Apply[E]:
    """A handler of the domain's shape (the repository on the consumer's session, data, the time it is applied)."""

    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        await apply(Repository(session), data, dt.datetime.now(dt.UTC))

    return handler


def subscriptions(ctx: EligibilityContext) -> Sequence[Subscription]:
    service = ctx.eligibility

    async def evaluate_ahead(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        await service.prepare(Repository(session), events, dt.datetime.now(dt.UTC))

    return [
        Subscription(
            name="events",
            # The rules run before the batch's transaction, not while it holds the database's writer lock.
            prepare=evaluate_ahead,
            handlers=[
                on(ApplicationSubmitted, _now(service.on_submitted)),
                on(ApplicationInfoProvided, _now(service.on_info_provided)),
                on(ApplicationWithdrawn, _now(service.on_withdrawn)),
                on(ResidentUpdated, _now(service.on_resident_updated)),
                on(ConsentChanged, _now(service.on_consent_changed)),
                on(FactsReported, _now(service.on_facts_reported)),
            ],
        ),
        # Apart from the applications' events, so that routing's traffic never holds up a determination.
        Subscription(
            name="case-offices",
            handlers=[
                on(CaseRouted, case_offices.on_case_routed),
                on(CaseTransferred, case_offices.on_case_transferred),
            ],
        ),
    ]
