"""The resident's pages: applying for a life event, the one status of an application (outcomes explained, missing
questions answered in place, cases, decisions, the timeline, feedback), the inbox, opportunities, consents and the
access log. Thin routes: each calls the services as the resident and renders."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from services.portal import applying, status
from services.portal.backends import Invalid, NotVisible
from services.portal.web import ResidentPage
from shared.events import OfferDeclineReason

router = APIRouter(include_in_schema=False)

DEPARTMENTS = ("welfare", "health", "housing", "tax", "civil_registry", "labour")


@router.get("/my")
async def dashboard(page: ResidentPage) -> Response:
    up, me = page.up, page.me
    applications = await up.get("intake", "/v1/applications", params={"resident_id": me.resident_id, "limit": 20})
    inbox = await up.get("notify", "/v1/inbox", params={"limit": 50})
    offers = await up.get("intake", f"/v1/residents/{me.resident_id}/opportunities", params={"status": "offered"})
    return page.render(
        "resident/dashboard.html",
        applications=applications["items"],
        unread=inbox["unread"],
        opportunities=len(offers),
    )


# ---------------------------------------------------------------------------------------------- applying


@router.get("/apply")
async def choose_life_event(page: ResidentPage) -> Response:
    return page.render("resident/life_events.html", events=await page.up.get("intake", "/v1/life-events"))


async def _questionnaire(page: ResidentPage, code: str) -> applying.Questionnaire:
    event = await applying.life_event(page.up, code)
    if event is None:
        raise NotVisible({"detail": f"no life event {code}"})
    assert page.me.resident_id is not None
    return await applying.questionnaire(page.up, page.me.resident_id, event)


@router.get("/apply/{code}")
async def questions(page: ResidentPage, code: str) -> Response:
    return page.render("resident/questions.html", form=await _questionnaire(page, code))


@router.post("/apply/{code}")
async def edit_answers(page: ResidentPage, code: str) -> Response:
    """Back from the review to the questions, with the answers given so far."""
    submitted = await page.form()
    form = await _questionnaire(page, code)
    applying.read_answers(form.asked, submitted)
    return page.render("resident/questions.html", form=form)


@router.post("/apply/{code}/review")
async def review(page: ResidentPage, code: str) -> Response:
    submitted = await page.form()
    form = await _questionnaire(page, code)
    answers, errors = applying.read_answers(form.asked, submitted)
    if errors:
        return page.render("resident/questions.html", status=422, form=form, errors=errors)
    return page.render(
        "resident/review.html",
        form=form,
        answers=answers,
        answers_json=json.dumps(answers, ensure_ascii=False),
        # One key per review: a double click, a retry or a reload of the submission files one application.
        idempotency_key=str(uuid.uuid4()),
    )


@router.post("/apply/{code}/submit")
async def submit(page: ResidentPage, code: str) -> Response:
    submitted = await page.form()
    form = await _questionnaire(page, code)
    try:
        answers = json.loads(str(submitted.get("answers") or "{}"))
    except ValueError:
        answers = {}
    if not isinstance(answers, dict):
        answers = {}
    # The answers come back from the review page: read them again as if typed, so nothing unchecked goes on.
    by_name = form.by_name()
    retyped = {by_name[k].input_id: _as_typed(v) for k, v in answers.items() if k in by_name}
    answers, errors = applying.read_answers(form.asked, retyped)
    if errors:
        return page.render("resident/questions.html", status=422, form=form, errors=errors)
    key = str(submitted.get("idempotency_key") or "")
    try:
        uuid.UUID(key)
    except ValueError:
        key = str(uuid.uuid4())
    try:
        created = await page.up.post(
            "intake",
            "/v1/applications",
            {"resident_id": page.me.resident_id, "life_event": code, "answers": answers, "channel": "web"},
            idempotency_key=key,
        )
    except Invalid as exc:
        errors = {}
        for name, message in exc.field_errors().items():
            if name in by_name:
                by_name[name].error = "answer.error.refused"
                errors[name] = message
        return page.render("resident/questions.html", status=422, form=form, errors=errors, refused=exc.detail)
    return page.redirect(f"/applications/{created['id']}")


def _as_typed(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------- the one status


@router.get("/applications/{application_id}")
async def application(page: ResidentPage, application_id: uuid.UUID) -> Response:
    view = await status.application(page.up, application_id)
    return page.render("resident/application.html", view=view, idempotency_key=str(uuid.uuid4()))


@router.post("/applications/{application_id}/answers")
async def answer(page: ResidentPage, application_id: uuid.UUID) -> Response:
    submitted = await page.form()
    view = await status.application(page.up, application_id)
    answers, errors = applying.read_answers(view.questions, submitted)
    note = str(submitted.get("note") or "").strip()
    if errors or (not answers and not note):
        return page.render(
            "resident/application.html",
            status=422,
            view=view,
            idempotency_key=str(submitted.get("idempotency_key") or uuid.uuid4()),
            answer_errors=errors,
            nothing_given=not answers and not note,
        )
    body: dict[str, Any] = {"answers": answers}
    if note:
        body["note"] = note[:2000]
    try:
        await page.up.post(
            "intake",
            f"/v1/applications/{application_id}/info",
            body,
            idempotency_key=_key(submitted.get("idempotency_key")),
        )
    except Invalid as exc:
        for q in view.questions:
            if q.name in exc.field_errors():
                q.error = "answer.error.refused"
        return page.render(
            "resident/application.html",
            status=422,
            view=view,
            idempotency_key=str(uuid.uuid4()),
            answer_errors={q.name: q.error for q in view.questions if q.error},
            refused=exc.detail,
        )
    return page.redirect(f"/applications/{application_id}?answered=1#answers")


@router.post("/applications/{application_id}/feedback")
async def feedback(page: ResidentPage, application_id: uuid.UUID) -> Response:
    submitted = await page.form()
    score = str(submitted.get("score") or "")
    comment = str(submitted.get("comment") or "").strip()
    if score not in {"1", "2", "3", "4", "5"} or len(comment) > 1000:
        view = await status.application(page.up, application_id)
        return page.render(
            "resident/application.html",
            status=422,
            view=view,
            idempotency_key=str(uuid.uuid4()),
            feedback_error="feedback.error.score" if score not in {"1", "2", "3", "4", "5"} else "feedback.error.long",
            feedback_comment=comment,
        )
    body: dict[str, Any] = {"score": int(score)}
    if comment:
        body["comment"] = comment
    await page.up.post(
        "intake",
        f"/v1/applications/{application_id}/feedback",
        body,
        idempotency_key=_key(submitted.get("idempotency_key")),
    )
    return page.redirect(f"/applications/{application_id}?thanks=1#feedback")


def _key(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------- inbox


@router.get("/inbox")
async def inbox(page: ResidentPage, before: str | None = None) -> Response:
    params: dict[str, Any] = {"limit": 20}
    if before:
        params["before"] = before
    found = await page.up.get("notify", "/v1/inbox", params=params)
    return page.render("resident/inbox.html", inbox=found)


@router.post("/inbox/{message_id}/read")
async def mark_read(page: ResidentPage, message_id: uuid.UUID) -> Response:
    await page.form()
    await page.up.post("notify", f"/v1/inbox/{message_id}/read")
    return page.redirect(f"/inbox#message-{message_id}")


# ---------------------------------------------------------------------------------------------- opportunities


@router.get("/opportunities")
async def opportunities(page: ResidentPage) -> Response:
    # The offers proactive screening found that stand now (intake's): each accepted with one confirmation (the
    # application is filed with what is known already) or declined with a reason.
    return await _opportunities(page)


async def _opportunities(
    page: ResidentPage,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    asked: list[applying.ScreeningQuestion] | None = None,
) -> Response:
    offers = await page.up.get(
        "intake", f"/v1/residents/{page.me.resident_id}/opportunities", params={"status": "offered"}
    )
    for offer in offers:
        # One key per offer and act: a double click or a retry files one application, declines once.
        offer["accept_key"], offer["decline_key"] = str(uuid.uuid4()), str(uuid.uuid4())
    return page.render(
        "resident/opportunities.html",
        status=status,
        offers=offers,
        questions=asked if asked is not None else await _screening_questions(page),
        reasons=[r.value for r in OfferDeclineReason],
        errors=errors or {},
    )


async def _screening_questions(page: ResidentPage) -> list[applying.ScreeningQuestion]:
    # A near miss: one fact could make the resident eligible for a program; screening asks for it, with the reason.
    found = await page.up.get("intake", f"/v1/residents/{page.me.resident_id}/questions", params={"status": "open"})
    return [applying.screening_question(q) for q in found]


@router.post("/questions/{question_id}/answer")
async def answer_screening_question(page: ResidentPage, question_id: uuid.UUID) -> Response:
    submitted = await page.form()
    asked = await _screening_questions(page)
    chosen = next((q for q in asked if q.id == str(question_id)), None)
    if chosen is None:
        raise NotVisible({"detail": f"no open question {question_id}"})
    answers, _ = applying.read_answers([chosen.question], submitted)
    if chosen.question.error is None and chosen.question.name not in answers:
        chosen.question.error = "answer.error.required"
    if chosen.question.error is not None:
        return await _opportunities(page, status=422, asked=asked)
    try:
        await page.up.post(
            "intake",
            f"/v1/residents/{page.me.resident_id}/questions/{question_id}/answer",
            {"value": answers[chosen.question.name]},
            idempotency_key=_key(submitted.get("idempotency_key")),
        )
    except Invalid:
        chosen.question.error = "answer.error.refused"
        return await _opportunities(page, status=422, asked=asked)
    return page.redirect("/opportunities?answered=1")


@router.post("/opportunities/{opportunity_id}/accept")
async def accept_opportunity(page: ResidentPage, opportunity_id: uuid.UUID) -> Response:
    submitted = await page.form()
    accepted = await page.up.post(
        "intake",
        f"/v1/residents/{page.me.resident_id}/opportunities/{opportunity_id}/accept",
        {"channel": "web"},
        idempotency_key=_key(submitted.get("idempotency_key")),
    )
    return page.redirect(f"/applications/{accepted['application']['id']}")


@router.post("/opportunities/{opportunity_id}/decline")
async def decline_opportunity(page: ResidentPage, opportunity_id: uuid.UUID) -> Response:
    submitted = await page.form()
    reason = str(submitted.get("reason") or "")
    if reason not in {r.value for r in OfferDeclineReason}:
        return await _opportunities(page, status=422, errors={str(opportunity_id): "opportunities.error.reason"})
    await page.up.post(
        "intake",
        f"/v1/residents/{page.me.resident_id}/opportunities/{opportunity_id}/decline",
        {"reason": reason},
        idempotency_key=_key(submitted.get("idempotency_key")),
    )
    return page.redirect("/opportunities?declined=1")


# ---------------------------------------------------------------------------------------------- consents, access log


@router.get("/consents")
async def consents(page: ResidentPage) -> Response:
    current = await page.up.get("intake", f"/v1/residents/{page.me.resident_id}/consents")
    return page.render("resident/consents.html", consents=current, departments=DEPARTMENTS)


@router.post("/consents")
async def set_consents(page: ResidentPage) -> Response:
    submitted = await page.form()
    current = await page.up.get("intake", f"/v1/residents/{page.me.resident_id}/consents")
    chosen = set(submitted.getlist("purpose"))
    # Every purpose the page offered (and every one the resident has answered before) is set, granted or not.
    offered = {
        "proactive_screening",
        "case_management",
        *(f"department_data:{d}" for d in DEPARTMENTS),
        *current["consents"],
    }
    body = {"consents": {purpose: purpose in chosen for purpose in sorted(offered)}}
    await page.up.put("intake", f"/v1/residents/{page.me.resident_id}/consents", body)
    return page.redirect("/consents?saved=1")


@router.get("/access-log")
async def access_log(page: ResidentPage, cursor: str | None = None) -> Response:
    params: dict[str, Any] = {"limit": 30}
    if cursor:
        params["cursor"] = cursor
    log = await page.up.get("intake", f"/v1/residents/{page.me.resident_id}/access-log", params=params)
    messages = await page.up.get("notify", "/v1/access-log", params={"limit": 30})
    return page.render("resident/access_log.html", log=log, message_log=messages)
