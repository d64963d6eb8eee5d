"""What intake consumes: every downstream event that changes what a resident sees of their application (cases,
referrals to partners, notifications), what proactive screening found for them (offers, questions), and, apart, each
service's answer to a resident's erasure request. Each runs in the consumer's transaction, beside the inbox row that
makes it effectively-once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import erasure, opportunities
from services.intake.context import IntakeContext
from services.intake.repository import Repository
from services.intake.status import (
    apply_case_event,
    apply_determination,
    apply_household_event,
    apply_notification,
    apply_referral_event,
    load_for_batch,
    refresh_statuses,
)
from shared.consumer import Apply, Subscription, on
from shared.db import hold_loaded
from shared.events import (
    CaseAssigned,
    CaseClosed,
    CaseDecided,
    CaseEscalated,
    CaseInfoRequested,
    CaseResumed,
    CaseRouted,
    CaseSlaBreached,
    CaseTransferred,
    CloudEvent,
    EligibilityDetermined,
    EligibilityOpportunity,
    EventData,
    HouseholdCaseClosed,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCasePlanChanged,
    NotificationFailed,
    NotificationSent,
    ReferralAccepted,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclined,
    ResidentErased,
    ScreeningQuestionAsked,
)

E = TypeVar("E", bound=EventData)

CASE_EVENTS = (
    CaseRouted,
    CaseAssigned,
    CaseInfoRequested,
    CaseDecided,
    CaseTransferred,
    CaseEscalated,
    CaseSlaBreached,
    CaseResumed,
    CaseClosed,
)

HOUSEHOLD_EVENTS = (HouseholdCaseOpened, HouseholdCaseMemberAdded, HouseholdCasePlanChanged, HouseholdCaseClosed)
REFERRAL_EVENTS = (ReferralCreated, ReferralAccepted, ReferralDeclined, ReferralCompleted)


def _with_repository(apply: Callable[[Repository, CloudEvent, E], Awaitable[None]]) -> Apply[E]:
    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        # An application's events come together in a batch: its determination (read twice by each case event),
        # cases and offices are read once per transaction, not once per event.
        hold_loaded(session)
        await apply(Repository(session), event, data)

    return handler


def subscriptions(ctx: IntakeContext) -> Sequence[Subscription]:
    async def found(session: AsyncSession, event: CloudEvent, data: EligibilityOpportunity) -> None:
        await opportunities.on_found(Repository(session), ctx.outbox, ctx.settings, ctx.clock.today(), data)

    async def asked(session: AsyncSession, event: CloudEvent, data: ScreeningQuestionAsked) -> None:
        await opportunities.on_question(Repository(session), data)

    async def erased(session: AsyncSession, event: CloudEvent, data: ResidentErased) -> None:
        await erasure.on_erased(Repository(session), ctx, event, data)

    return [
        Subscription(
            name="status-view",
            handlers=[
                on(EligibilityDetermined, _with_repository(apply_determination)),
                *(on(model, _with_repository(apply_case_event)) for model in CASE_EVENTS),
                *(on(model, _with_repository(apply_referral_event)) for model in REFERRAL_EVENTS),
                *(on(model, _with_repository(apply_household_event)) for model in HOUSEHOLD_EVENTS),
                on(NotificationSent, _with_repository(apply_notification)),
                on(NotificationFailed, _with_repository(apply_notification)),
            ],
            load=load_for_batch,
            finish=refresh_statuses,
        ),
        # Apart from the status view: screening a population must not hold up what residents see of applications.
        Subscription(name="offers", handlers=[on(EligibilityOpportunity, found), on(ScreeningQuestionAsked, asked)]),
        # Apart: an erasure's answers never wait behind the status view's traffic.
        Subscription(name="erasures", handlers=[on(ResidentErased, erased)]),
    ]
