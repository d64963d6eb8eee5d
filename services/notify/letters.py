"""Letters: the ``post`` channel, for residents without a digital channel (chosen at intake, usually at a counter).

Each notice becomes one print-ready A4 letter (PDF, fpdf2, composed in a child process: ``letter_pdf``) under
``<data_dir>/post/<delivery id>.pdf``: the resident's name and address where a window envelope shows them, the date,
the notice's title and text in the resident's language. Korean needs a font that has Hangul: Debian's
``fonts-nanum`` (NanumGothic), installed by ``make run``/``make test`` (scripts/ensure-fonts.sh) and in the image;
``letter_font`` points elsewhere. Without the font a letter waits (a temporary failure)
rather than going out unreadable.

The letter is the delivery: once written it is "sent" (handed to the post room) and listed for the office
(``GET /v1/letters``), which prints and posts it and marks it sent. Nothing else about the resident is printed — no
contact details, no ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.notify.channels import ChannelError
from services.notify.models import Letter, LetterStatus, audit_log, utcnow
from services.notify.rendering import RenderedMessage, TextContent
from services.notify.repository import Repository
from services.notify.settings import NotifySettings
from shared.auth import Principal
from shared.problems import Conflict, NotFound

PURPOSE_LETTER_PRINTING = "letter printing"
# The repository's root: the child process imports services.notify.letter_pdf from it.
ROOT = Path(__file__).resolve().parents[2]
PRINT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Recipient:
    # Kept out of repr so that a stray log line or traceback never carries them.
    name: str = field(repr=False)
    address: str = field(repr=False)


@dataclass(frozen=True)
class PrintedLetter:
    file_name: str
    pages: int


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
        self,
        *,
        delivery_id: uuid.UUID,
        recipient: Recipient,
        rendered: TextContent | RenderedMessage,
        language: str,
        day: dt.date,
    ) -> PrintedLetter:
        """Write the letter (to a temporary name, then renamed: the post room never sees half a file)."""
        if not self.font.is_file():
            raise ChannelError(f"letter font not installed ({self.font.name}); see scripts/ensure-fonts.sh")
        order = {
            "directory": str(self.directory),
            "font": str(self.font),
            "bold_font": str(self.bold_font) if self.bold_font is not None and self.bold_font.is_file() else None,
            "delivery_id": str(delivery_id),
            "name": recipient.name,
            "address": recipient.address,
            "subject": rendered.subject,
            "text": rendered.text,
            "language": language,
            "day": day.isoformat(),
        }
        # In a child process that ends with the letter: fpdf2 and a Hangul font stay out of notify (letter_pdf).
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.notify.letter_pdf",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(child.communicate(json.dumps(order).encode()), PRINT_TIMEOUT_SECONDS)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise ChannelError(f"the letter took longer than {PRINT_TIMEOUT_SECONDS:.0f} s to print") from None
        except asyncio.CancelledError:
            # notify is stopping: the child goes with the letter, its pipes closed while the loop still runs (left
            # to the garbage collector, they were closed on a loop already closed).
            if child.returncode is None:
                child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            # The last line names the error; the traceback's other lines may quote the letter's text.
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ChannelError(f"printing the letter failed: {last[0][:200]}")
        printed = json.loads(out)
        return PrintedLetter(file_name=str(printed["file_name"]), pages=int(printed["pages"]))


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
