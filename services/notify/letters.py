"""Letters: the ``post`` channel, for residents without a digital channel (chosen at intake, usually at a counter).

Each notice becomes one print-ready A4 letter (PDF, fpdf2) under ``<data_dir>/post/<delivery id>.pdf``: the
resident's name and address where a window envelope shows them, the date, the notice's title and text in the
resident's language. Korean needs a font that has Hangul: Debian's ``fonts-nanum`` (NanumGothic), installed by
``make run``/``make test`` (scripts/ensure-fonts.sh) and in the image; ``letter_font`` points elsewhere. Without the
font a letter waits (a temporary failure) rather than going out unreadable.

The letter is the delivery: once written it is "sent" (handed to the post room) and listed for the office
(``GET /v1/letters``), which prints and posts it and marks it sent. Nothing else about the resident is printed — no
contact details, no ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF

from services.notify.channels import ChannelError
from services.notify.models import Letter, LetterStatus, audit_log, utcnow
from services.notify.rendering import RenderedMessage
from services.notify.repository import Repository
from services.notify.settings import NotifySettings
from shared.auth import Principal
from shared.problems import Conflict, NotFound

PURPOSE_LETTER_PRINTING = "letter printing"

# fontTools tells, for every letter, which tables of the font it leaves out of the subset: noise, not news.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)

SENDER = {"ko": "원스톱 행정서비스 (OneStop)", "en": "OneStop public services"}
SALUTATION = {"ko": "{name} 귀하", "en": "{name}"}
FOOTER = {
    "ko": "이 안내문은 디지털 알림 대신 우편으로 보내 드립니다. 문의는 가까운 주민센터 창구로 해 주십시오.",
    "en": "This notice is sent by post instead of a digital message. For questions, visit your community centre.",
}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip


@dataclass(frozen=True)
class Recipient:
    # Kept out of repr so that a stray log line or traceback never carries them.
    name: str = field(repr=False)
    address: str = field(repr=False)


@dataclass(frozen=True)
class PrintedLetter:
    file_name: str
    pages: int


def _dated(day: dt.date, language: str) -> str:
    if language == "ko":
        return f"{day.year}년 {day.month}월 {day.day}일"
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


class LetterPrinter:
    def __init__(self, directory: Path, font: Path, bold_font: Path | None = None) -> None:
        self.directory = directory
        self.font = font
        self.bold_font = bold_font

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> LetterPrinter:
        return cls(settings.data_dir / "post", settings.letter_font, settings.letter_bold_font)

    def path(self, file_name: str) -> Path:
        return self.directory / file_name

    async def print(
        self, *, delivery_id: uuid.UUID, recipient: Recipient, rendered: RenderedMessage, language: str, day: dt.date
    ) -> PrintedLetter:
        """Write the letter (to a temporary name, then renamed: the post room never sees half a file)."""
        if not self.font.is_file():
            raise ChannelError(f"letter font not installed ({self.font.name}); see scripts/ensure-fonts.sh")
        return await asyncio.to_thread(self._write, delivery_id, recipient, rendered, language, day)

    def _write(
        self, delivery_id: uuid.UUID, recipient: Recipient, rendered: RenderedMessage, language: str, day: dt.date
    ) -> PrintedLetter:
        pdf = self._compose(recipient, rendered, language, day)
        self.directory.mkdir(parents=True, exist_ok=True)
        file_name = f"{delivery_id}.pdf"
        tmp = self.directory / f".{file_name}.tmp"
        tmp.write_bytes(bytes(pdf.output()))
        os.replace(tmp, self.directory / file_name)
        return PrintedLetter(file_name=file_name, pages=pdf.page_no())

    def _compose(self, recipient: Recipient, rendered: RenderedMessage, language: str, day: dt.date) -> FPDF:
        lang = language if language in SENDER else "ko"
        pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        pdf.set_creator("OneStop notify")
        pdf.set_title(rendered.subject)  # the notice's title: no name, no address
        pdf.set_lang("ko-KR" if lang == "ko" else "en")
        pdf.add_font("letter", fname=str(self.font))
        bold = self.bold_font if self.bold_font is not None and self.bold_font.is_file() else self.font
        pdf.add_font("letter", style="B", fname=str(bold))
        pdf.set_margins(left=25, top=20, right=20)
        pdf.set_auto_page_break(auto=True, margin=25)
        pdf.add_page()

        pdf.set_font("letter", size=9)
        pdf.cell(0, 5, SENDER[lang], new_x="LMARGIN", new_y="NEXT")
        # The address block where a DL window envelope (and Korea Post's 규격봉투) shows it.
        pdf.set_xy(25, 50)
        pdf.set_font("letter", "B", 12)
        pdf.multi_cell(90, 6, SALUTATION[lang].format(name=recipient.name), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("letter", size=11)
        pdf.set_x(25)
        pdf.multi_cell(90, 6, recipient.address, align="L", new_x="LMARGIN", new_y="NEXT")

        pdf.set_xy(25, 95)
        pdf.set_font("letter", size=10)
        pdf.cell(0, 6, _dated(day, lang), align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font("letter", "B", 14)
        pdf.multi_cell(0, 8, rendered.subject, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font("letter", size=11)
        pdf.multi_cell(0, 6.5, rendered.text.strip(), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
        pdf.set_font("letter", size=8.5)
        pdf.multi_cell(0, 5, FOOTER[lang], align="L", new_x="LMARGIN", new_y="NEXT")
        return pdf


# ---------------------------------------------------------------------------------------------- the post room


class LetterAlreadySent(Conflict):
    slug = "letter-already-sent"


async def _letter(repo: Repository, letter_id: uuid.UUID, *, for_update: bool = False) -> Letter:
    letter = await repo.letter(letter_id, for_update=for_update)
    if letter is None:
        raise NotFound(f"No letter {letter_id}.")
    return letter


async def pdf(repo: Repository, printer: LetterPrinter, principal: Principal, letter_id: uuid.UUID) -> bytes:
    """The letter to print. It carries the resident's name and address: the read is in the audit log."""
    letter = await _letter(repo, letter_id)
    try:
        content = await asyncio.to_thread(printer.path(letter.file_name).read_bytes)
    except FileNotFoundError:
        raise NotFound(f"The file of letter {letter_id} is gone from the post room.") from None
    await audit_log.record(
        repo.session,
        principal,
        action="read",
        record_type="letter",
        record_id=letter.id,
        purpose=PURPOSE_LETTER_PRINTING,
        resident_id=letter.resident_id,
    )
    return content


async def mark_sent(repo: Repository, principal: Principal, letter_id: uuid.UUID) -> Letter:
    """The office printed and posted it: off the list of letters to send."""
    letter = await _letter(repo, letter_id, for_update=True)
    if letter.status == LetterStatus.SENT.value:
        raise LetterAlreadySent(f"The letter was marked sent at {letter.sent_at:%Y-%m-%d %H:%M} UTC.")
    letter.status = LetterStatus.SENT.value
    letter.sent_at = utcnow()
    letter.sent_by = principal.subject[:255]
    return letter
