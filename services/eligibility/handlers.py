"""What eligibility consumes: applications (submitted, answers, withdrawals), the registry, consents and department
facts. One ordered subscription, so an application's events are handled in the order intake published them."""

from __future__ import annotations

from collections.abc import Sequence

from services.eligibility.determinations import eligibility
from shared.consumer import Subscription
from shared.service import Runtime

EVENT_TYPES = (
    "application.submitted",
    "application.info_provided",
    "application.withdrawn",
    "resident.updated",
    "consent.changed",
    "facts.reported",
)


def subscriptions(runtime: Runtime) -> Sequence[Subscription]:
    return [Subscription(name="events", event_types=EVENT_TYPES, handler=eligibility(runtime).handle)]
