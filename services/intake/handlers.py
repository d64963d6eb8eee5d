"""What intake consumes: every downstream event that changes what a resident sees of their application (cases,
referrals to partners, notifications), what proactive screening found for them (offers, questions), and, apart, each
service's answer to a resident's erasure request. Each runs in the consumer's transaction, beside the inbox row that
makes it effectively-once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy import event as orm_events
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.intake import erasure, opportunities
from services.intake.context import IntakeContext
from services.intake.repository import Repository
from services.intake.status import (
    apply_case_event,
    apply_determination,
    apply_household_event,
    apply_notification,
    apply_referral_event,
)
from shared.consumer import Apply, Subscription, on
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


# What the status view's events loaded, held for the rest of the consumer's transaction (see _with_repository).
_KEPT = "intake_status_kept"


def _with_repository(apply: Callable[[Repository, CloudEvent, E], Awaitable[None]]) -> Apply[E]:
    async def handler(session: AsyncSession, event: CloudEvent, data: E) -> None:
        _keep_what_is_loaded(session)
        await apply(Repository(session), event, data)

    return handler


def _keep_what_is_loaded(session: AsyncSession) -> None:
    """The session's identity map holds rows weakly: a row read and not changed is dropped as soon as nothing refers
    to it, and the next read of it (the determination, by each case event, twice; the cases and offices, by the next
    event of the same application: a batch brings an application's events together) went to the database again.
    Held to the end of the transaction, they are found in the identity map instead."""
    if _KEPT in session.info:
        return
    kept: dict[int, object] = {}
    session.info[_KEPT] = kept

    def keep(_: Session, instance: object) -> None:
        kept[id(instance)] = instance

    orm_events.listen(session.sync_session, "loaded_as_persistent", keep)
    orm_events.listen(session.sync_session, "pending_to_persistent", keep)


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
        ),
        # Apart from the status view: screening a population must not hold up what residents see of applications.
        Subscription(name="offers", handlers=[on(EligibilityOpportunity, found), on(ScreeningQuestionAsked, asked)]),
        # Apart: an erasure's answers never wait behind the status view's traffic.
        Subscription(name="erasures", handlers=[on(ResidentErased, erased)]),
    ]
