"""Proactive offers and screening questions, as the resident meets them.

- Screening found a resident eligible for a program they never applied to (``eligibility.opportunity``): if the
  resident consents to proactive screening now, intake puts an **offer** before them (``opportunity.offered``),
  standing for ``offer_valid_days``. Without that consent nothing is offered (the design's consent section).
- Accepting files an application for that program alone with **one confirmation**: what eligibility already knows
  (the registry, department facts the resident allowed, answers they gave to screening questions) fills it, so only
  what is missing is asked afterwards (``opportunity.accepted``). Declining records an enumerated reason
  (``opportunity.declined``). An offer not answered by its last day expires (``opportunity.expired``), as all
  standing offers do at once when the resident withdraws their proactive-screening consent.
- A near miss (``screening.question_asked``) is **one question** — which fact, and why; the answer goes back to
  eligibility (``screening.question_answered``), which screens the resident again.

Who may: the resident; a representative they named — reading with the ``apply`` or ``answer`` scope, accepting and
declining with ``apply``, answering with ``answer``; counter staff of an office the resident authorised (reading,
accepting, declining, answering for them); staff who may see the resident's record may read (audited). Anyone else
finds nothing (404); who may see but not act is refused (403). Every act or read by someone else is in the resident's
access log.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from services.intake import applications
from services.intake.access import (
    PURPOSE_ASSISTED_APPLICATION,
    Act,
    by_representative,
    counter_authority,
    is_self,
    purpose_of,
    read_purpose,
    record_access,
    representation_for,
    representative_authority,
)
from services.intake.catalogue import CatalogueSnapshot
from services.intake.models import Opportunity, Resident, ScreeningQuestion
from services.intake.repository import OFFICE_ROLES, Repository
from services.intake.schemas import (
    ApplicationCreate,
    OpportunityAccept,
    OpportunityAccepted,
    OpportunityDecline,
    OpportunityStatus,
    OpportunityView,
    QuestionAnswer,
    QuestionFact,
    QuestionStatus,
    ScreeningQuestionView,
)
from services.intake.settings import IntakeSettings
from shared.audit import Authority
from shared.auth import Principal
from shared.events import (
    ActedAs,
    Channel,
    Department,
    EligibilityOpportunity,
    Language,
    Localized,
    OfferDeclineReason,
    OpportunityDeclined,
    OpportunityExpired,
    OpportunityOffered,
    ResidentContext,
    ScreeningQuestionAnswered,
    ScreeningQuestionAsked,
    Vulnerability,
)
from shared.events import OpportunityAccepted as OpportunityAcceptedEvent
from shared.outbox import Outbox
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent

log = logging.getLogger(__name__)

PROACTIVE = "proactive_screening"
READ_SCOPES = (Act.APPLY, Act.ANSWER)
PURPOSE_OFFERS = "proactive offers"


class OfferNotOpen(Conflict):
    slug = "offer-not-open"

    def __init__(self, status: str, application_id: uuid.UUID | None = None) -> None:
        super().__init__(
            f"The offer is {status}; only a standing offer can be accepted or declined.",
            offer_status=status,
            application_id=str(application_id) if application_id else None,
        )


class OfferUnavailable(Conflict):
    slug = "offer-unavailable"


class QuestionNotOpen(Conflict):
    slug = "question-not-open"

    def __init__(self, question: ScreeningQuestion) -> None:
        super().__init__(f"The question is {question.status}.", question_status=question.status)


# ---------------------------------------------------------------------------------------------- who may


async def _resident(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, today: dt.date, scopes: tuple[Act, ...]
) -> Resident:
    """The resident whose offers the caller may see: their record's readers, and a representative in one of
    ``scopes``. To anyone else they do not exist."""
    resident = await repo.visible_resident(principal, resident_id, today=today)
    if resident is None:
        representation = await representation_for(repo, principal, resident_id, today)
        if representation is not None and any(s.value in representation.scopes for s in scopes):
            resident = await repo.resident(resident_id)
    if resident is None or resident.erased_at is not None:
        # An erased resident's stub answers as no resident: nothing is offered or asked of them (erasure.py).
        raise NotFound(f"No resident {resident_id}.")
    return resident


async def _acting(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, scope: Act, today: dt.date, action: str
) -> Authority | None:
    """``None``: the resident themselves. Otherwise the authority the caller acts under: a representation in
    ``scope``, or a counter authority the resident gave one of the caller's offices."""
    if is_self(principal, resident_id):
        return None
    representation = await representation_for(repo, principal, resident_id, today)
    if representation is not None and scope.value in representation.scopes:
        return representative_authority(representation)
    if principal.role in OFFICE_ROLES:
        authority = await repo.current_counter_authority(resident_id, principal.offices, today)
        if authority is not None:
            return counter_authority(authority)
    raise Forbidden(
        f"Only the resident, a representative they named for it, or counter staff they authorised may {action}."
    )


