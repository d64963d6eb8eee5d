"""What residents said: the score of ``feedback.given`` (intake keeps the comment), kept per application so that open
data can count it per office, program and channel beside take-up (services/routing/statistics.py).

Intake takes one rating per application; a redelivery, or a second event for the same application, changes nothing.
The rating's channel also tells routing how the application was made, when ``application.submitted`` did not."""

from __future__ import annotations

from services.routing.context import RoutingContext
from services.routing.models import ResidentFeedback
from services.routing.repository import Repository
from shared.events import FeedbackGiven


async def record(repo: Repository, ctx: RoutingContext, data: FeedbackGiven) -> None:
    if await repo.feedback(data.application_id) is not None:
        return
    repo.session.add(
        ResidentFeedback(
            application_id=data.application_id,
            score=data.score,
            channel=data.channel.value,
            given_at=data.given_at,
            recorded_at=ctx.clock.now(),
        )
    )
    await repo.session.flush()
