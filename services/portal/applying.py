"""Applying for a life event: which questions to ask, why each is asked or not, and reading the answers.

The questions are what eligibility's screener (``POST /v1/evaluate``, nothing stored) lists as still able to change
an outcome of the life event's programs. A question is not asked when the government already holds the answer — the
resident registry establishes it, or a department whose data the resident agreed may be used reports it — or when
only staff can supply it; the page says which, for each. What the resident leaves blank is simply not declared: if
it matters, the status page asks for it afterwards."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.portal.backends import Upstream


@dataclass
class Question:
    name: str
    type: str
    text: dict[str, str]
    needed_for: list[dict[str, str]] = field(default_factory=list)
    enum: list[str] | None = None
    items: str | None = None
    pattern: str | None = None
    value: str = ""
    error: str | None = None
    # Set where one page asks the same fact more than once (screening's questions, one per program).
    key: str | None = None

    @property
    def input_id(self) -> str:
        return f"fact-{self.name}" + (f"-{self.key}" if self.key else "")


@dataclass
class NotAsked:
    name: str
    text: dict[str, str]
    reason: str  # registry | department | staff
    departments: list[str] = field(default_factory=list)


@dataclass
class Questionnaire:
    life_event: dict[str, Any]
    asked: list[Question]
    not_asked: list[NotAsked]

    def by_name(self) -> dict[str, Question]:
        return {q.name: q for q in self.asked}


async def life_event(up: Upstream, code: str) -> dict[str, Any] | None:
    events: list[dict[str, Any]] = await up.get("intake", "/v1/life-events")
    return next((e for e in events if e["code"] == code), None)


async def fact_types(up: Upstream) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in await up.get("eligibility", "/v1/fact-types")}


async def questionnaire(up: Upstream, resident_id: str, event: dict[str, Any]) -> Questionnaire:
    types = await fact_types(up)
    screened = await up.post("eligibility", "/v1/evaluate", {"life_event": event["code"], "facts": {}})
    consents = (await up.get("intake", f"/v1/residents/{resident_id}/consents"))["consents"]
    shared_departments = {
        p.split(":", 1)[1] for p, granted in consents.items() if granted and p.startswith("department_data:")
    }
    needed_for: dict[str, list[dict[str, str]]] = {}
    for program in screened["programs"]:
        for missing in program["missing"]:
            needed_for.setdefault(missing["name"], []).append(program["program_name"])
    asked: list[Question] = []
    not_asked: list[NotAsked] = []
    for missing in screened["missing"]:
        name = missing["name"]
        kind = types.get(name, {})
        holders = sorted(set(kind.get("authorities") or []) & shared_departments)
        if missing.get("asked_of") == "staff":
            not_asked.append(NotAsked(name, missing["question"], "staff"))
        elif kind.get("registry"):
            not_asked.append(NotAsked(name, missing["question"], "registry"))
        elif holders:
            not_asked.append(NotAsked(name, missing["question"], "department", holders))
        else:
            asked.append(question(kind or missing, needed_for.get(name, [])))
    return Questionnaire(event, asked, not_asked)


def question(kind: dict[str, Any], needed_for: list[dict[str, str]] | None = None) -> Question:
    return Question(
        name=kind["name"],
        type=kind["type"],
        text=kind["question"],
        needed_for=needed_for or [],
        enum=kind.get("enum"),
        items=kind.get("items"),
        pattern=kind.get("pattern"),
    )


@dataclass
class ScreeningQuestion:
    """One question proactive screening asks (intake's): the fact, the program it could open, and why."""

    id: str
    program_name: dict[str, str]
    program_code: str
    department: str
    why: dict[str, str]
    question: Question
    # One key per question shown: a double click or a retry answers once.
    idempotency_key: str = field(default_factory=lambda: str(uuid.uuid4()))


def screening_question(found: dict[str, Any]) -> ScreeningQuestion:
    fact = found["fact"]
    return ScreeningQuestion(
        id=str(found["id"]),
        program_name=found["program_name"],
        program_code=found["program_code"],
        department=found["department"],
        why=found["why"],
        question=Question(
            name=fact["name"], type=fact["type"], text=fact["question"], enum=fact.get("choices"), key=str(found["id"])
        ),
    )


# ---------------------------------------------------------------------------------------------- reading answers

_INTEGER = re.compile(r"^-?[0-9][0-9,]*$")


def read_answers(questions: list[Question], form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The answers given (blank ones left out) and, by question, the message key of what is wrong with an answer.
    Each question keeps the text typed, so a page with errors shows it again."""
    answers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for q in questions:
        raw = form.get(q.input_id)
        text = raw.strip() if isinstance(raw, str) else ""
        q.value = text
        if not text:
            continue
        try:
            answers[q.name] = parse(q, text)
        except ValueError as exc:
            errors[q.name] = str(exc)
            q.error = str(exc)
    return answers, errors


def parse(q: Question, text: str) -> Any:
    if q.type == "integer":
        if not _INTEGER.match(text.replace(" ", "")):
            raise ValueError("answer.error.integer")
        value = int(text.replace(",", "").replace(" ", ""))
        if value < 0:
            raise ValueError("answer.error.negative")
        if value > 10**12:
            raise ValueError("answer.error.too_large")
        return value
    if q.type == "number":
        try:
            number = float(text.replace(",", ""))
        except ValueError:
            raise ValueError("answer.error.number") from None
        if number < 0:
            raise ValueError("answer.error.negative")
        return number
    if q.type == "boolean":
        if text not in ("yes", "no"):
            raise ValueError("answer.error.choice")
        return text == "yes"
    if q.type == "date":
        return _date(text).isoformat()
    if q.type == "list":
        parts = [p.strip() for p in re.split(r"[\n,]+", text) if p.strip()]
        if q.items == "date":
            return [_date(p, "answer.error.list_date").isoformat() for p in parts]
        if q.items == "integer":
            try:
                return [int(p) for p in parts]
            except ValueError:
                raise ValueError("answer.error.integer") from None
        return parts
    # string
    if q.enum is not None and text not in q.enum:
        raise ValueError("answer.error.choice")
    if q.pattern and not re.fullmatch(q.pattern, text):
        raise ValueError("answer.error.pattern")
    if len(text) > 500:
        raise ValueError("answer.error.too_long")
    return text


def _date(text: str, error: str = "answer.error.date") -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(error)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(error) from None


def display(q: Question, value: Any) -> str:
    """An answer as the review page shows it (booleans and choices are worded by the template)."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