def acted_as(authority: Authority | None) -> ActedAs:
    if authority is None:
        return ActedAs.RESIDENT
    return ActedAs.REPRESENTATIVE if by_representative(authority) else ActedAs.COUNTER


async def _record(
    repo: Repository,
    principal: Principal,
    resident: Resident,
    authority: Authority | None,
    *,
    action: str,
    record_type: str,
    record_id: uuid.UUID,
    today: dt.date,
) -> None:
    if is_self(principal, resident.id):
        return
    if authority is not None:
        purpose = purpose_of(authority)
    else:
        purpose, authority = await read_purpose(repo, principal, resident.id, today, otherwise=PURPOSE_OFFERS)
    await record_access(
        repo,
        principal,
        resident.id,
        action=action,
        record_type=record_type,
        record_id=record_id,
        purpose=purpose,
        authority=authority,
    )


# ---------------------------------------------------------------------------------------------- events in


def resident_context(resident: Resident, settings: IntakeSettings, today: dt.date) -> ResidentContext:
    """Where the resident lives and what makes them one to visit: the flags on their record, and an older person
    living alone (``elderly_age`` or over, nobody else in the household) when the record does not say so yet."""
    flags = [Vulnerability(v) for v in resident.vulnerability]
    born = resident.birth_date
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age >= settings.elderly_age and not resident.household and Vulnerability.ELDERLY_ALONE not in flags:
        flags.append(Vulnerability.ELDERLY_ALONE)
    return ResidentContext(
        district_code=resident.district_code,
        preferred_language=Language(resident.preferred_language),
        vulnerability=flags,
        household_id=resident.household_id,
    )


async def _consenting(repo: Repository, resident_id: uuid.UUID) -> Resident | None:
    resident = await repo.resident(resident_id)
    if resident is None or resident.erased_at is not None:
        return None
    consents = {c.purpose: c.granted for c in await repo.consents(resident_id)}
    return resident if consents.get(PROACTIVE, False) else None


async def on_found(
    repo: Repository, outbox: Outbox, settings: IntakeSettings, today: dt.date, data: EligibilityOpportunity
) -> None:
    """Put the offer before the resident, once per program, if they consent to proactive screening now."""
    resident = await _consenting(repo, data.resident_id)
    if resident is None:
        log.info("no offer made: no proactive-screening consent now (or erased)", extra={"program": data.program_code})
        return
    if await repo.opportunity_for(resident.id, data.program_code) is not None:
        return
    now = dt.datetime.now(dt.UTC)
    offer = Opportunity(
        id=uuid.uuid4(),
        resident_id=resident.id,
        program_code=data.program_code,
        program_name=data.program_name.model_dump(),
        department=data.department.value,
        amount=data.amount,
        amount_period=data.amount_period,
        screening_id=data.screening_id,
        found_at=data.found_at,
        offered_at=now,
        expires_on=today + dt.timedelta(days=settings.offer_valid_days),
        status=OpportunityStatus.OFFERED.value,
        updated_at=now,
    )
    repo.session.add(offer)
    await repo.session.flush()
    await outbox.emit(
        repo.session,
        OpportunityOffered(
            opportunity_id=offer.id,
            resident_id=resident.id,
            program_code=offer.program_code,
            program_name=data.program_name,
            department=data.department,
            amount=offer.amount,
            amount_period=data.amount_period,
            offered_at=now,
            expires_on=offer.expires_on,
            resident=resident_context(resident, settings, today),
        ),
        subject=str(resident.id),
    )


