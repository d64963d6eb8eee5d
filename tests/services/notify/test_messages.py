"""The parts without I/O: templates in both languages, quiet hours, backoff, the delivery loop's stop, where webhooks
may point, signatures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import random
import shutil
import uuid
from email.errors import HeaderParseError
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiosmtplib.email import extract_recipients, extract_sender

from services.notify.channels import Email, MaildirEmail, SmtpEmail, build_email
from services.notify.rendering import (
    DEPARTMENTS,
    KINDS,
    LIFE_EVENTS,
    EmailContent,
    MessageInput,
    RenderedMessage,
    Renderer,
    TextContent,
)
from services.notify.schedule import backoff, quiet_until
from services.notify.settings import DEFAULT_FORBIDDEN_NETWORKS, NotifySettings
from services.notify.webhooks import AddressPolicy, UnsafeUrl, check_url, sign, webhook_headers
from services.notify.worker import _loop
from tests.services.notify.support import SMTP_PASSWORD, SMTP_USER
from tests.services.notify.test_partners import standard_webhook_signature_valid
from tests.support.smtp import MailServer

SEOUL = ZoneInfo("Asia/Seoul")
APP = "11111111-2222-3333-4444-555555555555"

ITEMS: dict[str, list[dict[str, object]]] = {
    "application.submitted": [{"life_event": "birth", "application_date": "2025-03-04", "channel": "web"}],
    "eligibility.determined": [
        {
            "round": 1,
            "programs": [
                {
                    "code": "child_allowance",
                    "name": {"ko": "아동수당", "en": "Child allowance"},
                    "department": "welfare",
                    "outcome": "eligible",
                    "automatic": True,
                    "amount": 100000,
                    "amount_period": "monthly",
                    "questions": [],
                    "staff_pending": False,
                    "reasons": [],
                },
                {
                    "code": "parent_benefit",
                    "name": {"ko": "부모급여 <특별>", "en": "Parent benefit <special> & co"},
                    "department": "welfare",
                    "outcome": "needs_information",
                    "automatic": False,
                    "amount": None,
                    "amount_period": None,
                    "questions": [{"ko": "아이가 어린이집에 다니나요?", "en": "Does the child attend daycare?"}],
                    "staff_pending": False,
                    "reasons": [],
                },
                {
                    "code": "housing",
                    "name": {"ko": "주거급여", "en": "Housing benefit"},
                    "department": "housing",
                    "outcome": "ineligible",
                    "automatic": False,
                    "amount": None,
                    "amount_period": None,
                    "questions": [],
                    "staff_pending": False,
                    "reasons": [
                        {"ko": "소득인정액이 기준 중위소득의 48% 이하", "en": "Income at most 48% of the median"}
                    ],
                },
            ],
        }
    ],
    "case.routed": [
        {
            "case_id": "c1",
            "program_code": "parent_benefit",
            "program_name": None,
            "office_code": "JN",
            "office_name": {"ko": "종로구청", "en": "Jongno-gu Office"},
            "due_date": "2025-03-18",
        }
    ],
    "case.info_requested": [
        {
            "case_id": "c1",
            "program_code": "p",
            "program_name": {"ko": "부모급여", "en": "Parent benefit"},
            "office_code": None,
            "office_name": None,
            "questions": ["통장 사본 / bank book copy"],
        }
    ],
    "case.resumed": [
        {
            "case_id": "c1",
            "program_code": "p",
            "program_name": {"ko": "부모급여", "en": "Parent benefit"},
            "office_code": None,
            "office_name": None,
            "due_date": "2025-03-21",
        },
    ],
    "case.transferred": [
        {
            "case_id": "c1",
            "program_code": "p",
            "program_name": {"ko": "부모급여", "en": "Parent benefit"},
            "office_code": "MP-WEL",
            "office_name": {"ko": "마포구청", "en": "Mapo-gu Office"},
            "due_date": "2025-03-20",
        },
    ],
    "case.decided": [
        {
            "case_id": "c1",
            "program_code": "a",
            "program_name": {"ko": "아동수당", "en": "Child allowance"},
            "decision": "approved",
            "reason_code": "granted",
            "reason": None,
            "amount": 100000,
            "amount_period": None,
        },
        {
            "case_id": "c2",
            "program_code": "b",
            "program_name": {"ko": "주거급여", "en": "Housing benefit"},
            "decision": "denied",
            "reason_code": "income",
            "reason": {"ko": "소득 기준 초과", "en": "Income too high"},
            "amount": None,
            "amount_period": None,
        },
    ],
    "case.sla_breached": [
        {
            "case_id": "c1",
            "program_code": "p",
            "program_name": {"ko": "부모급여", "en": "Parent benefit"},
            "due_date": "2025-03-18",
            "expected_by": "2025-03-25",
        }
    ],
    "eligibility.opportunity": [
        {
            "program_code": "basic_pension",
            "program_name": {"ko": "기초연금", "en": "Basic pension"},
            "department": "welfare",
            "amount": 342510,
            "amount_period": "monthly",
        }
    ],
    "screening.question_asked": [
        {
            "program_code": "tomorrow_learning_card",
            "program_name": {"ko": "국민내일배움카드", "en": "Tomorrow learning card"},
            "department": "labour",
            "question": {"ko": "현재 공무원입니까?", "en": "Are you currently a civil servant?"},
        }
    ],
    "application.withdrawn": [{"withdrawn_at": "2025-03-04T10:00:00+00:00"}],
    "resident.erasure_completed": [
        {
            "completed_at": "2026-03-04T10:00:00+00:00",
            "kept": [
                {
                    "service": "routing",
                    "record_type": "decided_cases",
                    "count": 1,
                    "destroy_on": "2032-01-01",
                    "reason": {"ko": "행정 결정의 기록", "en": "The record of an administrative decision"},
                    "legal_basis": "공공기록물 관리에 관한 법률 시행령 제26조",
                },
            ],
        }
    ],
    "household_case.opened": [
        {
            "office_code": "JONGNO-HOPE",
            "household_case_id": "h",
            "office_name": {"ko": "종로구 희망복지지원단", "en": "Jongno-gu Integrated Case Management Team"},
        },
    ],
    "household_case.plan_changed": [
        {"plan_version": 2, "domains": ["income", "care"], "goals": 3, "services": 4, "household_case_id": "h"},
    ],
    "household_case.closed": [
        {"outcome": "goals_met", "follow_up_check_on": "2026-01-14", "household_case_id": "h"},
    ],
}

# Words each message must carry, per language: what happened, in plain language.
EXPECTED: dict[str, dict[str, list[str]]] = {
    "application.submitted": {"ko": ["접수", "출산", "2025년 3월 4일"], "en": ["received", "birth", "4 March 2025"]},
    "eligibility.determined": {
        "ko": ["아동수당: 매월 100,000원", "아이가 어린이집에 다니나요?", "주거급여", "소득인정액"],
        "en": ["Child allowance: KRW 100,000 a month", "Does the child attend daycare?", "Income at most 48%"],
    },
    "case.routed": {"ko": ["종로구청", "2025년 3월 18일"], "en": ["Jongno-gu Office", "18 March 2025"]},
    "case.info_requested": {"ko": ["통장 사본"], "en": ["bank book copy", "Parent benefit"]},
    "case.resumed": {"ko": ["정보를 받아", "2025년 3월 21일"], "en": ["we have the information", "21 March 2025"]},
    "case.transferred": {"ko": ["마포구청", "2025년 3월 20일"], "en": ["Mapo-gu Office", "20 March 2025"]},
    "case.decided": {"ko": ["아동수당: 100,000원", "소득 기준 초과"], "en": ["Approved", "Income too high"]},
    "case.sla_breached": {"ko": ["죄송", "2025년 3월 25일"], "en": ["sorry", "25 March 2025"]},
    "eligibility.opportunity": {"ko": ["기초연금", "매월 342,510원"], "en": ["Basic pension", "KRW 342,510 a month"]},
    "screening.question_asked": {
        "ko": ["국민내일배움카드", "현재 공무원입니까?", "신청이 되지는 않습니다"],
        "en": ["Tomorrow learning card", "Are you currently a civil servant?", "Answering applies for nothing"],
    },
    "application.withdrawn": {"ko": ["철회"], "en": ["withdrawn"]},
    "household_case.opened": {
        "ko": ["종로구 희망복지지원단", "통합사례관리"],
        "en": ["Jongno-gu Integrated Case Management Team", "integrated case management"],
    },
    "household_case.plan_changed": {
        "ko": ["제2판", "소득, 돌봄", "목표 3개"],
        "en": ["version 2", "income, care", "3 goal(s)"],
    },
    "household_case.closed": {
        "ko": ["함께 세운 목표를 이루어", "2026년 1월 14일"],
        "en": ["the goals we set together were met", "14 January 2026"],
    },
    "resident.erasure_completed": {
        "ko": ["개인정보를 삭제했습니다", "행정 결정의 기록 (1건): 2032년 1월 1일까지"],
        "en": ["has been erased", "The record of an administrative decision (1): until 1 January 2032"],
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_message_reads_well_in_korean_and_english(kind: str) -> None:
    renderer = Renderer("https://onestop.example.kr/")
    application = (
        None
        if kind in ("eligibility.opportunity", "screening.question_asked", "resident.erasure_completed")
        or kind.startswith("household_case.")
        else APP
    )
    for language in ("ko", "en"):
        message = renderer.render(MessageInput(kind, language, application, ITEMS[kind]))
        link = f"https://onestop.example.kr/applications{'/' + APP if application else ''}"
        assert message.link == link
        for part in (message.text, message.sms, message.html):
            assert link in part
        for words in EXPECTED[kind][language]:
            assert words in message.text, (language, words)
        assert message.subject.startswith("[원스톱]" if language == "ko" else "[OneStop]")
        assert f'<html lang="{language}">' in message.html
        assert len(message.sms) <= 200, "a text message stays short"
        hangul = any("\uac00" <= ch <= "\ud7a3" for ch in message.text)
        if language == "en":
            # English messages carry no Korean, except what a caseworker typed in Korean.
            assert not hangul or kind == "case.info_requested"
        else:
            assert hangul


def test_html_is_escaped_and_plain_text_is_not() -> None:
    renderer = Renderer("https://onestop.example.kr")
    message = renderer.render(MessageInput("eligibility.determined", "en", APP, ITEMS["eligibility.determined"]))
    assert "Parent benefit &lt;special&gt; &amp; co" in message.html
    assert "<special>" not in message.html
    assert "Parent benefit <special> & co" in message.text


def test_bundled_rounds_tell_the_latest_outcome_of_each_program() -> None:
    renderer = Renderer("https://x")
    first = ITEMS["eligibility.determined"][0]
    later = {"round": 2, "programs": [{**first["programs"][1], "outcome": "eligible", "questions": []}]}  # type: ignore[index]
    message = renderer.render(MessageInput("eligibility.determined", "en", APP, [later, first]))
    assert "Does the child attend daycare?" not in message.text
    assert message.text.count("Parent benefit") == 1


@pytest.mark.parametrize(
    ("period", "korean", "english"),
    [
        ("monthly", "매월 100,000원", "KRW 100,000 a month"),
        ("once", "100,000원", "KRW 100,000 (one payment)"),
        ("total", "총 100,000원", "KRW 100,000 in total, paid month by month"),
    ],
)
def test_an_amount_says_how_it_is_paid(period: str, korean: str, english: str) -> None:
    """A benefit paid month by month at changing rates (parental leave) is told as its total, not as one payment."""
    renderer = Renderer("https://x")
    first = ITEMS["eligibility.determined"][0]
    program = {**first["programs"][0], "amount_period": period}  # type: ignore[index]
    item = {"round": 1, "programs": [program]}
    assert korean in renderer.render(MessageInput("eligibility.determined", "ko", APP, [item])).text
    assert english in renderer.render(MessageInput("eligibility.determined", "en", APP, [item])).text


# ================================================================================================ timing


def local(hour: int, minute: int = 0, day: int = 4) -> dt.datetime:
    return dt.datetime(2025, 3, day, hour, minute, tzinfo=SEOUL).astimezone(dt.UTC)


@pytest.mark.parametrize(
    ("now", "start", "end", "until"),
    [
        (local(23, 30), "22:00", "07:00", local(7, 0, day=5)),  # after the start, before midnight
        (local(3, 0), "22:00", "07:00", local(7, 0)),  # after midnight
        (local(7, 0), "22:00", "07:00", None),  # the end is exclusive
        (local(12, 0), "22:00", "07:00", None),
        (local(13, 30), "13:00", "14:00", local(14, 0)),  # a window within one day
        (local(14, 0), "13:00", "14:00", None),
        (local(12, 59), "13:00", "14:00", None),
    ],
)
def test_quiet_hours(now: dt.datetime, start: str, end: str, until: dt.datetime | None) -> None:
    assert quiet_until(now, dt.time.fromisoformat(start), dt.time.fromisoformat(end), SEOUL) == until


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [[backoff(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(200)] for attempt in range(1, 10)]
    for attempt, samples in enumerate(delays, start=1):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len({round(s, 6) for s in samples}) > 100, "jittered, not in lockstep"
    assert max(delays[-1]) <= 60.0


async def test_a_delivery_loop_stops_when_cancelled_even_as_work_wakes_it() -> None:
    """At shutdown a commit may wake the loop in the very step its task is cancelled: it must stop all the same
    (asyncio.wait_for on Python 3.11 lost that cancellation, and the service's shutdown hung)."""
    passes = 0

    async def run_once() -> int:
        nonlocal passes
        passes += 1
        return 0

    wake = asyncio.Event()
    # An interval far beyond the test: the loop runs once, then waits for work until woken.
    task = asyncio.create_task(_loop("test", run_once, wake, NotifySettings(worker_interval_seconds=3600)))
    async with asyncio.timeout(5):
        while passes == 0:
            await asyncio.sleep(0)
    # run_once did not await: the loop went from its pass straight to waiting for the wake.
    assert passes == 1
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done, "the loop kept running after it was cancelled"
    assert task.cancelled()


# ================================================================================================ webhooks


async def test_webhook_urls_must_be_http_and_point_at_permitted_addresses() -> None:
    policy = AddressPolicy.from_settings(DEFAULT_FORBIDDEN_NETWORKS, [])
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://10.0.0.8/hook",
        "http://172.20.1.1/",
        "http://192.168.1.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "ftp://93.184.216.34/",
        "javascript:alert(1)",
        "http:///no-host",
        "http://user:secret@93.184.216.34/",
        "http://no-such-host.invalid/",
    ):
        with pytest.raises(UnsafeUrl):
            await check_url(url, policy)
    await check_url("https://93.184.216.34/hooks", policy)  # a public address
    await check_url("http://[2606:4700::1111]/hooks", policy)
    allowed = AddressPolicy.from_settings(DEFAULT_FORBIDDEN_NETWORKS, ["127.0.0.1/32"])
    await check_url("http://127.0.0.1:9/hook", allowed)
    assert not allowed.permits(ipaddress.ip_address("127.0.0.2"))


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    secret, msg_id, timestamp, body = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    # The vector published with the specification's reference libraries.
    assert sign(secret, msg_id, timestamp, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = webhook_headers([secret, "whsec_" + "QUJD" * 8], msg_id, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert standard_webhook_signature_valid(secret, headers, body)
    assert standard_webhook_signature_valid("whsec_" + "QUJD" * 8, headers, body)
    assert not standard_webhook_signature_valid("whsec_" + "WFla" * 8, headers, body)


def test_every_template_is_compiled_at_start_up_so_a_missing_or_broken_one_stops_the_start(tmp_path: Path) -> None:
    """Notify compiles its templates when it starts, not at the first message of each kind (which held the event loop
    under load): a release missing one, or with one that does not compile, does not start."""
    import shutil

    import jinja2

    from services.notify.rendering import TEMPLATE_DIR

    # A directory each: a process compiles a directory's templates once (rendering._compiled), as a release starts.
    whole, broken, missing = (tmp_path / name for name in ("whole", "broken", "missing"))
    for templates in (whole, broken, missing):
        shutil.copytree(TEMPLATE_DIR, templates)
    Renderer("https://x", whole)  # whole: it starts
    (broken / "en" / f"{KINDS[-1]}.j2").write_text("{% block subject %}{{ unclosed {% endblock %}")
    with pytest.raises(jinja2.TemplateSyntaxError):
        Renderer("https://x", broken)
    (missing / "en" / f"{KINDS[-1]}.j2").unlink()
    with pytest.raises(jinja2.TemplateNotFound):
        Renderer("https://x", missing)


@pytest.mark.parametrize("language", ["ko", "en"])
def test_an_email_is_well_formed_mime_that_a_standard_parser_reads_back(language: str) -> None:
    """The e-mail is built with the light MIME classes (services/notify/channels.py), so it is read back here with
    the standard library's strict parser: the headers as sent (a Korean subject and sender name in encoded words,
    long ones folded), one line of subject whatever the template made, plain text then HTML as alternatives, each
    body as rendered."""
    renderer = Renderer("https://onestop.example.kr/")
    rendered = renderer.render(MessageInput("eligibility.determined", language, APP, ITEMS["eligibility.determined"]))
    long_subject = f"{rendered.subject} — " + ("아주 긴 제목 " if language == "ko" else "a very long subject ") * 12
    rendered = dataclasses.replace(rendered, subject=long_subject + "\nBcc: someone@example.kr")
    settings = NotifySettings(smtp_from="원스톱 알림 <no-reply@onestop.example.kr>")
    delivery = uuid.uuid4()
    built = build_email(settings, to="jiwoo.park@example.kr", rendered=rendered, delivery_id=delivery,
                        language=language)  # fmt: skip
    raw = built.data
    assert (built.sender, built.recipients) == ("no-reply@onestop.example.kr", ("jiwoo.park@example.kr",))
    assert raw.isascii(), "7-bit headers and bodies: any relay takes them"
    assert raw.count(f"--=_{delivery.hex}".encode()) == 3, "between, before and after the two parts"
    parsed = email.message_from_bytes(raw, policy=email.policy.strict)
    assert parsed.get_boundary() == f"=_{delivery.hex}"
    assert parsed["Subject"] == " ".join(f"{long_subject} Bcc: someone@example.kr".split()), "one line, nothing added"
    assert parsed["Bcc"] is None
    assert parsed["From"].addresses[0].display_name == "원스톱 알림"
    assert parsed["From"].addresses[0].addr_spec == "no-reply@onestop.example.kr"
    assert parsed["To"] == "jiwoo.park@example.kr"
    assert parsed["Message-ID"] == f"<{delivery}@onestop.example.kr>"
    assert parsed["Content-Language"] == language
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain.get_content() == rendered.text
    assert html.get_content() == rendered.html
    assert parsed.get_body(preferencelist=("plain",)) is plain
    assert [parsed.defects, plain.defects, html.defects] == [[], [], []]


def _compat32_email(
    settings: NotifySettings, *, to: str, rendered: RenderedMessage, delivery_id: uuid.UUID, language: str, date: str
) -> Message:
    """The e-mail as the standard library's compat32 MIME classes build it: the reference that build_email, which
    writes the bytes itself, must equal byte for byte."""
    message = MIMEMultipart("alternative", boundary=f"=_{delivery_id.hex}")
    message["From"] = email.utils.formataddr(email.utils.parseaddr(settings.smtp_from), charset="utf-8")
    message["To"] = to if to.isascii() else email.utils.formataddr(email.utils.parseaddr(to), charset="utf-8")
    subject = " ".join(rendered.subject.split())
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject")  # type: ignore[assignment]
    message["Date"] = date
    domain = email.utils.parseaddr(settings.smtp_from)[1].rpartition("@")[2] or "onestop.local"
    message["Message-ID"] = f"<{delivery_id}@{domain}>"
    message["Content-Language"] = language
    message["Auto-Submitted"] = "auto-generated"
    for body, subtype in ((rendered.text, "plain"), (rendered.html, "html")):
        part = MIMEText(body, subtype, "utf-8")
        del part["MIME-Version"]
        message.attach(part)
    return message


def _date_of(raw: bytes) -> str:
    [line] = [line for line in raw.decode("ascii").splitlines() if line.startswith("Date: ")]
    return line.removeprefix("Date: ")


_SUBJECTS = [
    "[원스톱] 신청이 접수되었습니다",
    "[OneStop] A decision on your application",
    "[OneStop] " + "a very long subject that has to be folded somewhere; with, punctuation " * 3,
    "[원스톱] " + "아주 긴 제목, 접혀야 합니다; " * 8,
    '[OneStop] Parent benefit <special> & co: "quoted" (and =?utf-8?q?not-a-word?=)',
    "[OneStop]   spaces\t and\nnew lines\r\nBcc: someone@example.kr",
    "x" * 120,
    "",
]
_SENDERS = [
    "OneStop <no-reply@onestop.local>",
    "원스톱 알림 <no-reply@onestop.example.kr>",
    "no-reply@onestop.example.kr",
    '"OneStop, the city\'s services" <no-reply@a-rather-long-subdomain.of-a-long-domain.onestop.example.kr>',
]
_RECIPIENTS = ["jiwoo.park@example.kr", "Ji-woo Park <jiwoo.park@example.kr>", "박지우 <jiwoo.park@example.kr>",
               " jiwoo.park@example.kr", "a" * 70 + "@example.kr"]  # fmt: skip


@pytest.mark.parametrize("language", ["ko", "en"])
def test_an_email_is_the_bytes_the_standard_mime_classes_write_for_it(language: str) -> None:
    """build_email writes the message itself (the MIME classes and their generator cost milliseconds a message): for
    Korean and English messages, long and short, ASCII and not, subjects, senders and recipients, its bytes are
    those the compat32 classes write, and its envelope is the one aiosmtplib takes from their headers."""
    renderer = Renderer("https://onestop.example.kr/")
    cases = 0
    for kind in ("eligibility.determined", "case.decided", "application.submitted"):
        rendered = renderer.render(MessageInput(kind, language, APP, ITEMS[kind]))
        bodies = [(rendered.text, rendered.html), ("", ""), ("한" * 19, "a" * 57), ("a" * 58 + "\n", "\r\n.\n")]
        # Each list's values, the others' first (a product would be a thousand messages, for little more).
        subject, sender, to, body = rendered.subject, _SENDERS[0], _RECIPIENTS[0], bodies[0]
        varied = (
            [(v, sender, to, body) for v in _SUBJECTS]
            + [(subject, v, to, body) for v in _SENDERS]
            + [(subject, sender, v, body) for v in _RECIPIENTS]
            + [(subject, sender, to, v) for v in bodies]
        )
        for subject, sender, to, (text, html) in varied:
            message = dataclasses.replace(rendered, subject=subject, text=text, html=html)
            settings = NotifySettings(smtp_from=sender)
            delivery = uuid.uuid4()
            built = build_email(settings, to=to, rendered=message, delivery_id=delivery, language=language)
            reference = _compat32_email(settings, to=to, rendered=message, delivery_id=delivery, language=language,
                                        date=_date_of(built.data))  # fmt: skip
            assert built.data == reference.as_bytes(), (subject, sender, to, text[:20])
            assert built.delivery_id == delivery
            assert built.sender == extract_sender(reference)
            assert list(built.recipients) == extract_recipients(reference)
            cases += 1
    assert cases == 3 * (len(_SUBJECTS) + len(_SENDERS) + len(_RECIPIENTS) + 4)


def test_a_header_that_would_smuggle_another_in_is_refused_as_the_mime_classes_refuse_it() -> None:
    renderer = Renderer("https://onestop.example.kr/")
    rendered = renderer.render(MessageInput("case.decided", "en", APP, ITEMS["case.decided"]))
    for to in ("a@example.kr\nBcc: b@example.kr", "a@example.kr\r\nBcc: b@example.kr"):
        with pytest.raises(HeaderParseError, match="embedded header"):
            build_email(NotifySettings(), to=to, rendered=rendered, delivery_id=uuid.uuid4(), language="en")


@pytest.mark.parametrize("kind", KINDS)
def test_a_text_message_rendered_alone_is_the_one_of_the_whole_message(kind: str) -> None:
    """An SMS delivery renders its text alone (Renderer.sms), not the subject, e-mail text and HTML it does not send."""
    renderer = Renderer("https://onestop.example.kr/")
    for language in ("ko", "en", "fr"):
        message = MessageInput(kind, language, APP, ITEMS[kind])
        assert renderer.sms(message) == renderer.render(message).sms
    with pytest.raises(ValueError, match="no template"):
        renderer.sms(MessageInput("no.such_kind", "ko", APP, []))


@pytest.mark.parametrize("kind", KINDS)
def test_an_email_and_a_text_rendered_alone_are_the_parts_of_the_whole_message(kind: str) -> None:
    """An e-mail renders its subject, text and HTML (Renderer.email), not the SMS; the inbox and a letter their subject,
    text and link (Renderer.text), not the HTML and SMS they do not show: each part the whole message's, byte for
    byte."""
    renderer = Renderer("https://onestop.example.kr/")
    for language in ("ko", "en", "fr"):
        message = MessageInput(kind, language, APP, ITEMS[kind])
        whole = renderer.render(message)
        assert renderer.email(message) == EmailContent(subject=whole.subject, text=whole.text, html=whole.html)
        assert renderer.text(message) == TextContent(subject=whole.subject, text=whole.text, link=whole.link)
    for parts in (renderer.email, renderer.text):
        with pytest.raises(ValueError, match="no template"):
            parts(MessageInput("no.such_kind", "ko", APP, []))


@pytest.mark.parametrize("language", ["ko", "en"])
async def test_an_email_through_a_real_smtp_server_arrives_with_its_headers_and_parts(
    smtp: MailServer, language: str
) -> None:
    """Sent to a real SMTP server (STARTTLS, AUTH), the e-mail is read there with the parts and decoded headers of
    the one the compat32 classes build, whose bytes aiosmtplib would have sent."""
    renderer = Renderer("https://onestop.example.kr/")
    rendered = renderer.render(MessageInput("eligibility.determined", language, APP, ITEMS["eligibility.determined"]))
    settings = NotifySettings(
        smtp_host=smtp.host, smtp_port=smtp.port, smtp_starttls=True, smtp_validate_certs=False,
        smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_from="원스톱 알림 <no-reply@onestop.example.kr>",
    )  # fmt: skip
    delivery = uuid.uuid4()
    built = build_email(settings, to="박지우 <jiwoo.park@example.kr>", rendered=rendered, delivery_id=delivery,
                        language=language)  # fmt: skip
    await SmtpEmail(settings).send(built)
    [received] = smtp.received
    reference = _compat32_email(settings, to="박지우 <jiwoo.park@example.kr>", rendered=rendered, delivery_id=delivery,
                                language=language, date=_date_of(built.data))  # fmt: skip
    expected = email.message_from_bytes(reference.as_bytes().replace(b"\n", b"\r\n"), policy=email.policy.default)
    assert [(k, str(v)) for k, v in received.items()] == [(k, str(v)) for k, v in expected.items()]
    assert received["Subject"] == rendered.subject
    assert received["From"].addresses[0].display_name == "원스톱 알림"
    assert received["To"].addresses[0].display_name == "박지우"
    assert received["Message-ID"] == f"<{delivery}@onestop.example.kr>"
    assert isinstance(received, EmailMessage)
    assert isinstance(expected, EmailMessage)
    got, want = list(received.iter_parts()), list(expected.iter_parts())
    assert [(p.items(), p.get_content()) for p in got] == [(p.items(), p.get_content()) for p in want]
    assert [p.get_content() for p in got] == [rendered.text, rendered.html]
    assert [received.defects, *(p.defects for p in got)] == [[], [], []]


async def test_the_local_mail_sink_makes_its_folders_when_they_are_missing(tmp_path: Path) -> None:
    """The embedded e-mail sink (no SMTP host) makes its maildir folders on the first message, and again when an
    operator emptied the mail directory meanwhile; a reader only ever sees whole messages in ``new/``."""
    renderer = Renderer("https://onestop.example.kr/")
    rendered = renderer.render(MessageInput("eligibility.determined", "ko", APP, ITEMS["eligibility.determined"]))
    sink = MaildirEmail(tmp_path / "mail")
    settings = NotifySettings()
    first, second = uuid.uuid4(), uuid.uuid4()
    await sink.send(build_email(settings, to="a@example.kr", rendered=rendered, delivery_id=first, language="ko"))
    shutil.rmtree(tmp_path / "mail")
    await sink.send(build_email(settings, to="a@example.kr", rendered=rendered, delivery_id=second, language="ko"))
    assert sorted(p.name for p in (tmp_path / "mail" / "new").iterdir()) == [f"{second}.eml"]
    assert list((tmp_path / "mail" / "tmp").iterdir()) == []
    parsed = email.message_from_bytes(
        (tmp_path / "mail" / "new" / f"{second}.eml").read_bytes(), policy=email.policy.strict
    )
    assert parsed["Subject"] == rendered.subject


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor, counting the hops made to its threads."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.hops = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.hops += 1
        return super().submit(fn, *args, **kwargs)


async def test_the_local_mail_sink_writes_the_messages_of_a_batch_in_one_hop_each_send_answering_for_its_own(
    tmp_path: Path,
) -> None:
    """Messages handed to the embedded e-mail sink together (a delivery worker's batch) are written in one hop to a
    thread, not one each; each send returns once its own message is in ``new/``, and a message that cannot be
    written fails its own send only."""
    renderer = Renderer("https://onestop.example.kr/")
    rendered = renderer.render(MessageInput("case.decided", "ko", APP, ITEMS["case.decided"]))
    settings = NotifySettings()
    sink = MaildirEmail(tmp_path / "mail")
    executor = _CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    ids = [uuid.uuid4() for _ in range(5)]
    messages = [build_email(settings, to="a@example.kr", rendered=rendered, delivery_id=i, language="ko") for i in ids]

    async def send(message: Email) -> set[str]:
        await sink.send(message)
        return {p.name for p in (tmp_path / "mail" / "new").iterdir()}

    seen = await asyncio.gather(*(send(m) for m in messages))
    assert executor.hops == 1, "one hop for the five"
    for delivery, there in zip(ids, seen, strict=True):
        assert f"{delivery}.eml" in there, "a send returns once its message is written"
    assert sorted(p.name for p in (tmp_path / "mail" / "new").iterdir()) == sorted(f"{i}.eml" for i in ids)
    assert list((tmp_path / "mail" / "tmp").iterdir()) == []

    # A message whose file cannot be made (its name taken by a directory) fails alone; the others are written.
    taken, fine = uuid.uuid4(), uuid.uuid4()
    (tmp_path / "mail" / "new" / f"{taken}.eml").mkdir()
    outcomes = await asyncio.gather(
        *(
            sink.send(build_email(settings, to="a@example.kr", rendered=rendered, delivery_id=i, language="ko"))
            for i in (taken, fine)
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], OSError)
    assert outcomes[1] is None
    assert (tmp_path / "mail" / "new" / f"{fine}.eml").is_file()
    assert executor.hops == 2


CATALOGUE = Path(__file__).resolve().parents[3] / "services" / "eligibility" / "catalogue"


def test_departments_and_life_events_are_named_in_korean_as_the_catalogue_names_them() -> None:
    """A message names a department or a life event as the portal and the catalogue do (the English reads within a
    sentence: "about the birth of a child")."""
    departments = yaml.safe_load((CATALOGUE / "departments.yaml").read_text(encoding="utf-8"))["departments"]
    life_events = yaml.safe_load((CATALOGUE / "life_events.yaml").read_text(encoding="utf-8"))["life_events"]
    assert {code: names["ko"] for code, names in DEPARTMENTS.items()} == {
        code: entry["name"]["ko"] for code, entry in departments.items()
    }
    assert {code: names["en"] for code, names in DEPARTMENTS.items()} == {
        code: entry["name"]["en"].lower() for code, entry in departments.items()
    }
    assert {code: names["ko"] for code, names in LIFE_EVENTS.items()} == {
        code: entry["name"]["ko"] for code, entry in life_events.items()
    }
