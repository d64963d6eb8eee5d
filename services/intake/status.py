"""The one status view: an application's determination, cases, referrals to partners and notifications assembled
from eligibility's, routing's and notify's events, the overall status derived from them, and the timeline.

Events arrive late, out of order and more than once (the inbox removes exact duplicates). So: the highest eligibility
round wins and a lower one changes nothing; a case entry is created from whichever of its events comes first and
filled in by the others; each case field remembers the time of the event that set it, so an older event never
overwrites a newer one; a final state (decided, closed) is never undone by a late non-final event. Nothing here
commits.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import (
    Application,
    Case,
    Determination,
    Feedback,
    HouseholdCaseStatus,
    Notification,
    Referral,
    TimelineEntry,
)
from services.intake.repository import Repository, StatusParts
from services.intake.schemas import (
    ApplicationStatus,
    ApplicationView,
    CaseView,
    DeterminationSummary,
    FeedbackView,
    HouseholdCaseView,
    MissingInformation,
    NotificationView,
    ProgramView,
    ReferralView,
    TimelineEntryView,
)
from shared.consumer import named_id
from shared.db import ONE_SNAPSHOT
from shared.events import (
    CaseAssigned,
    CaseClosed,
    CaseDecided,
    CaseEscalated,
    CaseEventBase,
    CaseInfoRequested,
    CaseResumed,
    CaseRouted,
    CaseSlaBreached,
    CaseTransferred,
    Channel,
    CloudEvent,
    Department,
    EligibilityDetermined,
    HouseholdCaseClosed,
    HouseholdCaseEventBase,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCasePlanChanged,
    Localized,
    NotificationFailed,
    NotificationSent,
    Outcome,
    ProgramDetermination,
    ReferralAccepted,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclined,
    ReferralEventBase,
)

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"decided", "closed"})


def event_time(event: CloudEvent) -> dt.datetime:
    return event.time if event.time.tzinfo is not None else event.time.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------- derived facts


def info_open(case: Case) -> bool:
    """The case asked the resident for information and has not had an answer since."""
    if case.state in FINAL_STATES or case.info_requested_at is None:
        return False
    return case.info_answered_at is None or case.info_answered_at < case.info_requested_at


def case_status(case: Case) -> str:
    if case.state in FINAL_STATES:
        return case.state
    if info_open(case):
        return "information_requested"
    return "in_review" if case.assigned else "open"


def current_cases(cases: Sequence[Case]) -> dict[str, Case]:
    """Per program, its newest case (a re-evaluation may close one case and open another)."""
    out: dict[str, Case] = {}
    for case in sorted(cases, key=lambda c: (c.routed_at or c.first_seen_at, c.first_seen_at)):
        out[case.program_code] = case
    return out


def programs_of(determination: Determination | None) -> list[ProgramDetermination]:
    """The determination's programs, whole (for the view)."""
    if determination is None:
        return []
    return [ProgramDetermination.model_validate(p) for p in determination.programs]


@dataclass(frozen=True)
class Missing:
    name: str
    asked_of: str


@dataclass(frozen=True)
class ProgramState:
    """What the status needs of a determined program: its name, its outcome, the facts it still needs."""

    program_code: str
    program_name: Localized
    outcome: Outcome
    missing: tuple[Missing, ...]


# By determination id (a round's programs never change once stored; a new round has a new id). Each case and
# notification event needs them: validating a dozen whole programs with their criteria every time was most of what
# applying an event cost, and keeping them whole would take some 130 kB each. Kept as tuples of text under an integer
# key, which the garbage collector stops tracking: a full collection walks every tracked object, and 4,096 rounds of
# ProgramState instances (61 objects a round) made its pauses 80-180 ms under load.
_ProgramRow = tuple[str, str, str, str, tuple[tuple[str, str], ...]]
_PROGRAM_STATES: collections.OrderedDict[int, tuple[_ProgramRow, ...]] = collections.OrderedDict()
_PROGRAM_STATES_KEPT = 4096


def _program_row(program: Mapping[str, Any]) -> _ProgramRow:
    name = Localized.model_validate(program["program_name"])
    missing = tuple((m["name"], m.get("asked_of", "resident")) for m in program.get("missing") or ())
    return (program["program_code"], name.ko, name.en, Outcome(program["outcome"]).value, missing)