async def on_question(repo: Repository, data: ScreeningQuestionAsked) -> None:
    """Keep the question for the resident, if they consent to proactive screening now."""
    resident = await _consenting(repo, data.resident_id)
    if resident is None:
        log.info("no question asked: no proactive-screening consent now", extra={"program": data.program_code})
        return
    if await repo.screening_question(data.question_id) is not None:
        return
    repo.session.add(
        ScreeningQuestion(
            id=data.question_id,
            resident_id=resident.id,
            program_code=data.program_code,
            program_name=data.program_name.model_dump(),
            department=data.department.value,
            fact=data.fact.name,
            fact_type=data.fact.type,
            question=data.fact.question.model_dump(),
            choices=data.choices,
            why=data.why.model_dump(),
            asked_at=data.asked_at,
            status=QuestionStatus.OPEN.value,
        )
    )


# ---------------------------------------------------------------------------------------------- reading


def offer_view(offer: Opportunity) -> OpportunityView:
    return OpportunityView(
        id=offer.id,
        resident_id=offer.resident_id,
        program_code=offer.program_code,
        program_name=Localized.model_validate(offer.program_name),
        department=Department(offer.department),
        amount=offer.amount,
        amount_period=offer.amount_period,
        status=OpportunityStatus(offer.status),
        offered_at=offer.offered_at,
        expires_on=offer.expires_on,
        responded_at=offer.responded_at,
        acted_as=ActedAs(offer.acted_as) if offer.acted_as else None,
        decline_reason=OfferDeclineReason(offer.decline_reason) if offer.decline_reason else None,
        expired_reason=offer.expired_reason,
        application_id=offer.application_id,
    )


def question_view(question: ScreeningQuestion) -> ScreeningQuestionView:
    return ScreeningQuestionView(
        id=question.id,
        resident_id=question.resident_id,
        program_code=question.program_code,
        program_name=Localized.model_validate(question.program_name),
        department=Department(question.department),
        fact=QuestionFact(
            name=question.fact,
            type=question.fact_type,
            question=Localized.model_validate(question.question),
            choices=question.choices,
        ),
        why=Localized.model_validate(question.why),
        asked_at=question.asked_at,
        status=QuestionStatus(question.status),
        answer=question.answer,
        answered_at=question.answered_at,
        acted_as=ActedAs(question.acted_as) if question.acted_as else None,
    )


async def offers_of(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, status: OpportunityStatus | None, today: dt.date
) -> list[OpportunityView]:
    resident = await _resident(repo, principal, resident_id, today, READ_SCOPES)
    offers = await repo.opportunities_of(resident.id, status.value if status else None)
    await _record(
        repo,
        principal,
        resident,
        None,
        action="read offers",
        record_type="opportunities",
        record_id=resident.id,
        today=today,
    )
    return [offer_view(o) for o in offers]


async def questions_of(
    repo: Repository, principal: Principal, resident_id: uuid.UUID, status: QuestionStatus | None, today: dt.date
) -> list[ScreeningQuestionView]:
    resident = await _resident(repo, principal, resident_id, today, READ_SCOPES)
    questions = await repo.questions_of(resident.id, status.value if status else None)
    await _record(
        repo,
        principal,
        resident,
        None,
        action="read screening questions",
        record_type="questions",
        record_id=resident.id,
        today=today,
    )
    return [question_view(q) for q in questions]


# ---------------------------------------------------------------------------------------------- acting


