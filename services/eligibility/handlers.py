"""What eligibility consumes: applications (submitted, answers, withdrawals), the registry, consents, department
facts and a resident's erasure — one ordered subscription, so an application's events are handled in the order intake
published them; and, apart, where routing put each case (for scoping staff reads). Nothing about a resident whose data
was erased is stored again."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.eligibility import case_offices, near_misses, resident_data
from services.eligibility.context import EligibilityContext
from services.eligibility.repository import Repository
from shared.clock import Clock
from shared.consumer import Apply, Subscription, named_id, on
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
    ResidentErasureRequested,
    ResidentUpdated,
    ScreeningQuestionAnswered,
)

E = TypeVar("E", bound=EventData)

log = logging.getLogger(__name__)


def _now(apply: Callable[[Repository, E, dt.datetime], Awaitable[None]]) -> Apply[E]:
    """A handler of the domain's shape (the repository on the consumer's session, data, the time it is applied)."""

    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        await apply(Repository(session), data, dt.datetime.now(dt.UTC))

    return handler


def _unless_erased(apply: Apply[E]) -> Apply[E]:
    """Nothing about a resident whose data was erased here is stored again (an event that arrives late)."""

    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        if await Repository(session).erased(getattr(data, "resident_id")):  # noqa: B009 (every one of these has it)
            log.info("an event about an erased resident is not stored", extra={"event_type": event.event_type})
            return
        await apply(session, event, data)

    return handler


def _named(events: Sequence[CloudEvent], field: str) -> set[uuid.UUID]:
    """The ids the events name in ``field``, read before validation (an event that does not fit its model fails in
    its handler, as ever)."""
    named = (named_id(e.data.get(field)) if isinstance(e.data, dict) else None for e in events)
    return {i for i in named if i is not None}


async def _load_named(repo: Repository, events: Sequence[CloudEvent]) -> None:
    """The applications and residents the events name, loaded together."""
    await repo.load_for_events(_named(events, "application_id"), _named(events, "resident_id"))


async def _load_case_offices(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    await Repository(session).load_case_offices(_named(events, "case_id"), _named(events, "resident_id"))


def subscriptions(ctx: EligibilityContext) -> Sequence[Subscription]:
    service = ctx.eligibility
    clock = Clock.from_settings(ctx.settings)

    async def load_for_batch(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        repo = Repository(session)
        await _load_named(repo, events)
        # The determinations the transaction adds, written in one INSERT at its end (write_determinations).
        repo.keep_determinations_aside()

    async def write_determinations(session: AsyncSession) -> None:
        await Repository(session).write_determinations()

    async def evaluate_ahead(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
        repo = Repository(session)
        await _load_named(repo, events)
        await service.prepare(repo, events, dt.datetime.now(dt.UTC))

    async def erasure_requested(session: AsyncSession, event: CloudEvent, data: ResidentErasureRequested) -> None:
        await resident_data.on_erasure_requested(Repository(session), service.outbox, data, clock.today())

    return [
        Subscription(
            name="events",
            # The rules run before the batch's transaction, not while it holds the database's writer lock.
            prepare=evaluate_ahead,
            # What the events look up (applications, residents, their erasures, answers and facts), a query per kind.
            load=load_for_batch,
            finish=write_determinations,
            handlers=[
                on(ApplicationSubmitted, _unless_erased(_now(service.on_submitted))),
                on(ApplicationInfoProvided, _unless_erased(_now(service.on_info_provided))),
                on(ApplicationWithdrawn, _unless_erased(_now(service.on_withdrawn))),
                on(ResidentUpdated, _unless_erased(_now(service.on_resident_updated))),
                on(ConsentChanged, _unless_erased(_now(service.on_consent_changed))),
                on(FactsReported, _unless_erased(_now(service.on_facts_reported))),
                on(
                    ScreeningQuestionAnswered,
                    _unless_erased(
                        _now(lambda repo, data, now: near_misses.on_answered(service.store, repo, data, now))
                    ),
                ),
                # In order with the applications' events: what intake emitted before the request is applied first.
                on(ResidentErasureRequested, erasure_requested),
            ],
        ),
        # Apart from the applications' events, so that routing's traffic never holds up a determination.
        Subscription(
            name="case-offices",
            load=_load_case_offices,
            handlers=[
                on(CaseRouted, _unless_erased(case_offices.on_case_routed)),
                on(CaseTransferred, _unless_erased(case_offices.on_case_transferred)),
            ],
        ),
    ]
