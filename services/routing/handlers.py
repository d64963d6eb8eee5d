"""Event consumers: eligibility determinations make and update cases; withdrawals close them; a resident's answer
resumes the cases waiting on them; an application's submission tells its channel. Beside them, what routing learns
from intake about residents: their consents (a referral to a partner needs one), their ratings (open data), and the
offers put before them and their answers (outreach, take-up and expected demand), and from every event carrying the
resident's context the registered household they live in (integrated case management takes a household on whole).

The case events share one durable consumer so that they are applied in the order the stream holds them; each
handler copes with redelivery (the inbox) and with reordering (evaluation rounds, the withdrawal mark). Consents and
feedback have consumers of their own: neither waits behind a backlog of cases, nor holds one up. A resident's erasure
is applied in order with the case events; after it, nothing about the resident is stored again."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.routing import cases, consents, feedback, households, outreach, resident_data
from services.routing.context import RoutingContext
from services.routing.repository import Repository
from shared.consumer import Apply, Subscription, named_id, on
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CloudEvent,
    ConsentChanged,
    EligibilityDetermined,
    EventData,
    FeedbackGiven,
    OpportunityAccepted,
    OpportunityDeclined,
    OpportunityExpired,
    OpportunityOffered,
    ResidentErasureRequested,
)
from shared.outbox import write_kept

E = TypeVar("E", bound=EventData)
log = logging.getLogger(__name__)


def _unless_erased(apply: Apply[E]) -> Apply[E]:
    """Nothing about a resident whose data was erased here is stored again (an event that arrives late)."""

    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        if await resident_data.erased(Repository(session), getattr(data, "resident_id")):  # noqa: B009
            log.info("an event about an erased resident is not stored", extra={"event_type": event.event_type})
            return
        await apply(session, event, data)

    return handler


def _named(events: Sequence[CloudEvent], field: str) -> set[uuid.UUID]:
    """The ids the events name in ``field``, read before validation (an event that does not fit its model fails in
    its handler, as ever)."""
    named = (named_id(e.data.get(field)) if isinstance(e.data, dict) else None for e in events)
    return {i for i in named if i is not None}


def subscriptions(ctx: RoutingContext) -> Sequence[Subscription]:
    async def determined(session: AsyncSession, event: CloudEvent, data: EligibilityDetermined) -> None:
        repo = Repository(session)
        await repo.note_household(data.resident_id, data.resident.household_id, event.time)
        await cases.apply_determination(repo, ctx, data)
        # The resident's cases changed: their household may now call for integrated case management.
        households.consider_later(repo, data.resident_id)

    async def submitted(session: AsyncSession, event: CloudEvent, data: ApplicationSubmitted) -> None:
        repo = Repository(session)
        await repo.note_household(data.resident_id, data.resident.household_id, event.time)
        await cases.submitted(repo, ctx, data)
        households.consider_later(repo, data.resident_id)  # a crisis life event is a flag

    async def withdrawn(session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        await cases.withdraw(Repository(session), ctx, data)

    async def info_provided(session: AsyncSession, event: CloudEvent, data: ApplicationInfoProvided) -> None:
        await cases.info_provided(Repository(session), ctx, data)

    async def offered(session: AsyncSession, event: CloudEvent, data: OpportunityOffered) -> None:
        repo = Repository(session)
        await repo.note_household(data.resident_id, data.resident.household_id, event.time)
        await outreach.on_offered(repo, ctx, data)

    async def accepted(session: AsyncSession, event: CloudEvent, data: OpportunityAccepted) -> None:
        await outreach.on_accepted(Repository(session), ctx, data)

    async def declined(session: AsyncSession, event: CloudEvent, data: OpportunityDeclined) -> None:
        await outreach.on_declined(Repository(session), ctx, data)

    async def expired(session: AsyncSession, event: CloudEvent, data: OpportunityExpired) -> None:
        await outreach.on_expired(Repository(session), ctx, data)

    async def consent_changed(session: AsyncSession, event: CloudEvent, data: ConsentChanged) -> None:
        await consents.record(Repository(session), ctx, data)

    async def feedback_given(session: AsyncSession, event: CloudEvent, data: FeedbackGiven) -> None:
        await feedback.record(Repository(session), ctx, data)

    async def erasure_requested(session: AsyncSession, event: CloudEvent, data: ResidentErasureRequested) -> None:
        await resident_data.on_erasure_requested(Repository(session), ctx.outbox, ctx.clock, data)

    async def load_for_batch(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        housed = [
            e for e in events if e.event_type in (EligibilityDetermined.event_type, ApplicationSubmitted.event_type)
        ]
        repo = Repository(session)
        await repo.load_for_cases(
            _named(events, "application_id"), _named(events, "resident_id"), _named(housed, "resident_id")
        )
        # The cases, history entries and events the transaction adds, written at its end (consider_households).
        repo.keep_new_cases_aside()
        repo.keep_entries_aside()
        ctx.outbox.keep_aside(session)

    async def consider_households(session: AsyncSession) -> None:
        repo = Repository(session)
        await repo.write_new_cases()  # no event changes them any more
        await households.consider_noted(repo, ctx, lambda resident_id: resident_data.erased(repo, resident_id))
        await repo.write_entries()
        await write_kept(session)

    return [
        Subscription(
            name="cases",
            # What the events look up (applications, their cases, erasures, households), a query per kind.
            load=load_for_batch,
            # Each household whose cases the batch changed is considered once, after its events; then what the
            # transaction kept aside is written.
            finish=consider_households,
            handlers=[
                on(EligibilityDetermined, _unless_erased(determined)),
                on(ApplicationSubmitted, _unless_erased(submitted)),
                on(ApplicationWithdrawn, _unless_erased(withdrawn)),
                on(ApplicationInfoProvided, _unless_erased(info_provided)),
                # In order with the case events: what came before the request is applied first.
                on(ResidentErasureRequested, erasure_requested),
            ],
        ),
        Subscription(name="consents", handlers=[on(ConsentChanged, _unless_erased(consent_changed))]),
        Subscription(name="feedback", handlers=[on(FeedbackGiven, _unless_erased(feedback_given))]),
        # Offers and their answers, in intake's order: outreach to the vulnerable, take-up, expected demand. Apart
        # from the cases, so that screening a population never holds up the routing of an application. An offer
        # about a resident erased meanwhile is not stored (no outreach case is opened for them).
        Subscription(
            name="offers",
            handlers=[
                on(OpportunityOffered, _unless_erased(offered)),
                on(OpportunityAccepted, _unless_erased(accepted)),
                on(OpportunityDeclined, _unless_erased(declined)),
                on(OpportunityExpired, _unless_erased(expired)),
            ],
        ),
    ]
