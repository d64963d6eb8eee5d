"""What notify consumes: resident-relevant events (messages to residents) and partner-visible events (partners)."""

from __future__ import annotations

from collections.abc import Sequence

from services.notify.context import NotifyContext
from services.notify.notifications import ResidentMessages
from services.notify.partners import PartnerFeeds
from shared.consumer import Subscription, on
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
    ConsentChanged,
    EligibilityDetermined,
    EligibilityOpportunity,
    RepresentationChanged,
    ResidentUpdated,
    ScreeningQuestionAsked,
)


def subscriptions(ctx: NotifyContext) -> Sequence[Subscription]:
    messages = ResidentMessages(ctx.settings)
    feeds = PartnerFeeds(ctx.outbox, ctx.settings)
    fanned_out = sorted(PARTNER_VISIBLE_TYPES - {EligibilityDetermined.event_type})
    return [
        Subscription(
            name="residents",
            handlers=[
                on(ConsentChanged, messages.consent_changed),
                on(ResidentUpdated, messages.resident_updated),
                on(RepresentationChanged, messages.representation_changed),
                on(ApplicationSubmitted, messages.application_submitted),
                on(ApplicationWithdrawn, messages.application_withdrawn),
                on(EligibilityDetermined, messages.eligibility_determined),
                on(EligibilityOpportunity, messages.eligibility_opportunity),
                on(ScreeningQuestionAsked, messages.screening_question_asked),
                on(CaseRouted, messages.case_routed),
                on(CaseInfoRequested, messages.case_info_requested),
                on(CaseResumed, messages.case_resumed),
                on(CaseTransferred, messages.case_transferred),
                on(CaseDecided, messages.case_decided),
                on(CaseSlaBreached, messages.case_sla_breached),
            ],
        ),
        # Separate from the residents' consumer so that neither can hold the other up. It takes the consents to
        # partners itself, so that each event is judged by the consent intake emitted before it.
        Subscription(
            name="partners",
            handlers=[
                on(ConsentChanged, feeds.consent_changed),
                on(EligibilityDetermined, feeds.eligibility_determined),  # counted for the aggregate feed, too
                *[on(CATALOGUE[t].data_model, feeds.fan_out) for t in fanned_out],
            ],
        ),
    ]
