"""What intake consumes: every downstream event that changes what a resident sees of their application. Each runs in
the consumer's transaction, beside the inbox row that makes it effectively-once."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.repository import Repository
from services.intake.status import apply_case_event, apply_determination, apply_notification
from shared.consumer import PermanentError, Subscription
from shared.events import (
    CaseEventBase,
    CloudEvent,
    EligibilityDetermined,
    NotificationFailed,
    NotificationSent,
    validate_event,
)
from shared.service import Runtime

STATUS_EVENTS = (
    "eligibility.determined",
    "case.routed",
    "case.assigned",
    "case.info_requested",
    "case.decided",
    "case.transferred",
    "case.escalated",
    "case.sla_breached",
    "case.resumed",
    "case.closed",
    "notification.sent",
    "notification.failed",
)


async def on_status_event(session: AsyncSession, event: CloudEvent) -> None:
    data = validate_event(event)  # a malformed event fails permanently (dead letter), it never half-applies
    repo = Repository(session)
    match data:
        case EligibilityDetermined():
            await apply_determination(repo, event, data)
        case CaseEventBase():
            await apply_case_event(repo, event, data)
        case NotificationSent() | NotificationFailed():
            await apply_notification(repo, event, data)
        case _:
            raise PermanentError(f"intake does not handle {event.event_type}")


def subscriptions(runtime: Runtime) -> Sequence[Subscription]:
    return [Subscription(name="status-view", event_types=STATUS_EVENTS, handler=on_status_event)]
