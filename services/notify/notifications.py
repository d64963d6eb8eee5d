"""Composing resident notifications from events (runs inside the consumer's transaction; never commits).

Rules:
- a message is about one application (or, for proactive opportunities, about none) and of one kind; events of the
  same kind for the same application that arrive within ``bundle_window_seconds`` become one message (three
  automatic approvals after one evaluation are one "decided" message, not three);
- eligibility results only mention programs whose outcome (or open questions, or amount) changed since the resident
  was last told, and a late round never overrides a newer one;
- after ``application.withdrawn`` nothing more goes out for that application, whatever order events arrive in;
- ``eligibility.opportunity`` and ``screening.question_asked`` are only told to a resident whose current consents
  include ``proactive_screening``;
- each source event yields at most one item per resident (a unique key), so a redelivered event changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import resident_data
from services.notify.models import (
    ApplicationProgram,
    NotificationStatus,
    Representation,
    TrackedApplication,
    utcnow,
)
from services.notify.repository import NewNotification, Repository
from services.notify.settings import NotifySettings
from shared.consumer import named_id
from shared.events import (
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
    CriterionStatus,
    EligibilityDetermined,
    EligibilityOpportunity,
    HouseholdCaseClosed,
    HouseholdCaseEventBase,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCasePlanChanged,
    Outcome,
    ProgramDetermination,
    RepresentationChanged,
    ResidentContext,
    ResidentErasureCompleted,
    ResidentUpdated,
    ScreeningQuestionAsked,
)

log = logging.getLogger(__name__)

WORK_PENDING = "notify_work_pending"
WITHDRAWN_KIND = "application.withdrawn"
ERASURE_KIND = "resident.erasure_completed"
PROACTIVE_CONSENT = "proactive_screening"
# Kinds where events arriving close together are told together.
BUNDLED_KINDS = frozenset(
    {
        "eligibility.determined",
        "case.routed",
        "case.info_requested",
        "case.resumed",
        "case.transferred",
        "case.decided",
        "case.sla_breached",
        "eligibility.opportunity",
        "screening.question_asked",
    }
)


RESIDENT_WORK = "residents"
PARTNER_WORK = "partners"


def mark_work(session: AsyncSession, worker: str = RESIDENT_WORK) -> None:
    """Wake ``worker`` (the residents' or the partners' delivery loop) once this transaction commits, and only that
    one: a loop woken with nothing due makes a claim query for nothing, and under load the consumers commit several
    times a second."""
    pending: set[str] = session.info.setdefault(WORK_PENDING, set())
    pending.add(worker)


class ResidentMessages:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------------------------------ state events

    async def consent_changed(self, session: AsyncSession, event: CloudEvent, data: ConsentChanged) -> None:
        repo = Repository(session)
        state = await repo.resident_state(data.resident_id)
        if data.version > state.consent_version:  # a late, older consent set never overrides a newer one
            state.consents = dict(data.consents)
            state.consent_version = data.version
            state.updated_at = utcnow()

    async def resident_updated(self, session: AsyncSession, event: CloudEvent, data: ResidentUpdated) -> None:
        repo = Repository(session)
        state = await repo.resident_state(data.resident_id)
        if data.version > state.profile_version:
            state.language = data.preferred_language.value
            state.profile_version = data.version
            state.updated_at = utcnow()

    async def representation_changed(
        self, session: AsyncSession, event: CloudEvent, data: RepresentationChanged
    ) -> None:
        """Who may read a resident's messages for them (``inbox.reader``): the highest version wins, so a late
        "named" never undoes a revocation."""
        repo = Repository(session)
        row = await repo.representation(data.representation_id)
        if row is None:
            row = Representation(representation_id=data.representation_id, version=0)
            repo.session.add(row)
        elif data.version <= row.version:
            return
        row.resident_id = data.resident_id
        row.representative_id = data.representative_id
        row.scopes = list(data.scopes)
        row.expires_on = data.expires_on
        row.revoked_at = data.revoked_at
        row.version = data.version
        row.updated_at = utcnow()

    async def _note_context(self, repo: Repository, resident_id: uuid.UUID, context: ResidentContext) -> None:
        """An application's resident context tells the language too, until a resident.updated says otherwise."""
        state = await repo.resident_state(resident_id)
        if state.profile_version == 0 and state.language != context.preferred_language.value:
            state.language = context.preferred_language.value
            state.updated_at = utcnow()

    # ------------------------------------------------------------------------------------------ application events

    async def application_submitted(self, session: AsyncSession, event: CloudEvent, data: ApplicationSubmitted) -> None:
        repo = Repository(session)
        await self._note_context(repo, data.resident_id, data.resident)
        application = await repo.tracked_application(data.application_id, data.resident_id)
        application.life_event = data.life_event
        if application.withdrawn_at is not None or application.last_round > 0:
            # Withdrawn already, or results went out before this (late) event: "received" would only confuse.
            return
        item = {
            "life_event": data.life_event,
            "application_date": data.application_date.isoformat(),
            "channel": data.channel.value,
        }
        await self._add(repo, event, data.resident_id, data.application_id, "application.submitted", item)

    async def application_withdrawn(self, session: AsyncSession, event: CloudEvent, data: ApplicationWithdrawn) -> None:
        repo = Repository(session)
        application = await repo.tracked_application(data.application_id, data.resident_id)
        await repo.suppress_for_application(data.application_id, keep_kind=WITHDRAWN_KIND)
        if application.withdrawn_at is not None:
            return  # confirmed once already (intake announced it twice)
        application.withdrawn_at = data.withdrawn_at
        application.updated_at = utcnow()
        item = {"withdrawn_at": data.withdrawn_at.isoformat()}
        await self._add(repo, event, data.resident_id, data.application_id, WITHDRAWN_KIND, item)

    async def eligibility_determined(
        self, session: AsyncSession, event: CloudEvent, data: EligibilityDetermined
    ) -> None:
        repo = Repository(session)
        await self._note_context(repo, data.resident_id, data.resident)
        application = await repo.tracked_application(data.application_id, data.resident_id)
        if data.round <= application.last_round:
            log.info("older eligibility round ignored", extra={"round": data.round, "seen": application.last_round})
            return
        application.last_round = data.round
        application.updated_at = utcnow()
        # Loaded with the batch's events (load_for_batch): no query of its own.
        known = await repo.application_programs(data.application_id, [p.program_code for p in data.programs])
        changed = []
        now = utcnow()
        for program in data.programs:
            signature = _signature(program)
            row = known.get(program.program_code)
            if row is None:  # told for the first time
                changed.append(_program_entry(program))
                repo.add_program(
                    {"application_id": data.application_id, "program_code": program.program_code,
                     "program_name": program.program_name.model_dump(), "outcome": program.outcome.value,
                     "signature": signature, "round": data.round, "updated_at": now}
                )  # fmt: skip
                continue
            if row.outcome != program.outcome.value or row.signature != signature:
                changed.append(_program_entry(program))
            row.program_name = program.program_name.model_dump()
            row.outcome = program.outcome.value
            row.signature = signature
            row.round = data.round
            row.updated_at = now
        if not changed or application.withdrawn_at is not None:
            return
        item = {"round": data.round, "programs": changed}
        await self._add(repo, event, data.resident_id, data.application_id, "eligibility.determined", item)

    async def eligibility_opportunity(
        self, session: AsyncSession, event: CloudEvent, data: EligibilityOpportunity
    ) -> None:
        repo = Repository(session)
        state = await repo.find_resident_state(data.resident_id)
        if state is None or not state.consented(PROACTIVE_CONSENT):
            # Without a known, current consent we stay silent (the consent may have been withdrawn meanwhile).
            log.info("opportunity not told: no proactive-screening consent")
            return
        item = {
            "program_code": data.program_code,
            "program_name": data.program_name.model_dump(),
            "department": data.department.value,
            "amount": data.amount,
            "amount_period": data.amount_period,
        }
        await self._add(repo, event, data.resident_id, None, "eligibility.opportunity", item)

    async def screening_question_asked(
        self, session: AsyncSession, event: CloudEvent, data: ScreeningQuestionAsked
    ) -> None:
        """A near miss: the resident is told there is one question whose answer could open a program to them."""
        repo = Repository(session)
        state = await repo.find_resident_state(data.resident_id)
        if state is None or not state.consented(PROACTIVE_CONSENT):
            log.info("question not told: no proactive-screening consent")
            return
        item = {
            "program_code": data.program_code,
            "program_name": data.program_name.model_dump(),
            "department": data.department.value,
            "question": data.fact.question.model_dump(),
        }
        await self._add(repo, event, data.resident_id, None, "screening.question_asked", item)

    async def erasure_completed(self, session: AsyncSession, event: CloudEvent, data: ResidentErasureCompleted) -> None:
        """Tell the resident the result of their erasure request (개인정보 보호법 제36조 제2항): what every service
        keeps, why and until when. Their contact details are asked of intake, which keeps them for this."""
        repo = Repository(session)
        item = {
            "completed_at": data.completed_at.isoformat(),
            "kept": [k.model_dump(mode="json") for k in data.kept],
        }
        await self._add(repo, event, data.resident_id, None, ERASURE_KIND, item)

    # ------------------------------------------------------------------------------------------ household cases

    async def household_case_opened(self, session: AsyncSession, event: CloudEvent, data: HouseholdCaseOpened) -> None:
        """Integrated case management took the household on: each member is told which team will plan with them."""
        item = {"office_code": data.office_code, "office_name": data.office_name.model_dump()}
        await self._household(session, event, data, "household_case.opened", item)

    async def household_case_member_added(
        self, session: AsyncSession, event: CloudEvent, data: HouseholdCaseMemberAdded
    ) -> None:
        """A resident joined a running household case: they alone are told what the others were at opening."""
        if await resident_data.erased(session, data.resident_id):
            return
        item = {"office_code": data.office_code, "office_name": data.office_name.model_dump(),
                "household_case_id": str(data.household_case_id)}  # fmt: skip
        await self._add(Repository(session), event, data.resident_id, None, "household_case.opened", item)

    async def household_case_plan_changed(
        self, session: AsyncSession, event: CloudEvent, data: HouseholdCasePlanChanged
    ) -> None:
        item = {"plan_version": data.plan_version, "domains": [d.value for d in data.domains], "goals": data.goals,
                "services": data.services}  # fmt: skip
        await self._household(session, event, data, "household_case.plan_changed", item)

    async def household_case_closed(self, session: AsyncSession, event: CloudEvent, data: HouseholdCaseClosed) -> None:
        item = {"outcome": data.outcome.value, "follow_up_check_on": data.follow_up_check_on.isoformat()}
        await self._household(session, event, data, "household_case.closed", item)

    async def _household(
        self,
        session: AsyncSession,
        event: CloudEvent,
        data: HouseholdCaseEventBase,
        kind: str,
        item: dict[str, Any],
    ) -> None:
        """One message to each member, in their own language; a member who asked for erasure is not told."""
        repo = Repository(session)
        for member in data.member_ids:
            if await resident_data.erased(session, member):
                continue
            await self._add(repo, event, member, None, kind, {**item, "household_case_id": str(data.household_case_id)})

    # ------------------------------------------------------------------------------------------ case events

    async def case_routed(self, session: AsyncSession, event: CloudEvent, data: CaseRouted) -> None:
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        program.office_code = data.office_code
        program.office_name = data.office_name.model_dump()
        if data.status == "closed":
            return  # closed at once (an automatic grant): its decision message tells the resident
        item = {
            **_case_basics(data.case_id, data.program_code, program),
            "due_date": data.due_date.isoformat() if data.due_date else None,
        }
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.routed", item)

    async def case_info_requested(self, session: AsyncSession, event: CloudEvent, data: CaseInfoRequested) -> None:
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        item = {
            **_case_basics(data.case_id, data.program_code, program),
            "questions": [q.text for q in data.questions],
        }
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.info_requested", item)

    async def case_resumed(self, session: AsyncSession, event: CloudEvent, data: CaseResumed) -> None:
        """The resident's answer arrived: confirm it, with the due date moved by the time the case waited."""
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        item = {**_case_basics(data.case_id, data.program_code, program), "due_date": data.due_date.isoformat()}
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.resumed", item)

    async def case_transferred(self, session: AsyncSession, event: CloudEvent, data: CaseTransferred) -> None:
        """Another office handles the case now: the resident should know whom to turn to."""
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        program.office_code = data.office_code
        program.office_name = data.office_name.model_dump()
        item = {
            **_case_basics(data.case_id, data.program_code, program),
            "due_date": data.due_date.isoformat() if data.due_date else None,
        }
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.transferred", item)

    async def case_decided(self, session: AsyncSession, event: CloudEvent, data: CaseDecided) -> None:
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        item = {
            **_case_basics(data.case_id, data.program_code, program),
            "decision": data.decision.value,
            "reason_code": data.reason_code,
            "reason": data.reason.model_dump() if data.reason else None,
            "amount": data.amount,
            "amount_period": None,
        }
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.decided", item)

    async def case_sla_breached(self, session: AsyncSession, event: CloudEvent, data: CaseSlaBreached) -> None:
        repo = Repository(session)
        program = await self._program(repo, data.application_id, data.program_code)
        item = {
            **_case_basics(data.case_id, data.program_code, program),
            "due_date": data.due_date.isoformat(),
            "expected_by": data.expected_by.isoformat() if data.expected_by else None,
        }
        await self._case_message(repo, event, data.resident_id, data.application_id, "case.sla_breached", item)

    async def _program(self, repo: Repository, application_id: uuid.UUID, code: str) -> ApplicationProgram:
        program = await repo.application_program(application_id, code)
        if program is None:  # a case event before the eligibility result: name the program by its code for now
            program = ApplicationProgram(application_id=application_id, program_code=code, round=0,
                                         updated_at=utcnow())  # fmt: skip
            repo.session.add(program)
        return program

    async def _case_message(
        self,
        repo: Repository,
        event: CloudEvent,
        resident_id: uuid.UUID,
        application_id: uuid.UUID,
        kind: str,
        item: dict[str, Any],
    ) -> None:
        application = await repo.tracked_application(application_id, resident_id)
        if application.withdrawn_at is not None:
            return
        await self._add(repo, event, resident_id, application_id, kind, item)

    # ------------------------------------------------------------------------------------------ composing

    async def _add(
        self,
        repo: Repository,
        event: CloudEvent,
        resident_id: uuid.UUID,
        application_id: uuid.UUID | None,
        kind: str,
        data: dict[str, Any],
    ) -> None:
        if await repo.item_exists(event.id, resident_id):
            return  # this event was told already (a replayed dead letter, say)
        now = utcnow()
        notification = None
        if kind in BUNDLED_KINDS and self.settings.bundle_window_seconds > 0:
            notification = await repo.open_bundle(resident_id, application_id, kind, now)
        if notification is None:
            window = self.settings.bundle_window_seconds if kind in BUNDLED_KINDS else 0.0
            notification = repo.add_notification(
                NewNotification(
                    id=uuid.uuid4(),
                    resident_id=resident_id,
                    application_id=application_id,
                    kind=kind,
                    status=NotificationStatus.COLLECTING.value,
                    language=await self._language(repo, resident_id),
                    created_at=now,
                    next_step_at=now + dt.timedelta(seconds=window),
                    step_attempts=0,
                )
            )
        # Written with the rest of the transaction: the next event of the batch finds the bundle and the item among
        # those kept aside (Repository.open_bundle, item_exists, add_notification, add_item).
        repo.told(notification, event.id, resident_id)
        repo.add_item(
            {"notification_id": notification.id, "resident_id": resident_id, "source_event_id": event.id,
             "event_type": event.event_type, "occurred_at": event.time, "data": data}
        )  # fmt: skip
        if notification.next_step_at <= now:
            mark_work(repo.session)
        # else a bundle collecting until its window closes: the worker's interval pass finds it then (woken now, it
        # would find nothing due)

    async def _language(self, repo: Repository, resident_id: uuid.UUID) -> str:
        preference = await repo.preference(resident_id)
        if preference is not None and preference.language:
            return preference.language
        state = await repo.find_resident_state(resident_id)
        return state.language if state is not None and state.language else "ko"


