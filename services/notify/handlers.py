"""What notify consumes: resident-relevant events (messages to residents) and partner-visible events (partners), and
in both consumers a resident's erasure: from then on nothing about them is stored, and nothing reaches a partner."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import resident_data
from services.notify.context import NotifyContext
from services.notify.notifications import ResidentMessages, finish_batch, load_for_batch
from services.notify.partners import PartnerFeeds
from shared.consumer import Apply, Subscription, on
from shared.db import hold_loaded
from shared.events import (
    CATALOGUE,
    PARTNER_VISIBLE_TYPES,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CaseDecided,
    CaseInfoRequested,
    CaseResumed,
    CaseRouted,
    CaseSlaBreached,
    CaseTransferred,
    CloudEvent,
    ConsentChanged,
    EligibilityDetermined,
    EligibilityOpportunity,
    EventData,
    HouseholdCaseClosed,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCasePlanChanged,
    RepresentationChanged,
    ResidentErasureCompleted,
    ResidentErasureRequested,
    ResidentUpdated,
    ScreeningQuestionAsked,
)

E = TypeVar("E", bound=EventData)
log = logging.getLogger(__name__)


def unless_erased(apply: Apply[E]) -> Apply[E]:
    """Nothing about a resident who asked for erasure is stored, or sent to a partner (an event arriving late, or
    one produced meanwhile). An aggregate names no resident and goes on."""

    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        # A resident's and an application's events come together in a batch: their rows are read once per
        # transaction, not once per event.
        hold_loaded(session)
        resident_id = getattr(data, "resident_id", None)
        if resident_id is not None and await resident_data.erased(session, resident_id):
            log.info("an event about an erased resident is dropped", extra={"event_type": event.event_type})
            return
        await apply(session, event, data)

    return handler


def subscriptions(ctx: NotifyContext) -> Sequence[Subscription]:
    messages = ResidentMessages(ctx.settings)
    feeds = PartnerFeeds(ctx.outbox, ctx.settings)
    erasure = resident_data.Erasure(ctx.outbox, ctx.settings, ctx.clock)
    fanned_out = sorted(PARTNER_VISIBLE_TYPES - {EligibilityDetermined.event_type})
    return [
        Subscription(
            name="residents",
            handlers=[
                on(ConsentChanged, unless_erased(messages.consent_changed)),
                on(ResidentUpdated, unless_erased(messages.resident_updated)),
                on(RepresentationChanged, unless_erased(messages.representation_changed)),
                on(ApplicationSubmitted, unless_erased(messages.application_submitted)),
                on(ApplicationWithdrawn, unless_erased(messages.application_withdrawn)),
                on(EligibilityDetermined, unless_erased(messages.eligibility_determined)),
                on(EligibilityOpportunity, unless_erased(messages.eligibility_opportunity)),
                on(ScreeningQuestionAsked, unless_erased(messages.screening_question_asked)),
                on(CaseRouted, unless_erased(messages.case_routed)),
                on(CaseInfoRequested, unless_erased(messages.case_info_requested)),
                on(CaseResumed, unless_erased(messages.case_resumed)),
                on(CaseTransferred, unless_erased(messages.case_transferred)),
                on(CaseDecided, unless_erased(messages.case_decided)),
                on(CaseSlaBreached, unless_erased(messages.case_sla_breached)),
                # A household's members, each told apart (a member erased is skipped there).
                on(HouseholdCaseOpened, messages.household_case_opened),
                on(HouseholdCaseMemberAdded, messages.household_case_member_added),
                on(HouseholdCasePlanChanged, messages.household_case_plan_changed),
                on(HouseholdCaseClosed, messages.household_case_closed),
                on(ResidentErasureRequested, erasure.residents_part),
                # The one message after an erasure: its result.
                on(ResidentErasureCompleted, messages.erasure_completed),
            ],
            load=load_for_batch,
            finish=finish_batch,
        ),
        # Separate from the residents' consumer so that neither can hold the other up. It takes the consents to
        # partners itself, so that each event is judged by the consent intake emitted before it — and the erasure,
        # so that nothing intake emitted after it reaches a partner.
        Subscription(
            name="partners",
            handlers=[
                on(ConsentChanged, unless_erased(feeds.consent_changed)),
                # Counted for the aggregate feed, too (before the erasure; an aggregate names no one).
                on(EligibilityDetermined, unless_erased(feeds.eligibility_determined)),
                *[on(CATALOGUE[t].data_model, unless_erased(feeds.fan_out)) for t in fanned_out],
                on(ResidentErasureRequested, erasure.partners_part),
            ],
            load=feeds.load,
            finish=feeds.finish,
        ),
    ]
