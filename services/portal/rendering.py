"""The templates and the filters they format with, in the visitor's language: dates and times in the city's time
zone, money in won, the catalogue's texts in Korean or English."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from services.portal.i18n import Messages

TEMPLATES = Path(__file__).resolve().parent / "templates"
_KST = dt.timezone(dt.timedelta(hours=9), "KST")


def environment(messages: Messages, timezone: str) -> jinja2.Environment:
    try:
        zone: dt.tzinfo = ZoneInfo(timezone)
    except Exception:
        zone = _KST
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    @jinja2.pass_context
    def t(context: Any, key: str, **values: Any) -> str:
        return messages.text(key, context["lang"], **values)

    @jinja2.pass_context
    def loc(context: Any, value: Any, fallback: str = "") -> str:
        """A text the services give in both languages ({"ko": …, "en": …})."""
        if isinstance(value, dict):
            return str(value.get(context["lang"]) or value.get("ko") or fallback)
        return str(value) if value else fallback

    @jinja2.pass_context
    def date(context: Any, value: Any) -> str:
        if not value:
            return ""
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
        if context["lang"] == "ko":
            return f"{day.year}년 {day.month}월 {day.day}일"
        return day.strftime("%-d %b %Y")

    @jinja2.pass_context
    def moment(context: Any, value: Any) -> str:
        if not value:
            return ""
        at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        local = at.astimezone(zone)
        return f"{date(context, local.date())} {local:%H:%M}"

    @jinja2.pass_context
    def money(context: Any, amount: Any, period: str | None = None) -> str:
        if amount is None:
            return ""
        figure = f"{int(amount):,}"
        text = f"{figure}원" if context["lang"] == "ko" else f"KRW {figure}"
        if period:
            text += " " + messages.text(f"period.{period}", context["lang"])
        return text

    @jinja2.pass_context
    def departments(context: Any, codes: list[str]) -> str:
        return ", ".join(messages.text(f"department.{code}", context["lang"]) for code in codes)

    def iso(value: Any) -> str:
        return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value or "")

    env.globals.update(t=t, loc=loc)
    env.filters.update(date=date, moment=moment, money=money, iso=iso, departments=departments)
    return env