def withdrawn(application: TrackedApplication | None, kind: str) -> bool:
    """Whether a message of ``kind`` about ``application`` must no longer go out."""
    return application is not None and application.withdrawn_at is not None and kind != WITHDRAWN_KIND


def _signature(program: ProgramDetermination) -> str:
    """What the resident was told about a program: outcome, the questions put to them, the amount."""
    asked = sorted(m.name for m in program.missing if m.asked_of == "resident")
    staff = any(m.asked_of == "staff" for m in program.missing)
    raw = orjson.dumps([program.outcome.value, asked, staff, program.amount, program.amount_period])
    return hashlib.sha256(raw).hexdigest()


def _program_entry(program: ProgramDetermination) -> dict[str, Any]:
    reasons = []
    if program.outcome is Outcome.INELIGIBLE:
        reasons = [c.label.model_dump() for c in program.criteria if c.status is CriterionStatus.FAILED]
    return {
        "code": program.program_code,
        "name": program.program_name.model_dump(),
        "department": program.department.value,
        "outcome": program.outcome.value,
        "automatic": program.automatic,
        "amount": program.amount,
        "amount_period": program.amount_period,
        "questions": [m.question.model_dump() for m in program.missing if m.asked_of == "resident"],
        "staff_pending": any(m.asked_of == "staff" for m in program.missing),
        "reasons": reasons,
    }


