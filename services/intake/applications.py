"""Applications: filing (by the resident or by staff on their behalf), answering requests for information,
withdrawing and rating the service. Each state change and its event are written in one transaction (the outbox);
nothing here commits."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from services.intake.access import (
    PURPOSE_ASSISTED_APPLICATION,
    Act,
    acting_for,
    application_read_purpose,
    by_representative,
    purpose_of,
    record_access,
    representation_for,
    representative_authority,
)
from services.intake.catalogue import CatalogueSnapshot
from services.intake.models import Application, Feedback, Resident, TimelineEntry
from services.intake.repository import Repository
from services.intake.schemas import (
    ApplicationCreate,
    ApplicationPage,
    ApplicationStatus,
    ApplicationSummary,
    ApplicationView,
    FactType,
    FeedbackCreate,
    FeedbackView,
    InfoProvide,
    Withdrawal,
)
from services.intake.status import (
    build_view,
    current_cases,
    info_open,
    new_application_view,
    program_states,
    refresh_status,
    settled,
    status_view,
    timeline_values,
)
from shared.audit import Authority
from shared.auth import Principal
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    Channel,
    CloudEvent,
    FeedbackGiven,
    Language,
    Localized,
    ResidentContext,
    Vulnerability,
)
from shared.outbox import Outbox
from shared.problems import Conflict, Forbidden, NotFound, UnprocessableContent

# As eligibility reads declared answers (services/eligibility/facts.py): what it would ignore is refused here.
MAX_TEXT_ANSWER = 200
MAX_LIST_ANSWER = 50
MAX_ABS_NUMBER = 10**15


class ApplicationClosed(Conflict):
    slug = "application-closed"


class FeedbackNotOpen(Conflict):
    slug = "feedback-not-open"


class FeedbackAlreadyGiven(Conflict):
    slug = "feedback-already-given"


def _error(field: str, message: str, type_: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": type_}


def _invalid(errors: list[dict[str, str]]) -> UnprocessableContent:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return UnprocessableContent(f"Invalid input: {fields}", errors=errors)


# ---------------------------------------------------------------------------------------------- answers


def _storable_text(value: str, limit: int) -> str | None:
    """Why a text answer cannot be kept, or None."""
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    return None


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # eligibility validates its catalogue; a pattern it cannot compile checks nothing here
        return None


def _scalar(kind: str, value: Any, pattern: str | None) -> tuple[Any, str | None]:
    """The normalised value of one answer (or list item) of type ``kind``, or why it does not fit."""
    match kind:
        case "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return None, "must be an integer"
            if abs(value) > MAX_ABS_NUMBER:
                return None, "is out of range"
        case "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None, "must be a number"
            if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
                return None, "is out of range"
        case "boolean":
            if not isinstance(value, bool):
                return None, "must be true or false"
        case "string":
            if not isinstance(value, str):
                return None, "must be a string"
            if (problem := _storable_text(value, MAX_TEXT_ANSWER)) is not None:
                return None, problem
            if pattern is not None and (compiled := _compiled(pattern)) is not None and not compiled.fullmatch(value):
                return None, f"must match {pattern}"
        case "date":
            if not isinstance(value, str) or len(value) != 10:
                return None, "must be a date written YYYY-MM-DD"
            try:
                value = dt.date.fromisoformat(value).isoformat()
            except ValueError:
                return None, "must be a valid date written YYYY-MM-DD"
    return value, None


def _answer(fact: FactType, value: Any) -> tuple[Any, str | None]:
    if fact.type == "list":
        if not isinstance(value, list):
            return None, "must be a list"
        if len(value) > MAX_LIST_ANSWER:
            return None, f"must have at most {MAX_LIST_ANSWER} items"
        items = []
        for index, item in enumerate(value):
            normalised, problem = _scalar(fact.items or "string", item, fact.pattern)
            if problem is not None:
                return None, f"item {index} {problem}"
            items.append(normalised)
        if fact.enum is not None and any(item not in fact.enum for item in items):
            return None, f"items must be among {fact.enum}"
        return items, None
    normalised, problem = _scalar(fact.type, value, fact.pattern)
    if problem is None and fact.enum is not None and normalised not in fact.enum:
        return None, f"must be one of {fact.enum}"
    return normalised, problem


def _derived(fact: FactType) -> str:
    if fact.inputs:
        return f"is derived from other facts; answer {', '.join(fact.inputs)} instead"
    return "is derived by eligibility itself and cannot be answered"


def validate_answers(
    answers: Mapping[str, Any], facts: Mapping[str, FactType], *, by_staff: bool, prefix: str = "answers"
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Answers checked against eligibility's fact types: known names, not derived (eligibility computes those and
    ignores a declared value), the right types, and facts only staff can supply kept from residents. Returns the
    normalised answers and the errors."""
    out: dict[str, Any] = {}
    errors = []
    for name, value in answers.items():
        field = f"{prefix}.{name}"
        fact = facts.get(name)
        if fact is None:
            errors.append(_error(field, "is not a known fact", "unknown_fact"))
            continue
        if fact.derived:
            errors.append(_error(field, _derived(fact), "derived_fact"))
            continue
        if fact.asked_of == "staff" and not by_staff:
            errors.append(_error(field, "can only be supplied by staff", "staff_only"))
            continue
        normalised, problem = _answer(fact, value)
        if problem is not None:
            errors.append(_error(field, problem, f"{fact.type}_type"))
        else:
            out[name] = normalised
    return out, errors