def _program_rows(determination: Determination) -> tuple[_ProgramRow, ...]:
    key = determination.determination_id.int
    rows = _PROGRAM_STATES.get(key)
    if rows is None:
        rows = tuple(_program_row(p) for p in determination.programs)
        _PROGRAM_STATES[key] = rows
        if len(_PROGRAM_STATES) > _PROGRAM_STATES_KEPT:
            _PROGRAM_STATES.popitem(last=False)
    else:
        _PROGRAM_STATES.move_to_end(key)
    return rows


def program_states(determination: Determination | None) -> tuple[ProgramState, ...]:
    if determination is None:
        return ()
    return tuple(
        ProgramState(
            code, Localized.model_construct(ko=ko, en=en), Outcome(outcome), tuple(Missing(*m) for m in missing)
        )
        for code, ko, en, outcome, missing in _program_rows(determination)
    )


def program_name(determination: Determination | None, program_code: str) -> Localized:
    """The program's name as its round gave it, or its code when the round does not name it (a case can arrive
    before its determination). Each case event needs only this one name: it is looked up in the kept rows, not
    built into every program's state."""
    if determination is not None:
        for code, ko, en, _outcome, _missing in _program_rows(determination):
            if code == program_code:
                return Localized.model_construct(ko=ko, en=en)
    return Localized(ko=program_code, en=program_code)


def settled(program: ProgramDetermination | ProgramState, current: Mapping[str, Case]) -> bool:
    if program.outcome is Outcome.INELIGIBLE:
        return True
    case = current.get(program.program_code)
    return case is not None and case.state in FINAL_STATES


def resident_questions(program: ProgramDetermination | ProgramState, answers: Mapping[str, Any]) -> list[str]:
    """Facts the program still needs that the resident can give and has not given."""
    return [m.name for m in program.missing if m.asked_of == "resident" and m.name not in answers]


def derive_status(application: Application, determination: Determination | None, cases: Sequence[Case]) -> str:
    if application.withdrawn_at is not None:
        return ApplicationStatus.WITHDRAWN.value
    programs = program_states(determination)
    current = current_cases(cases)
    if any(info_open(c) for c in cases):
        return ApplicationStatus.ACTION_REQUIRED.value
    if any(not settled(p, current) and resident_questions(p, application.answers) for p in programs):
        return ApplicationStatus.ACTION_REQUIRED.value
    if determination is not None and all(settled(p, current) for p in programs):
        return ApplicationStatus.COMPLETED.value
    if determination is not None or cases:
        return ApplicationStatus.IN_PROGRESS.value
    return ApplicationStatus.RECEIVED.value


async def refresh_status(repo: Repository, application: Application, at: dt.datetime | None = None) -> None:
    determination = await repo.determination(application.id)
    cases = await repo.cases(application.id)
    application.status = derive_status(application, determination, cases)
    now = dt.datetime.now(dt.UTC)
    application.updated_at = max(application.updated_at, at or now)


# The applications whose determination or cases an event of the consumer's transaction changed (session.info).
_STALE_STATUSES = "intake_stale_statuses"


def status_changed(repo: Repository, application: Application, at: dt.datetime) -> None:
    """An event changed what the application's status derives from: it is derived again once, at the end of the
    consumer's transaction (:func:`refresh_statuses`), from all that the batch's events changed — not after each
    of them (a batch holds a dozen events about one application, each asking for all its cases again)."""
    application.updated_at = max(application.updated_at, at)
    repo.session.info.setdefault(_STALE_STATUSES, set()).add(application.id)


async def refresh_statuses(session: AsyncSession) -> None:
    """The status view consumer's finish: the rows its events kept aside written (Repository.write_new_rows), and the
    status of each application an event of this transaction changed derived, its cases read in one query for all of
    them. An event that failed in its savepoint leaves its application marked; deriving its status again from what
    stands changes nothing."""
    repo = Repository(session)
    await repo.write_new_rows()  # the timeline entries, notifications and offices the events kept aside
    stale: set[uuid.UUID] = session.info.pop(_STALE_STATUSES, set())
    if not stale:
        return
    ids = sorted(stale)
    cases = await repo.cases_of(ids)
    for application_id in ids:
        application = await repo.application(application_id, for_update=True)
        if application is not None:
            determination = await repo.determination(application_id)
            application.status = derive_status(application, determination, cases.get(application_id, []))


