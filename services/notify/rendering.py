"""Turning a notification into words: Jinja2 templates per kind and language (services/notify/templates/<lang>/).

Each template defines four blocks: ``subject``, ``text`` (plain-text email and the in-app inbox), ``sms`` (short)
and ``html`` (the email's HTML part). The same file is compiled twice: with autoescaping for the HTML block, without
it for the others, so a program name with ``<`` or ``&`` is escaped in HTML and left alone in plain text.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from jinja2.runtime import Context
from markupsafe import Markup

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("ko", "en")

# The kinds of message, named after the event that causes them.
KINDS = (
    "application.submitted",
    "eligibility.determined",
    "case.routed",
    "case.info_requested",
    "case.resumed",
    "case.transferred",
    "case.decided",
    "case.sla_breached",
    "eligibility.opportunity",
    "screening.question_asked",
    "application.withdrawn",
    "resident.erasure_completed",
    "household_case.opened",
    "household_case.plan_changed",
    "household_case.closed",
)

LIFE_EVENTS: dict[str, dict[str, str]] = {
    "birth": {"ko": "출산", "en": "the birth of a child"},
    "moving_in": {"ko": "전입", "en": "moving in"},
    "job_loss": {"ko": "실직", "en": "losing a job"},
    "death_in_family": {"ko": "가족의 사망", "en": "a death in the family"},
    "turning_65": {"ko": "만 65세 도래", "en": "turning 65"},
    "starting_business": {"ko": "창업", "en": "starting a business"},
}

DEPARTMENTS: dict[str, dict[str, str]] = {
    "welfare": {"ko": "복지", "en": "welfare"},
    "health": {"ko": "보건", "en": "health"},
    "housing": {"ko": "주택", "en": "housing"},
    "tax": {"ko": "세무", "en": "tax"},
    "civil_registry": {"ko": "민원·가족관계등록", "en": "civil registry"},
    "labour": {"ko": "고용·노동", "en": "labour"},
}

NEED_DOMAINS: dict[str, dict[str, str]] = {
    "income": {"ko": "소득", "en": "income"},
    "housing": {"ko": "주택", "en": "housing"},
    "health": {"ko": "건강", "en": "health"},
    "care": {"ko": "돌봄", "en": "care"},
    "employment": {"ko": "일자리", "en": "work"},
    "education": {"ko": "교육", "en": "education"},
}

HOUSEHOLD_OUTCOMES: dict[str, dict[str, str]] = {
    "goals_met": {"ko": "함께 세운 목표를 이루어", "en": "the goals we set together were met"},
    "moved_away": {"ko": "다른 지역으로 이사하셔서", "en": "you moved away"},
    "declined": {"ko": "더 이상 지원을 원하지 않으셔서", "en": "you told us you no longer wanted this support"},
    "referred_on": {"ko": "더 알맞은 기관으로 연계되어", "en": "another service better placed to help has taken over"},
}

_PERIODS = {
    "ko": {"once": "", "monthly": "매월 ", "yearly": "매년 ", "total": "총 "},
    "en": {
        "once": " (one payment)",
        "monthly": " a month",
        "yearly": " a year",
        "total": " in total, paid month by month",
    },
}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    sms: str
    html: str
    link: str


@dataclass(frozen=True)
class TextContent:
    """A message's words without its HTML or SMS: what the in-app inbox shows and a letter prints."""

    subject: str
    text: str
    link: str


@dataclass(frozen=True)
class EmailContent:
    """What an e-mail carries: the subject, the plain text and the HTML part (no SMS)."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class MessageInput:
    """What a notification holds, independent of the database."""

    kind: str
    language: str
    application_id: str | None
    items: Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class _Written:
    """A message's subject and plain text, and what its other parts (SMS, HTML) are rendered from."""

    language: str
    link: str
    context: dict[str, Any]
    template: Template
    template_context: Context
    html_template: Template
    subject: str
    text: str


@dataclass(frozen=True)
class _Compiled:
    """Every template of a directory, compiled: text and HTML of each (language, kind), and the HTML layout."""

    templates: dict[tuple[str, str], tuple[Template, Template]]
    layout: Template


def _environment(template_dir: Path, *, autoescape: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(template_dir),
        # On for the HTML environment; off on purpose for subjects, plain text and SMS, which are not HTML.
        autoescape=autoescape,  # noqa: S701
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # The templates ship with the code: not looked at on disk again for every message rendered.
        auto_reload=False,
    )
    env.filters["loc"] = _localized
    env.filters["money"] = _money
    env.filters["day"] = _day
    env.filters["department"] = lambda code, lang: DEPARTMENTS.get(str(code), {}).get(lang, str(code))
    env.filters["domain"] = lambda code, lang: NEED_DOMAINS.get(str(code), {}).get(lang, str(code))
    env.filters["household_outcome"] = lambda code, lang: HOUSEHOLD_OUTCOMES.get(str(code), {}).get(lang, str(code))
    return env


@functools.cache
def _compiled(template_dir: Path) -> _Compiled:
    """Compiled once per process and directory (0.7 s of CPU for the two environments): the templates ship with the
    code and a compiled template holds no state of a render, so every renderer of the process shares them (the suite
    makes one per test)."""
    text = _environment(template_dir, autoescape=False)
    html = _environment(template_dir, autoescape=True)
    templates = {
        (language, kind): (text.get_template(f"{language}/{kind}.j2"), html.get_template(f"{language}/{kind}.j2"))
        for language in LANGUAGES
        for kind in KINDS
    }
    return _Compiled(templates, html.get_template("layout.html.j2"))