# ---------------------------------------------------------------------------------------------- filing


async def submit(
    repo: Repository,
    outbox: Outbox,
    catalogue: CatalogueSnapshot,
    principal: Principal,
    body: ApplicationCreate,
    today: dt.date,
    *,
    offer: tuple[uuid.UUID, str] | None = None,
) -> ApplicationView:
    """File an application. ``offer`` (its id and program) when the resident accepted an offer: the application is
    judged for that program alone."""
    errors: list[dict[str, str]] = []
    # A resident files for themselves, and for a resident who named them representative to apply; any other
    # resident's id is as unknown to them as a made-up one. Staff file for anyone (at a counter).
    resident, household, authority = None, None, None
    representation = await representation_for(repo, principal, body.resident_id, today)
    if representation is not None:
        if Act.APPLY.value not in representation.scopes:
            raise Forbidden("You may act for this resident, but not apply for them.")
        authority = representative_authority(representation)
    if principal.is_staff or principal.resident_id == body.resident_id or authority is not None:
        # With their household case (if one runs), which shows in every view of their applications, this one too.
        resident, household = await repo.resident_and_household_case(body.resident_id)
    if resident is not None and resident.erased_at is not None:
        resident = None  # their data was erased: no one files for them any more (erasure.py)
    if resident is None:
        errors.append(_error("resident_id", "is not a registered resident", "unknown_resident"))
    if body.life_event not in catalogue.life_event_codes:
        errors.append(_error("life_event", "is not a known life event (see GET /v1/life-events)", "unknown_life_event"))
    answers, answer_errors = validate_answers(body.answers, catalogue.fact_types, by_staff=principal.is_staff)
    errors += answer_errors
    if errors or resident is None:
        raise _invalid(errors)

    now = dt.datetime.now(dt.UTC)
    filed_by = principal.subject if principal.is_staff or authority is not None else None
    application = Application(
        id=uuid.uuid4(),
        resident_id=resident.id,
        life_event=body.life_event,
        answers=answers,
        channel=body.channel.value,
        application_date=today,
        submitted_at=now,
        filed_by=filed_by,
        status=ApplicationStatus.RECEIVED.value,
        updated_at=now,
    )
    # The event and the timeline entry are written after the application (the first write) by core INSERTs of what
    # was built here, before the writer lock was taken: the ORM's unit of work cost more than the statements.
    event, payload = outbox.event(
        ApplicationSubmitted(
            application_id=application.id,
            resident_id=resident.id,
            life_event=application.life_event,
            answers=answers,
            channel=body.channel,
            application_date=today,
            submitted_at=now,
            filed_by=filed_by,
            resident=ResidentContext(
                district_code=resident.district_code,
                preferred_language=Language(resident.preferred_language),
                vulnerability=[Vulnerability(v) for v in resident.vulnerability],
                household_id=resident.household_id,
            ),
            program_codes=[offer[1]] if offer is not None else [],
            opportunity_id=offer[0] if offer is not None else None,
        ),
        subject=str(application.id),
    )
    received = TimelineEntry(
        **timeline_values(
            application.id,
            event,
            at=event.time,
            summary=Localized(ko="신청이 접수되었습니다", en="Application received")
            if filed_by is None
            else Localized(ko="대리인이 신청했습니다", en="Your representative filed the application for you")
            if authority is not None
            else Localized(ko="창구에서 신청이 접수되었습니다", en="Application filed for you at a counter"),
            details={"life_event": application.life_event, "channel": application.channel, **_by(authority)},
        )
    )
    # The first write (on SQLite it takes the writer lock), once all that goes with it is built.
    representation_id = representation.id if representation is not None else None
    filed = await repo.file(application, representation_id=representation_id, today=today)
    if not filed:  # erased, or no longer represented, since it was checked: as a request made now would be answered
        raise _invalid([_error("resident_id", "is not a registered resident", "unknown_resident")])
    await outbox.write(repo.session, [(event, payload)])
    await repo.write_timeline(received)
    if filed_by is not None:
        await record_access(
            repo,
            principal,
            resident.id,
            action="file application",
            record_type="application",
            record_id=application.id,
            purpose=purpose_of(authority) if authority is not None else PURPOSE_ASSISTED_APPLICATION,
            authority=authority,
        )
    return new_application_view(application, received, household)


