"""What eligibility consumes: applications (submitted, answers, withdrawals), the registry, consents and department
facts — one ordered subscription, so an application's events are handled in the order intake published them; and,
apart, where routing put each case (for scoping staff reads)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility import case_offices
from services.eligibility.determinations import eligibility
from shared.consumer import PermanentError, Subscription
from shared.events import CaseRouted, CaseTransferred, CloudEvent
from shared.service import Runtime

EVENT_TYPES = (
    "application.submitted",
    "application.info_provided",
    "application.withdrawn",
    "resident.updated",
    "consent.changed",
    "facts.reported",
)

CASE_EVENT_TYPES = ("case.routed", "case.transferred")


async def on_case_event(session: AsyncSession, event: CloudEvent) -> None:
    if event.event_type == "case.routed":
        await case_offices.on_case_routed(session, event, event.data_as(CaseRouted))
    elif event.event_type == "case.transferred":
        await case_offices.on_case_transferred(session, event, event.data_as(CaseTransferred))
    else:  # pragma: no cover - the subscription filters the types
        raise PermanentError(f"eligibility does not handle {event.event_type}")


def subscriptions(runtime: Runtime) -> Sequence[Subscription]:
    return [
        Subscription(name="events", event_types=EVENT_TYPES, handler=eligibility(runtime).handle),
        Subscription(name="case-offices", event_types=CASE_EVENT_TYPES, handler=on_case_event),
    ]