class Renderer:
    def __init__(self, app_base_url: str, template_dir: Path = TEMPLATE_DIR) -> None:
        self.app_base_url = app_base_url.rstrip("/")
        # Every template compiled at start-up: compiled at its first message instead, each held the event loop for
        # tens of milliseconds under load (85 ms seen). Held by (language, kind): looked up for every message, not
        # through the environments' loader caches.
        compiled = _compiled(template_dir)
        self._templates = compiled.templates
        self._layout = compiled.layout

    def link(self, message: MessageInput) -> str:
        if message.application_id:
            return f"{self.app_base_url}/applications/{message.application_id}"
        return f"{self.app_base_url}/applications"

    def render(self, message: MessageInput) -> RenderedMessage:
        """Every part of the message (a channel takes only those it sends: :meth:`email`, :meth:`text`, :meth:`sms`)."""
        written = self._written(message)
        return RenderedMessage(
            subject=written.subject,
            text=written.text,
            sms=" ".join(_block(written.template, "sms", written.template_context).split()),
            html=self._html_part(written),
            link=written.link,
        )

    def email(self, message: MessageInput) -> EmailContent:
        """The e-mail's parts (what ``render(message)`` has of them), without the SMS it does not send."""
        written = self._written(message)
        return EmailContent(subject=written.subject, text=written.text, html=self._html_part(written))

    def text(self, message: MessageInput) -> TextContent:
        """The subject, text and link (what ``render(message)`` has of them): the inbox's and a letter's, which show
        no HTML and no SMS."""
        written = self._written(message)
        return TextContent(subject=written.subject, text=written.text, link=written.link)

    def sms(self, message: MessageInput) -> str:
        """The text message alone (what ``render(message).sms`` is): an SMS needs no subject, e-mail text or HTML."""
        language, _, context = self._prepare(message)
        template, _ = self._templates[(language, message.kind)]
        return " ".join(_block(template, "sms", template.new_context(context)).split())

    def _written(self, message: MessageInput) -> _Written:
        """The subject and plain text of a message, and what its other parts are rendered from."""
        language, link, context = self._prepare(message)
        template, html_template = self._templates[(language, message.kind)]
        # One context for the blocks of a template, not one each: a block's own assignments stay in the block.
        template_context = template.new_context(context)
        return _Written(
            language=language,
            link=link,
            context=context,
            template=template,
            template_context=template_context,
            html_template=html_template,
            subject=" ".join(_block(template, "subject", template_context).split()),
            text=_tidy(_block(template, "text", template_context)),
        )

    def _html_part(self, written: _Written) -> str:
        # The body comes from the autoescaping environment: already HTML, not to be escaped again by the layout.
        body = Markup(_block(written.html_template, "html", written.html_template.new_context(written.context)))  # noqa: S704
        return self._layout.render(lang=written.language, subject=written.subject, body=body, link=written.link)

    def _prepare(self, message: MessageInput) -> tuple[str, str, dict[str, Any]]:
        """The language told in, the link and the templates' context."""
        language = message.language if message.language in LANGUAGES else "ko"
        if message.kind not in KINDS:
            raise ValueError(f"no template for {message.kind}")
        link = self.link(message)
        return language, link, {"lang": language, "link": link, **_context(message.kind, message.items)}


def _block(template: Template, name: str, context: Context) -> str:
    return "".join(template.blocks[name](context))


def _tidy(text: str) -> str:
    """Trim trailing spaces and collapse runs of blank lines left by template logic."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- template context


def _context(kind: str, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    context: dict[str, Any] = {"items": list(items)}
    if kind == "eligibility.determined":
        # Bundled rounds: the latest word on each program wins.
        programs: dict[str, Mapping[str, Any]] = {}
        for item in sorted(items, key=lambda i: int(i.get("round", 0))):
            for program in item.get("programs", []):
                programs[program["code"]] = program
        merged = list(programs.values())
        for outcome in ("eligible", "ineligible", "needs_information", "needs_review"):
            context[outcome] = [p for p in merged if p["outcome"] == outcome]
    elif kind == "application.submitted":
        first = items[0] if items else {}
        context["life_event"] = LIFE_EVENTS.get(str(first.get("life_event")))
        context["life_event_code"] = first.get("life_event")
        context["application_date"] = first.get("application_date")
    elif kind == "resident.erasure_completed":
        first = items[0] if items else {}
        context["kept"] = sorted(first.get("kept", []), key=lambda k: (str(k.get("destroy_on")), k.get("service", "")))
    elif kind in ("case.decided",):
        context["approved"] = [i for i in items if i.get("decision") == "approved"]
        context["denied"] = [i for i in items if i.get("decision") == "denied"]
    return context


# ---------------------------------------------------------------------------------------------- filters


def _localized(value: Any, lang: str, fallback: Any = "") -> str:
    """A ``{"ko": .., "en": ..}`` text in ``lang`` (or the other language, or the fallback)."""
    if isinstance(value, Mapping):
        text = value.get(lang) or value.get("ko") or value.get("en")
        if text:
            return str(text)
    elif isinstance(value, str) and value:
        return value
    return str(fallback)


def _money(amount: Any, lang: str, period: str | None = None) -> str:
    if amount is None:
        return ""
    value = f"{int(amount):,}"
    if lang == "ko":
        return f"{_PERIODS['ko'].get(period or 'once', '')}{value}원"
    return f"KRW {value}{_PERIODS['en'].get(period or 'once', '')}"


def _day(value: Any, lang: str) -> str:
    if value is None or value == "":
        return ""
    day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    if lang == "ko":
        return f"{day.year}년 {day.month}월 {day.day}일"
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"