def _by(authority: Authority | None) -> dict[str, str]:
    """Who acted, for the timeline's details: nothing when it was the resident."""
    if authority is None:
        return {}
    return {"by": "representative" if by_representative(authority) else "counter"}


def _add_act_entry(
    repo: Repository,
    application_id: uuid.UUID,
    event: CloudEvent,
    authority: Authority | None,
    said: tuple[Localized, Localized, Localized],
    *,
    at: dt.datetime,
    details: dict[str, Any],
) -> None:
    """The timeline entry of an act on the application, summed up in the words that fit who acted: ``said`` is what
    it says when the resident acted, when their representative did, and when it was done for them at a counter."""
    own, representative, counter = said
    summary = own if authority is None else representative if by_representative(authority) else counter
    repo.session.add(TimelineEntry(**timeline_values(application_id, event, at=at, summary=summary, details=details)))


async def _open_application_to_act_on(
    repo: Repository, principal: Principal, application_id: uuid.UUID, act: Act, today: dt.date, action: str
) -> tuple[Application, Authority | None]:
    application = await repo.visible_application(principal, application_id, today=today, for_update=True)
    if application is None:
        raise NotFound(f"No application {application_id}.")
    authority = await acting_for(repo, principal, application.resident_id, act, today, action=action)
    if application.status == ApplicationStatus.WITHDRAWN:
        raise ApplicationClosed("The application was withdrawn.")
    if application.status == ApplicationStatus.COMPLETED:
        raise ApplicationClosed("The application is completed; every program has been settled.")
    return application, authority


async def _record_act(
    repo: Repository,
    principal: Principal,
    application: Application,
    authority: Authority | None,
    action: str,
    record_type: str = "application",
) -> None:
    """An act for the resident goes into their access log (their own acts do not)."""
    if authority is not None:
        await record_access(
            repo,
            principal,
            application.resident_id,
            action=action,
            record_type=record_type,
            record_id=application.id,
            purpose=purpose_of(authority),
            authority=authority,
        )