def _case_basics(case_id: uuid.UUID, program_code: str, program: ApplicationProgram) -> dict[str, Any]:
    return {
        "case_id": str(case_id),
        "program_code": program_code,
        "program_name": program.program_name,
        "office_code": program.office_code,
        "office_name": program.office_name,
    }


async def finish_batch(session: AsyncSession) -> None:
    """The residents' consumer's finish (``Subscription.finish``): what its transaction kept aside to write at once."""
    repo = Repository(session)
    await repo.write_new_programs()
    await repo.write_new_items()


async def load_for_batch(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    """The residents' consumer's load (``Subscription.load``): the applications, programs, items and bundles a
    transaction's events will look up, read in a query per kind at its start instead of a lookup per event."""
    applications: set[uuid.UUID] = set()
    programs: set[tuple[uuid.UUID, str]] = set()
    residents: set[uuid.UUID] = set()
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        members = data.get("member_ids")
        named = [data.get("resident_id"), *(members if isinstance(members, list) else [])]
        residents.update(r for r in (named_id(v) for v in named) if r)
        application_id = named_id(data.get("application_id"))
        if application_id is not None:
            applications.add(application_id)
            if event.event_type.startswith("case.") and isinstance(code := data.get("program_code"), str):
                programs.add((application_id, code))
            elif event.event_type == EligibilityDetermined.event_type:
                told = data.get("programs")
                for program in told if isinstance(told, list) else ():
                    if isinstance(program, dict) and isinstance(code := program.get("program_code"), str):
                        programs.add((application_id, code))
    await Repository(session).load_for_events(applications, programs, {e.id for e in events}, residents)