def timeline_values(
    application_id: uuid.UUID,
    event: CloudEvent,
    *,
    at: dt.datetime,
    summary: Localized,
    details: dict[str, Any] | None = None,
    program_code: str | None = None,
    case_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The columns of ``event``'s timeline entry (but its id, which the database numbers): for a consumer's event,
    kept aside and written with the rest of its transaction's (``Repository.add_timeline``); for a request's, made a
    ``TimelineEntry``."""
    return {
        "application_id": application_id,
        "event_id": event.id,
        "event_type": event.event_type,
        "occurred_at": at,
        "program_code": program_code,
        "case_id": case_id,
        "summary": {"ko": summary.ko, "en": summary.en},
        "details": details or {},
    }


# ---------------------------------------------------------------------------------------------- eligibility


async def apply_determination(repo: Repository, event: CloudEvent, data: EligibilityDetermined) -> None:
    application = await repo.application(data.application_id, for_update=True)
    if application is None:
        log.warning("determination for an unknown application", extra={"application_id": str(data.application_id)})
        return
    at = event_time(event)
    counts = {outcome: sum(p.outcome is outcome for p in data.programs) for outcome in Outcome}
    await repo.add_timeline(
        timeline_values(
            application.id,
            event,
            at=at,
            summary=Localized(
                ko=f"자격 심사 결과: 대상 {counts[Outcome.ELIGIBLE]}건, 비대상 {counts[Outcome.INELIGIBLE]}건, "
                f"추가 정보 필요 {counts[Outcome.NEEDS_INFORMATION]}건, 담당자 검토 {counts[Outcome.NEEDS_REVIEW]}건",
                en=f"Eligibility checked: {counts[Outcome.ELIGIBLE]} eligible, "
                f"{counts[Outcome.INELIGIBLE]} not eligible, {counts[Outcome.NEEDS_INFORMATION]} need information, "
                f"{counts[Outcome.NEEDS_REVIEW]} need review",
            ),
            details={"round": data.round, "trigger": data.trigger},
        )
    )
    # The round's programs are stored as the event has them: the JSON that the consumer validated into ``data.programs``
    # (eligibility wrote it as ``model_dump(mode="json")`` of the same model). Writing ``data.programs`` out again gave
    # the same JSON at about 70 µs a program (each criterion's values are ``Any``): 9 % of intake's work (py-spy).
    programs: list[Any] = event.data["programs"]
    determination = await repo.determination(application.id)
    if determination is None:
        repo.session.add(
            Determination(
                application_id=application.id,
                determination_id=data.determination_id,
                round=data.round,
                trigger=data.trigger,
                evaluated_at=data.evaluated_at,
                programs=programs,
            )
        )
    elif data.round > determination.round:
        determination.determination_id = data.determination_id
        determination.round = data.round
        determination.trigger = data.trigger
        determination.evaluated_at = data.evaluated_at
        determination.programs = programs
    status_changed(repo, application, at)


# ---------------------------------------------------------------------------------------------- routing

_RANK_OPEN, _RANK_ROUTED_CLOSED, _RANK_FINAL = 0, 1, 2


def _rank(case: Case) -> int:
    if case.state == "decided" or (case.state == "closed" and case.closed_at is not None):
        return _RANK_FINAL
    return _RANK_ROUTED_CLOSED if case.state == "closed" else _RANK_OPEN


def _set_state(case: Case, state: str, rank: int, at: dt.datetime) -> None:
    """A stronger state wins; between equals, the newer event."""
    current = _rank(case)
    if rank > current or (rank == current and at >= case.state_at):
        case.state = state
        case.state_at = at


def _newer(at: dt.datetime, than: dt.datetime | None) -> bool:
    return than is None or at >= than


def _case_summary(data: CaseEventBase, name: Localized) -> Localized:
    ko, en = name.ko, name.en
    match data:
        case CaseRouted():
            return Localized(ko=f"{ko}: {data.office_name.ko}에 접수", en=f"{en}: sent to {data.office_name.en}")
        case CaseAssigned(assignee=None):
            return Localized(ko=f"{ko}: 담당자 배정 대기", en=f"{en}: waiting for a caseworker")
        case CaseAssigned():
            return Localized(ko=f"{ko}: 담당자가 검토 중", en=f"{en}: a caseworker is reviewing it")
        case CaseInfoRequested():
            return Localized(ko=f"{ko}: 추가 정보 요청", en=f"{en}: more information requested from you")
        case CaseDecided():
            ko_decision = "승인" if data.decision == "approved" else "불승인"
            return Localized(ko=f"{ko}: {ko_decision}", en=f"{en}: {data.decision.value}")
        case CaseTransferred():
            return Localized(
                ko=f"{ko}: {data.office_name.ko}(으)로 이관", en=f"{en}: transferred to {data.office_name.en}"
            )
        case CaseEscalated():
            return Localized(ko=f"{ko}: 관리자 검토로 상향", en=f"{en}: escalated to a supervisor")
        case CaseSlaBreached():
            return Localized(ko=f"{ko}: 처리 기한 경과", en=f"{en}: past its due date")
        case CaseResumed():
            return Localized(
                ko=f"{ko}: 답변을 받아 다시 처리 중 (기한 {data.due_date.isoformat()})",
                en=f"{en}: your answer arrived; work resumed (due {data.due_date.isoformat()})",
            )
        case CaseClosed():
            return Localized(ko=f"{ko}: 종결", en=f"{en}: closed ({data.reason.replace('_', ' ')})")
    return Localized(ko=ko, en=en)


def _case_details(data: CaseEventBase) -> dict[str, Any]:
    details: dict[str, Any] = {"office_code": data.office_code}
    match data:
        case CaseRouted():
            details["due_date"] = data.due_date.isoformat() if data.due_date else None
        case CaseDecided():
            details.update(decision=data.decision.value, reason_code=data.reason_code, amount=data.amount)
        case CaseTransferred():
            details.update(from_office_code=data.from_office_code)
        case CaseInfoRequested():
            details["questions"] = [q.model_dump() for q in data.questions]
        case CaseClosed():
            details["reason"] = data.reason
        case CaseResumed():
            details.update(due_date=data.due_date.isoformat(), paused_working_days=data.paused_working_days)
    return details


async def apply_case_event(repo: Repository, event: CloudEvent, data: CaseEventBase) -> None:
    application = await repo.application(data.application_id, for_update=True)
    if application is None:
        log.warning("case event for an unknown application", extra={"application_id": str(data.application_id)})
        return
    at = event_time(event)
    record = await repo.case(data.case_id)
    if record is None:
        # Whatever arrives first creates the entry; the others fill it in.
        record = Case(
            case_id=data.case_id,
            application_id=application.id,
            program_code=data.program_code,
            department=data.department.value,
            office_code=data.office_code,
            office_at=at,
            state="open",
            state_at=at,
            assigned=False,
            first_seen_at=at,
            updated_at=at,
        )
        repo.session.add(record)
    elif record.application_id != application.id:
        log.warning("case event names another application than before", extra={"case_id": str(data.case_id)})
        return
    if at >= record.office_at:
        if data.office_code != record.office_code:
            record.office_name = None  # known again once the routing or transfer event for this office is seen
            record.due_date = None
            record.routing_at = None
        record.office_code = data.office_code
        record.office_at = at
    record.first_seen_at = min(record.first_seen_at, at)
    await repo.add_office(application.id, data.office_code)

    match data:
        case CaseRouted() | CaseTransferred():
            if isinstance(data, CaseTransferred):
                await repo.add_office(application.id, data.from_office_code)
            else:
                record.routed_at = data.routed_at
                record.priority = data.priority
                record.automatic = data.automatic
                if data.status == "closed":
                    _set_state(record, "closed", _RANK_ROUTED_CLOSED, at)
            if data.office_code == record.office_code and _newer(at, record.routing_at):
                record.office_name = data.office_name.model_dump()
                record.due_date = data.due_date
                record.routing_at = at
        case CaseAssigned():
            if _newer(at, record.assigned_at):
                record.assigned = data.assignee is not None
                record.assigned_at = at
        case CaseInfoRequested():
            if _newer(at, record.info_requested_at):
                record.info_questions = [q.model_dump() for q in data.questions]
                record.info_requested_at = at
        case CaseDecided():
            record.decision = data.decision.value
            record.reason_code = data.reason_code
            record.decision_reason = data.reason.model_dump() if data.reason else None
            record.amount = data.amount
            record.automatic = data.automatic
            record.decided_at = data.decided_at
            _set_state(record, "decided", _RANK_FINAL, at)
        case CaseClosed():
            record.closed_reason = data.reason
            record.closed_at = data.closed_at
            _set_state(record, "closed", _RANK_FINAL, at)
        case CaseEscalated():
            record.escalated_at = max(record.escalated_at or at, at)
        case CaseResumed():
            # The due date moved by the days the case waited on the resident; newer than the routing's date.
            if data.office_code == record.office_code and _newer(at, record.routing_at):
                record.due_date = data.due_date
                record.routing_at = at
        case CaseSlaBreached():
            record.sla_breached_at = max(record.sla_breached_at or at, at)
            if record.due_date is None:
                record.due_date = data.due_date
    record.updated_at = max(record.updated_at, at)

    await repo.add_timeline(
        timeline_values(
            application.id,
            event,
            at=at,
            summary=_case_summary(data, program_name(await repo.determination(application.id), data.program_code)),
            details=_case_details(data),
            program_code=data.program_code,
            case_id=data.case_id,
        )
    )
    status_changed(repo, application, at)


# ---------------------------------------------------------------------------------------------- referrals

_REFERRAL_RANK = {"referred": 0, "accepted": 1, "declined": 2, "completed": 2}
_DECLINE_REASONS = {
    "no_capacity": ("자리가 없음", "no place free"),
    "not_eligible": ("이용 조건에 맞지 않음", "its conditions are not met"),
    "out_of_area": ("지역 밖", "outside its area"),
    "language": ("언어 지원 불가", "not in your language"),
    "other": ("기타 사유", "another reason"),
}
_OUTCOMES = {
    "served": ("서비스 제공 완료", "service provided"),
    "not_served": ("서비스 제공되지 않음", "service not provided"),
    "resident_declined": ("주민이 이용하지 않음", "you did not take it up"),
}


def _referral_summary(data: ReferralEventBase) -> Localized:
    ko, en = data.offering_name.ko, data.offering_name.en
    match data:
        case ReferralCreated():
            return Localized(ko=f"{ko}에 연계되었습니다", en=f"Referred to {en}")
        case ReferralAccepted():
            return Localized(ko=f"{ko}: 연계 수락", en=f"{en} accepted the referral")
        case ReferralDeclined():
            reason_ko, reason_en = _DECLINE_REASONS[data.reason]
            return Localized(ko=f"{ko}: 연계 불가 ({reason_ko})", en=f"{en} declined the referral ({reason_en})")
        case ReferralCompleted():
            outcome_ko, outcome_en = _OUTCOMES[data.outcome]
            return Localized(ko=f"{ko}: {outcome_ko}", en=f"{en}: {outcome_en}")
    return Localized(ko=ko, en=en)


def _referral_state(data: ReferralEventBase) -> str:
    match data:
        case ReferralAccepted():
            return "accepted"
        case ReferralDeclined():
            return "declined"
        case ReferralCompleted():
            return "completed"
    return "referred"


async def apply_referral_event(repo: Repository, event: CloudEvent, data: ReferralEventBase) -> None:
    """A referral event: the referral is created by whichever of its events comes first; a later state (by rank,
    then by event time) wins, so a late ``referral.created`` never undoes the partner's answer."""
    application = await repo.application(data.application_id, for_update=True)
    if application is None:
        log.warning("referral event for an unknown application", extra={"application_id": str(data.application_id)})
        return
    at = event_time(event)
    state = _referral_state(data)
    referral = await repo.referral(data.referral_id)
    if referral is None:
        referral = Referral(
            referral_id=data.referral_id,
            application_id=application.id,
            case_id=data.case_id,
            program_code=data.program_code,
            partner_id=data.partner_id,
            offering_name=data.offering_name.model_dump(),
            service_type=data.service_type.value,
            status=state,
            status_at=at,
            updated_at=at,
        )
        repo.session.add(referral)
    elif _REFERRAL_RANK[state] > _REFERRAL_RANK[referral.status] or (
        _REFERRAL_RANK[state] == _REFERRAL_RANK[referral.status] and at >= referral.status_at
    ):
        referral.status = state
        referral.status_at = at
    match data:
        case ReferralCreated():
            referral.referred_at = data.created_at
        case ReferralDeclined():
            referral.decline_reason = data.reason
        case ReferralCompleted():
            referral.outcome = data.outcome
    referral.updated_at = max(referral.updated_at, at)
    await repo.add_timeline(
        timeline_values(
            application.id,
            event,
            at=at,
            summary=_referral_summary(data),
            details={"partner_id": data.partner_id, "service_type": data.service_type.value, "status": state},
            program_code=data.program_code,
            case_id=data.case_id,
        )
    )
    application.updated_at = max(application.updated_at, at)


# ---------------------------------------------------------------------------------------------- notify

_CHANNEL_NAMES = {
    "inbox": ("앱 알림함", "in-app inbox"),
    "email": ("이메일", "email"),
    "sms": ("문자", "SMS"),
    "post": ("우편", "post"),
}


async def apply_notification(repo: Repository, event: CloudEvent, data: NotificationSent | NotificationFailed) -> None:
    if data.application_id is None:
        return  # not about an application (an opportunity found by screening, for example)
    application = await repo.application(data.application_id, for_update=True)
    if application is None:
        log.warning("notification for an unknown application", extra={"application_id": str(data.application_id)})
        return
    at = event_time(event)
    sent = isinstance(data, NotificationSent)
    notification = await repo.notification(data.notification_id)
    if notification is None:
        failed = data if isinstance(data, NotificationFailed) else None
        notification = repo.add_notification(
            {
                "notification_id": data.notification_id,
                "application_id": application.id,
                "channel": data.channel,
                "template": data.template,
                "status": "sent" if sent else "failed",
                "status_at": at,
                "dead": failed.dead if failed is not None else False,
                "attempts": failed.attempts if failed is not None else None,
                "source_event_ids": list(data.source_event_ids),
            }
        )
    elif at >= notification.status_at:
        notification.status = "sent" if sent else "failed"
        notification.status_at = at
    if notification is not None and isinstance(data, NotificationFailed) and at >= notification.status_at:
        notification.dead = data.dead
        notification.attempts = data.attempts
    ko_channel, en_channel = _CHANNEL_NAMES[data.channel]
    await repo.add_timeline(
        timeline_values(
            application.id,
            event,
            at=at,
            summary=Localized(ko=f"알림 발송 ({ko_channel})", en=f"Notification sent by {en_channel}")
            if sent
            else Localized(ko=f"알림 발송 실패 ({ko_channel})", en=f"Notification by {en_channel} failed"),
            details={"channel": data.channel, "template": data.template},
        )
    )
    application.updated_at = max(application.updated_at, at)


# ---------------------------------------------------------------------------------------------- the view


async def apply_household_event(repo: Repository, event: CloudEvent, data: HouseholdCaseEventBase) -> None:
    """A household case, in the status of each member it names: opened with the team that leads it, the plan's
    version, closed with its outcome and the day of the check after it. Closed is final."""
    now = event_time(event)
    for member in data.member_ids:
        row = await repo.household_case_status(data.household_case_id, member)
        if row is None:
            row = HouseholdCaseStatus(
                household_case_id=data.household_case_id, resident_id=member, status="open",
                office_code=data.office_code, plan_version=0, updated_at=now,
            )  # fmt: skip
            repo.session.add(row)
        if isinstance(data, HouseholdCaseOpened | HouseholdCaseMemberAdded):
            row.office_name = data.office_name.model_dump()
            row.opened_at = data.opened_at
        elif isinstance(data, HouseholdCasePlanChanged):
            row.plan_version = max(row.plan_version, data.plan_version)
        elif isinstance(data, HouseholdCaseClosed):
            row.status = "closed"
            row.outcome = data.outcome.value
            row.follow_up_check_on = data.follow_up_check_on
            row.closed_at = data.closed_at
        row.office_code = data.office_code
        row.updated_at = max(row.updated_at, now)
    await repo.session.flush()


def household_view(row: HouseholdCaseStatus | None) -> HouseholdCaseView | None:
    if row is None:
        return None
    return HouseholdCaseView(
        id=row.household_case_id,
        status=row.status,
        office_code=row.office_code,
        office_name=Localized.model_validate(row.office_name) if row.office_name else None,
        plan_version=row.plan_version,
        outcome=row.outcome,
        follow_up_check_on=row.follow_up_check_on,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
    )


def _case_view(case: Case) -> CaseView:
    final = case.state in FINAL_STATES
    return CaseView(
        case_id=case.case_id,
        status=case_status(case),
        office_code=case.office_code,
        office_name=Localized.model_validate(case.office_name) if case.office_name else None,
        due_date=case.due_date,
        automatic=case.automatic,
        decision=case.decision,
        reason_code=case.reason_code,
        decision_reason=Localized.model_validate(case.decision_reason) if case.decision_reason else None,
        amount=case.amount,
        decided_at=case.decided_at,
        closed_reason=case.closed_reason,
        questions=list(case.info_questions or []) if info_open(case) else [],
        escalated=case.escalated_at is not None,
        overdue=case.sla_breached_at is not None and not final,
        updated_at=case.updated_at,
    )


def _referral_view(r: Referral) -> ReferralView:
    return ReferralView(
        referral_id=r.referral_id,
        case_id=r.case_id,
        program_code=r.program_code,
        partner_id=r.partner_id,
        service_type=r.service_type,
        offering_name=Localized.model_validate(r.offering_name),
        status=r.status,
        decline_reason=r.decline_reason,
        outcome=r.outcome,
        referred_at=r.referred_at,
        updated_at=r.updated_at,
    )


def _notification_view(n: Notification) -> NotificationView:
    return NotificationView(
        notification_id=n.notification_id,
        channel=n.channel,
        template=n.template,
        status=n.status,
        at=n.status_at,
    )


_CONSISTENT_READ_ATTEMPTS = 5


async def build_view(repo: Repository, application: Application) -> ApplicationView:
    # On PostgreSQL each read sees what was committed when it ran (no snapshot spans them). Every change to the view
    # appends to the timeline in the same transaction, so the timeline is read before and after the rest and the
    # reads start again if an event landed in between: what the view shows and its timeline then agree.
    # A read-only unit of work reads one snapshot (shared.db.ONE_SNAPSHOT): there the parts are read at once, in one
    # statement.
    if repo.session.info.get(ONE_SNAPSHOT):
        return status_view(application, await repo.status_parts(application))
    timeline = await repo.timeline(application.id)
    read: list[Any] = []
    for _ in range(_CONSISTENT_READ_ATTEMPTS):
        for row in read:
            repo.session.expire(row)  # read again, not served stale from the session's identity map
        before = len(timeline)
        determination = await repo.determination(application.id)
        cases = await repo.cases(application.id)
        notifications = await repo.notifications(application.id)
        feedback = await repo.feedback(application.id)
        referrals = await repo.referrals(application.id)
        household = await repo.household_case_of(application.resident_id)
        timeline = await repo.timeline(application.id)
        if len(timeline) == before:
            break
        read = [
            *cases,
            *notifications,
            *referrals,
            *(r for r in (determination, feedback, household) if r is not None),
        ]
    return assemble_view(
        application,
        determination=determination,
        cases=cases,
        notifications=notifications,
        timeline=timeline,
        feedback=feedback,
        referrals=referrals,
        household=household,
    )


def status_view(application: Application, parts: StatusParts) -> ApplicationView:
    return assemble_view(
        application,
        determination=parts.determination,
        cases=parts.cases,
        notifications=parts.notifications,
        timeline=parts.timeline,
        feedback=parts.feedback,
        referrals=parts.referrals,
        household=parts.household,
    )


def new_application_view(
    application: Application, received: TimelineEntry, household: HouseholdCaseStatus | None
) -> ApplicationView:
    """The view of an application just filed, from what was just written: nothing has been determined, routed,
    referred or sent for it yet, and its timeline is the one entry of its receipt."""
    return assemble_view(
        application,
        determination=None,
        cases=[],
        notifications=[],
        timeline=[received],
        feedback=None,
        referrals=[],
        household=household,
    )


def assemble_view(
    application: Application,
    *,
    determination: Determination | None,
    cases: Sequence[Case],
    notifications: Sequence[Notification],
    timeline: Sequence[TimelineEntry],
    feedback: Feedback | None,
    referrals: Sequence[Referral],
    household: HouseholdCaseStatus | None,
) -> ApplicationView:
    current = current_cases(cases)
    answers = application.answers

    # A notification belongs to the program whose event caused it.
    program_of_event = {t.event_id: t.program_code for t in timeline if t.program_code}
    by_program: dict[str, list[NotificationView]] = {}
    for n in notifications:
        for code in dict.fromkeys(program_of_event[e] for e in n.source_event_ids if e in program_of_event):
            by_program.setdefault(code, []).append(_notification_view(n))

    programs: list[ProgramView] = []
    for p in programs_of(determination):
        case = current.get(p.program_code)
        is_settled = settled(p, current)
        programs.append(
            ProgramView(
                program_code=p.program_code,
                program_name=p.program_name,
                department=p.department,
                outcome=p.outcome,
                automatic=p.automatic,
                amount=p.amount,
                amount_period=p.amount_period,
                criteria=p.criteria,
                missing=[MissingInformation(**m.model_dump(), answered=m.name in answers) for m in p.missing],
                action_required=(not is_settled and bool(resident_questions(p, answers)))
                or (case is not None and info_open(case)),
                settled=is_settled,
                case=_case_view(case) if case else None,
                notifications=by_program.get(p.program_code, []),
            )
        )
    known = {p.program_code for p in programs}
    for code, case in current.items():
        if code in known:
            continue
        # A case seen before (or without) a determination naming its program.
        programs.append(
            ProgramView(
                program_code=code,
                program_name=None,
                department=Department(case.department),
                outcome=None,
                automatic=case.automatic,
                amount=case.amount,
                amount_period=None,
                criteria=[],
                missing=[],
                action_required=info_open(case),
                settled=case.state in FINAL_STATES,
                case=_case_view(case),
                notifications=by_program.get(code, []),
            )
        )
    return ApplicationView(
        id=application.id,
        resident_id=application.resident_id,
        life_event=application.life_event,
        channel=Channel(application.channel),
        status=ApplicationStatus(application.status),
        application_date=application.application_date,
        submitted_at=application.submitted_at,
        filed_by=application.filed_by,
        updated_at=application.updated_at,
        answers=answers,
        withdrawn_at=application.withdrawn_at,
        withdrawal_reason=application.withdrawal_reason,
        determination=DeterminationSummary(
            round=determination.round, trigger=determination.trigger, evaluated_at=determination.evaluated_at
        )
        if determination
        else None,
        programs=programs,
        referrals=[_referral_view(r) for r in referrals],
        household_case=household_view(household),
        notifications=[_notification_view(n) for n in notifications],
        feedback=FeedbackView(
            application_id=feedback.application_id,
            score=feedback.score,
            comment=feedback.comment,
            created_at=feedback.created_at,
        )
        if feedback
        else None,
        timeline=[
            TimelineEntryView(
                at=t.occurred_at,
                type=t.event_type,
                summary=Localized.model_validate(t.summary),
                program_code=t.program_code,
                case_id=t.case_id,
                details=t.details,
            )
            for t in timeline
        ],
    )


# ---------------------------------------------------------------------------------------------- a batch's lookups


async def load_for_batch(session: AsyncSession, events: Sequence[CloudEvent]) -> None:
    """The status view consumer's load (``Subscription.load``): the applications, cases, notifications and offices a
    transaction's events name, read in a query per kind at its start instead of a lookup per event."""
    applications: set[uuid.UUID] = set()
    determined: set[uuid.UUID] = set()
    cases: set[uuid.UUID] = set()
    notifications: set[uuid.UUID] = set()
    offices: set[tuple[uuid.UUID, str]] = set()
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        application_id = named_id(data.get("application_id"))
        if application_id is None:
            continue
        applications.add(application_id)
        if event.event_type.startswith("case.") or event.event_type == EligibilityDetermined.event_type:
            determined.add(application_id)  # its determination is looked up (and its status derived from it)
        if event.event_type.startswith("case.") and (case_id := named_id(data.get("case_id"))) is not None:
            cases.add(case_id)
            offices.update(
                (application_id, str(c)) for c in (data.get("office_code"), data.get("from_office_code")) if c
            )
        elif event.event_type.startswith("notification.") and (n := named_id(data.get("notification_id"))) is not None:
            notifications.add(n)
    await Repository(session).load_for_events(applications, determined, cases, notifications, offices)