async def provide_info(
    repo: Repository,
    outbox: Outbox,
    catalogue: CatalogueSnapshot,
    principal: Principal,
    application_id: uuid.UUID,
    body: InfoProvide,
    today: dt.date,
) -> ApplicationView:
    """The resident (or who acts for them) answers what eligibility or a caseworker asked; eligibility re-evaluates
    and the cases hear."""
    application, authority = await _open_application_to_act_on(
        repo, principal, application_id, Act.ANSWER, today, "answer requests for information"
    )
    answers, errors = validate_answers(body.answers, catalogue.fact_types, by_staff=False)
    if not body.answers and body.note is None:
        errors.append(_error("answers", "give at least one answer or a note", "missing"))
    if errors:
        raise _invalid(errors)

    now = dt.datetime.now(dt.UTC)
    cases = await repo.cases(application.id)
    current = current_cases(cases)
    asking = [
        p.program_code
        for p in program_states(await repo.determination(application.id))
        if not settled(p, current) and any(m.asked_of == "resident" and m.name in answers for m in p.missing)
    ]
    waiting = [c for c in cases if info_open(c)]
    for case in waiting:
        case.info_answered_at = now
    application.answers = {**application.answers, **answers}
    event = await outbox.emit(
        repo.session,
        ApplicationInfoProvided(
            application_id=application.id,
            resident_id=application.resident_id,
            answers=answers,
            program_codes=asking,
            case_ids=[c.case_id for c in waiting],
            note=body.note,
            provided_at=now,
        ),
        subject=str(application.id),
    )
    details: dict[str, Any] = {"facts": sorted(answers), "program_codes": asking, **_by(authority)}
    if body.note is not None:
        details["note"] = body.note
    _add_act_entry(
        repo,
        application.id,
        event,
        authority,
        (
            Localized(ko="요청하신 정보를 제출했습니다", en="You sent the information that was asked for"),
            Localized(
                ko="대리인이 요청된 정보를 제출했습니다", en="Your representative sent the information asked for"
            ),
            Localized(ko="창구에서 요청된 정보를 제출했습니다", en="The information asked for was given at a counter"),
        ),
        at=event.time,
        details=details,
    )
    await _record_act(repo, principal, application, authority, "answer request for information")
    await repo.session.flush()
    await refresh_status(repo, application, now)
    return await build_view(repo, application)


async def withdraw(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    application_id: uuid.UUID,
    body: Withdrawal,
    today: dt.date,
) -> ApplicationView:
    application, authority = await _open_application_to_act_on(
        repo, principal, application_id, Act.WITHDRAW, today, "withdraw the application"
    )
    now = dt.datetime.now(dt.UTC)
    application.withdrawn_at = now
    application.withdrawal_reason = body.reason
    application.status = ApplicationStatus.WITHDRAWN.value
    application.updated_at = now
    event = await outbox.emit(
        repo.session,
        ApplicationWithdrawn(
            application_id=application.id, resident_id=application.resident_id, reason=body.reason, withdrawn_at=now
        ),
        subject=str(application.id),
    )
    _add_act_entry(
        repo,
        application.id,
        event,
        authority,
        (
            Localized(ko="신청을 철회했습니다", en="You withdrew the application"),
            Localized(ko="대리인이 신청을 철회했습니다", en="Your representative withdrew the application"),
            Localized(ko="창구에서 신청을 철회했습니다", en="The application was withdrawn for you at a counter"),
        ),
        at=event.time,
        details=_by(authority),
    )
    await _record_act(repo, principal, application, authority, "withdraw")
    await repo.session.flush()
    return await build_view(repo, application)