async def _standing_offer(
    repo: Repository,
    principal: Principal,
    resident_id: uuid.UUID,
    opportunity_id: uuid.UUID,
    today: dt.date,
    action: str,
) -> tuple[Resident, Opportunity, Authority | None]:
    resident = await _resident(repo, principal, resident_id, today, READ_SCOPES)
    offer = await repo.opportunity(resident.id, opportunity_id, for_update=True)
    if offer is None:
        raise NotFound(f"No offer {opportunity_id}.")
    authority = await _acting(repo, principal, resident.id, Act.APPLY, today, action)
    if offer.status != OpportunityStatus.OFFERED:
        raise OfferNotOpen(offer.status, offer.application_id)
    if offer.expires_on < today:  # past its last day, though the expiry timer has not closed it yet
        raise OfferNotOpen(OpportunityStatus.EXPIRED.value)
    return resident, offer, authority


def _life_event(catalogue: CatalogueSnapshot, program_code: str) -> str:
    for event in catalogue.life_events:
        if any(p.code == program_code for p in event.programs):
            return event.code
    raise OfferUnavailable(f"{program_code} is no longer in the catalogue's life events; it cannot be applied for.")


async def accept(
    repo: Repository,
    outbox: Outbox,
    catalogue: CatalogueSnapshot,
    principal: Principal,
    resident_id: uuid.UUID,
    opportunity_id: uuid.UUID,
    body: OpportunityAccept,
    today: dt.date,
) -> OpportunityAccepted:
    """File an application for the offered program with one confirmation: what the resident already answered to
    screening questions goes in with the answers given now; eligibility adds what it knows (the registry, department
    facts the resident allowed), so only what is still missing is asked afterwards."""
    resident, offer, authority = await _standing_offer(
        repo, principal, resident_id, opportunity_id, today, "accept an offer for them"
    )
    life_event = _life_event(catalogue, offer.program_code)
    known = {
        name: value
        for name, value in (await repo.answered_facts(resident.id)).items()
        if name in catalogue.fact_types and not catalogue.fact_types[name].derived
    }
    channel = body.channel if authority is None or by_representative(authority) else Channel.VISIT
    application = await applications.submit(
        repo,
        outbox,
        catalogue,
        principal,
        ApplicationCreate(
            resident_id=resident.id, life_event=life_event, answers={**known, **body.answers}, channel=channel
        ),
        today,
        offer=(offer.id, offer.program_code),
    )
    now = dt.datetime.now(dt.UTC)
    offer.status = OpportunityStatus.ACCEPTED.value
    offer.responded_at = now
    offer.acted_as = acted_as(authority).value
    offer.acted_by = principal.subject[:255]
    offer.application_id = application.id
    offer.updated_at = now
    await outbox.emit(
        repo.session,
        OpportunityAcceptedEvent(
            opportunity_id=offer.id,
            resident_id=resident.id,
            program_code=offer.program_code,
            department=Department(offer.department),
            application_id=application.id,
            acted_as=acted_as(authority),
            accepted_at=now,
        ),
        subject=str(resident.id),
    )
    if authority is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="accept offer",
            record_type="opportunity",
            record_id=offer.id,
            purpose=purpose_of(authority) if by_representative(authority) else PURPOSE_ASSISTED_APPLICATION,
            authority=authority,
        )
    return OpportunityAccepted(opportunity=offer_view(offer), application=application)


async def decline(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    resident_id: uuid.UUID,
    opportunity_id: uuid.UUID,
    body: OpportunityDecline,
    today: dt.date,
) -> OpportunityView:
    resident, offer, authority = await _standing_offer(
        repo, principal, resident_id, opportunity_id, today, "decline an offer for them"
    )
    now = dt.datetime.now(dt.UTC)
    offer.status = OpportunityStatus.DECLINED.value
    offer.responded_at = now
    offer.acted_as = acted_as(authority).value
    offer.acted_by = principal.subject[:255]
    offer.decline_reason = body.reason.value
    offer.decline_note = body.note
    offer.updated_at = now
    await outbox.emit(
        repo.session,
        OpportunityDeclined(
            opportunity_id=offer.id,
            resident_id=resident.id,
            program_code=offer.program_code,
            department=Department(offer.department),
            reason=body.reason,
            acted_as=acted_as(authority),
            declined_at=now,
        ),
        subject=str(resident.id),
    )
    if authority is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="decline offer",
            record_type="opportunity",
            record_id=offer.id,
            purpose=purpose_of(authority),
            authority=authority,
        )
    return offer_view(offer)