async def give_feedback(
    repo: Repository,
    outbox: Outbox,
    principal: Principal,
    application_id: uuid.UUID,
    body: FeedbackCreate,
    today: dt.date,
) -> FeedbackView:
    """A rating at the point of delivery: once per application, once it (or one of its cases) is completed. The
    resident gives it, or counter staff for them under their authority (a representative's scopes do not include
    it: the rating is the resident's own word)."""
    application = await repo.visible_application(principal, application_id, today=today, for_update=True)
    if application is None:
        raise NotFound(f"No application {application_id}.")
    authority = await acting_for(
        repo, principal, application.resident_id, Act.FEEDBACK, today, action="rate the service"
    )
    if await repo.feedback(application.id) is not None:
        raise FeedbackAlreadyGiven("You already rated this application.")
    decided = any(c.state == "decided" for c in await repo.cases(application.id))
    if application.status != ApplicationStatus.COMPLETED and not decided:
        raise FeedbackNotOpen("Feedback opens once the application, or one of its cases, is completed.")
    now = dt.datetime.now(dt.UTC)
    score = f"{body.score}/5"
    feedback = Feedback(
        application_id=application.id,
        resident_id=application.resident_id,
        score=body.score,
        comment=body.comment,
        created_at=now,
    )
    repo.session.add(feedback)
    resident = await repo.session.get(Resident, application.resident_id)
    assert resident is not None  # an application's resident is never deleted
    event = await outbox.emit(
        repo.session,
        FeedbackGiven(
            application_id=application.id,
            resident_id=application.resident_id,
            life_event=application.life_event,
            channel=Channel(application.channel),
            district_code=resident.district_code,
            score=body.score,
            given_at=now,
        ),
        subject=str(application.id),
    )
    _add_act_entry(
        repo,
        application.id,
        event,
        authority,
        (
            Localized(ko=f"서비스 평가를 남겼습니다 ({score})", en=f"You rated the service {score}"),
            Localized(ko=f"대리인이 서비스를 평가했습니다 ({score})", en=f"Your representative rated it {score}"),
            Localized(ko=f"창구에서 서비스 평가를 남겼습니다 ({score})", en=f"You rated it {score} at a counter"),
        ),
        at=now,
        details=_by(authority),
    )
    await _record_act(repo, principal, application, authority, "give feedback", record_type="feedback")
    await repo.session.flush()
    return FeedbackView(
        application_id=feedback.application_id,
        score=feedback.score,
        comment=feedback.comment,
        created_at=feedback.created_at,
    )


# ---------------------------------------------------------------------------------------------- reading


async def read(repo: Repository, principal: Principal, application_id: uuid.UUID, today: dt.date) -> ApplicationView:
    """One status across every department, for whoever may see the application (reads by anyone but the resident
    are logged)."""
    # The application and every part of its status in one statement: one round trip for a resident's own.
    status = await repo.visible_status(principal, application_id, today=today)
    if status is None:
        raise NotFound(f"No application {application_id}.")
    application, parts = status
    purpose, authority = await application_read_purpose(repo, principal, application.resident_id, today)
    await record_access(
        repo,
        principal,
        application.resident_id,
        action="read",
        record_type="application",
        record_id=application.id,
        purpose=purpose,
        authority=authority,
    )
    return status_view(application, parts)


async def list_visible(
    repo: Repository,
    principal: Principal,
    *,
    today: dt.date,
    resident_id: uuid.UUID | None,
    status: ApplicationStatus | None,
    cursor: str | None,
    limit: int,
) -> ApplicationPage:
    """The applications the caller may see, newest first, a page at a time (each read by anyone but the resident is
    logged)."""
    after = decode_cursor(cursor) if cursor else None
    found = await repo.list_applications(
        principal,
        today=today,
        resident_id=resident_id,
        status=status.value if status else None,
        after=after,
        limit=limit + 1,
    )
    page = found[:limit]
    why: dict[uuid.UUID, tuple[str, Authority | None]] = {}
    for application in page:
        if application.resident_id not in why:
            why[application.resident_id] = await application_read_purpose(
                repo, principal, application.resident_id, today
            )
        purpose, authority = why[application.resident_id]
        await record_access(
            repo,
            principal,
            application.resident_id,
            action="list",
            record_type="application",
            record_id=application.id,
            purpose=purpose,
            authority=authority,
        )
    return ApplicationPage(
        items=[
            ApplicationSummary(
                id=a.id,
                resident_id=a.resident_id,
                life_event=a.life_event,
                channel=Channel(a.channel),
                status=ApplicationStatus(a.status),
                application_date=a.application_date,
                submitted_at=a.submitted_at,
                filed_by=a.filed_by,
                updated_at=a.updated_at,
            )
            for a in page
        ],
        next_cursor=encode_cursor(page[-1]) if len(found) > limit else None,
    )


# ---------------------------------------------------------------------------------------------- paging


def encode_cursor(application: Application) -> str:
    raw = f"{application.submitted_at.isoformat()}|{application.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, last_id = raw.partition("|")
        parsed = dt.datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed.astimezone(dt.UTC), uuid.UUID(last_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise UnprocessableContent.for_field("query.cursor", "is not a cursor this API gave out") from None