async def answer(
    repo: Repository,
    outbox: Outbox,
    catalogue: CatalogueSnapshot,
    principal: Principal,
    resident_id: uuid.UUID,
    question_id: uuid.UUID,
    body: QuestionAnswer,
    today: dt.date,
) -> ScreeningQuestionView:
    """Answer a screening question; every open question asking the same fact is answered with it."""
    resident = await _resident(repo, principal, resident_id, today, READ_SCOPES)
    question = await repo.screening_question(question_id, resident_id=resident.id, for_update=True)
    if question is None:
        raise NotFound(f"No question {question_id}.")
    authority = await _acting(repo, principal, resident.id, Act.ANSWER, today, "answer for them")
    if question.status != QuestionStatus.OPEN:
        raise QuestionNotOpen(question)
    answers, errors = applications.validate_answers(
        {question.fact: body.value}, catalogue.fact_types, by_staff=principal.is_staff
    )
    if errors:
        raise UnprocessableContent(
            "Invalid input: value",
            errors=[{**e, "field": "value"} for e in errors],
        )
    value: Any = answers[question.fact]
    now = dt.datetime.now(dt.UTC)
    for asked in await repo.open_questions(resident.id, question.fact):
        asked.status = QuestionStatus.ANSWERED.value
        asked.answer = value
        asked.answered_at = now
        asked.acted_as = acted_as(authority).value
        asked.acted_by = principal.subject[:255]
    await outbox.emit(
        repo.session,
        ScreeningQuestionAnswered(
            question_id=question.id,
            resident_id=resident.id,
            fact=question.fact,
            value=value,
            acted_as=acted_as(authority),
            answered_at=now,
        ),
        subject=str(resident.id),
    )
    if authority is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="answer screening question",
            record_type="question",
            record_id=question.id,
            purpose=purpose_of(authority),
            authority=authority,
        )
    return question_view(question)


# ---------------------------------------------------------------------------------------------- ending offers


async def _expire(repo: Repository, outbox: Outbox, offer: Opportunity, reason: str, now: dt.datetime) -> None:
    offer.status = OpportunityStatus.EXPIRED.value
    offer.expired_reason = reason
    offer.responded_at = None
    offer.updated_at = now
    await outbox.emit(
        repo.session,
        OpportunityExpired(
            opportunity_id=offer.id,
            resident_id=offer.resident_id,
            program_code=offer.program_code,
            department=Department(offer.department),
            reason=reason,
            expired_at=now,
        ),
        subject=str(offer.resident_id),
    )


async def consent_withdrawn(repo: Repository, outbox: Outbox, resident_id: uuid.UUID, now: dt.datetime) -> None:
    """The resident withdrew their proactive-screening consent: no offer stands and no question waits any more."""
    for offer in await repo.standing_offers(resident_id):
        await _expire(repo, outbox, offer, "consent_withdrawn", now)
    for question in await repo.open_questions(resident_id):
        question.status = QuestionStatus.WITHDRAWN.value


async def expire_lapsed(repo: Repository, outbox: Outbox, today: dt.date, limit: int = 500) -> int:
    """Offers whose last day has passed expire (the expiry timer's pass). Returns how many."""
    now = dt.datetime.now(dt.UTC)
    lapsed = await repo.lapsed_offers(today, limit)
    for offer in lapsed:
        await _expire(repo, outbox, offer, "deadline", now)
    return len(lapsed)
