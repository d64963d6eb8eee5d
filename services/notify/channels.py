"""The push channels: email over SMTP and SMS through an HTTP gateway, each with a local sink as embedded default.

SMS gateway contract (what ``sms_gateway_url`` must accept)::

    POST <sms_gateway_url>
    Authorization: Bearer <sms_api_key>
    Idempotency-Key: <delivery id>            (the same on every retry of one message: the gateway de-duplicates)
    Content-Type: application/json

    {"id": "<delivery id>", "to": "<phone number as intake holds it>", "text": "<message>",
     "sender": "<sms_sender>", "language": "ko" | "en"}

    2xx                        accepted (the body is ignored)
    408, 425, 429, 5xx, no answer  temporary: retried with backoff
    any other 4xx              permanent (for example an invalid number): not retried

Embedded default (no SMTP host, no gateway URL): emails are written as ``<data_dir>/mail/new/<delivery id>.eml``
(maildir style: written to ``tmp/`` then renamed, so a reader never sees half a file) and text messages are appended
to ``<data_dir>/sms.jsonl``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.policy
import email.utils
import functools
import os
import re
import uuid
from dataclasses import dataclass
from email.header import Header
from pathlib import Path
from typing import Protocol

import aiosmtplib
import httpx
import orjson

from services.notify.rendering import EmailContent, RenderedMessage
from services.notify.settings import NotifySettings


class ChannelError(Exception):
    """A send that did not happen. ``permanent``: retrying the same message cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Email:
    """An e-mail ready to go: its envelope, and the message as it is written (LF line ends; SMTP sends them as
    CRLF)."""

    delivery_id: uuid.UUID
    sender: str
    recipients: tuple[str, ...]
    data: bytes


class EmailSender(Protocol):
    async def send(self, message: Email) -> None: ...


class SmsSender(Protocol):
    async def send(self, *, delivery_id: uuid.UUID, to: str, text: str, language: str) -> None: ...


def build_email(
    settings: NotifySettings,
    *,
    to: str,
    rendered: EmailContent | RenderedMessage,
    delivery_id: uuid.UUID,
    language: str,
) -> Email:
    """A multipart/alternative message (plain text, then HTML), UTF-8 in base64, the subject in RFC 2047 encoded
    words: the bytes the ``compat32`` MIME classes (``MIMEMultipart``, ``MIMEText``) write for it, made directly.

    Built through those classes and written by their generator, a message cost a few milliseconds of CPU, most of
    it folding headers that are the same in every message (the sender, a kind's subject, the part headers) or too
    short to fold. A header is folded by the standard library's ``compat32`` policy (once per distinct value, for
    the sender and subjects) unless it is printable ASCII short enough to need no folding, when it is written as
    it is, as that policy would; the tests hold the result to the classes' bytes. The subject is made one line and,
    like an address's display name, encoded when it is not ASCII; a value that would smuggle a header in is folded
    into the one header by the policy."""
    sender = _sender(settings.smtp_from)
    to_value = to if to.isascii() else _mailbox(to)
    subject = " ".join(rendered.subject.split())  # one line, whatever the template made of it
    # The boundary given, not drawn per message: no line of the parts can be this one, their bodies are base64
    # (no "-" or "_" in it) and their headers do not start with "--".
    boundary = f"=_{delivery_id.hex}".encode("ascii")
    # The same Message-ID on every retry lets a receiving system drop a copy it already has.
    message_id = f"<{delivery_id}@{sender.domain}>"
    data = b"".join(
        (
            b'Content-Type: multipart/alternative;\n boundary="',  # as the policy folds it: 82 characters
            boundary,
            b'"\nMIME-Version: 1.0\n',
            sender.header,
            _field("To", to_value),
            _subject(subject),
            _field("Date", email.utils.format_datetime(dt.datetime.now(dt.UTC))),
            _field("Message-ID", message_id),
            _field("Content-Language", language),
            b"Auto-Submitted: auto-generated\n",  # RFC 3834: auto-responders should not answer
            b"\n--",
            boundary,
            b'\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: base64\n\n',
            base64.encodebytes(rendered.text.encode("utf-8")),  # lines of 76, as email.base64mime writes them
            b"\n--",
            boundary,
            b'\nContent-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: base64\n\n',
            base64.encodebytes(rendered.html.encode("utf-8")),
            b"\n--",
            boundary,
            b"--\n",
        )
    )
    recipients = tuple(address for _, address in email.utils.getaddresses([to_value]))
    return Email(delivery_id=delivery_id, sender=sender.address, recipients=recipients, data=data)


# Printable ASCII words with single spaces between them: a header value the compat32 policy writes as it is when
# its line is short enough, and the only one written here without it.
_AS_IT_IS = re.compile(r"[!-~]+(?: [!-~]+)*")


def _field(name: str, value: str) -> bytes:
    """A header line as the compat32 policy writes it (folded at 78 characters, encoded words when not ASCII)."""
    if len(name) + 2 + len(value) <= 78 and _AS_IT_IS.fullmatch(value):
        return f"{name}: {value}\n".encode("ascii")
    return email.policy.compat32.fold_binary(name, value)


@functools.lru_cache(maxsize=256)
def _subject(subject: str) -> bytes:
    """The Subject line, once per subject: a kind's subject is the same in every message of it and language."""
    if subject.isascii():
        return _field("Subject", subject)
    # A Header folds its encoded words itself (typeshed types fold_binary's value as str alone).
    return email.policy.compat32.fold_binary("Subject", Header(subject, "utf-8", header_name="Subject"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Sender:
    header: bytes  # the From line
    address: str  # the envelope's sender
    domain: str  # the Message-IDs'


@functools.cache
def _sender(smtp_from: str) -> _Sender:
    value = _mailbox(smtp_from)
    address = email.utils.getaddresses([value])[0][1]
    domain = email.utils.parseaddr(smtp_from)[1].rpartition("@")[2] or "onestop.local"
    return _Sender(_field("From", value), address, domain)


def _mailbox(value: str) -> str:
    """An address header's value: a display name that is not ASCII in encoded words, the address as it is."""
    name, address = email.utils.parseaddr(value)
    if not address:
        raise ValueError("not an e-mail address")
    return email.utils.formataddr((name, address), charset="utf-8")


class SmtpEmail:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    async def send(self, message: Email) -> None:
        s = self.settings
        envelope = [message.sender, *message.recipients]
        try:
            await aiosmtplib.send(
                message.data,
                sender=message.sender,
                recipients=list(message.recipients),
                # As aiosmtplib asks for it when it takes the addresses from a message's headers.
                mail_options=[] if all(a.isascii() for a in envelope) else ["SMTPUTF8"],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_implicit_tls,
                start_tls=s.smtp_starttls if not s.smtp_implicit_tls else False,
                validate_certs=s.smtp_validate_certs,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise ChannelError(f"recipient refused ({codes})", permanent=all(500 <= c < 600 for c in codes)) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is a permanent refusal of this message (RFC 5321); 4xx asks us to try later. An authentication
            # failure is the operator's to fix, so it is retried rather than killing every message meanwhile.
            permanent = 500 <= exc.code < 600 and exc.code not in (530, 535)
            raise ChannelError(f"SMTP {exc.code}: {exc.message[:200]}", permanent=permanent) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelError(f"SMTP unavailable: {type(exc).__name__}") from None


class MaildirEmail:
    """Writes each message as a .eml file a person can open.

    The messages handed over in one turn of the event loop (a worker's batch sends several at once) are written in one
    hop to a thread, not a hop each: each hop is a wake-up of a thread and of the loop. Each send still returns only
    once its own message is in ``new/``, or raises what writing that one raised."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._queued: list[tuple[Email, asyncio.Future[None]]] = []

    async def send(self, message: Email) -> None:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._queued.append((message, written))
        if len(self._queued) == 1:
            loop.call_soon(self._write_queued)  # after the sends already due in this turn have queued theirs
        await written

    def _write_queued(self) -> None:
        queued, self._queued = self._queued, []
        hop = asyncio.get_running_loop().run_in_executor(None, self._write_all, [m for m, _ in queued])

        def settle(hop: asyncio.Future[list[Exception | None]]) -> None:
            if hop.cancelled():
                errors: list[BaseException | None] = [asyncio.CancelledError()] * len(queued)
            elif (failure := hop.exception()) is not None:
                errors = [failure] * len(queued)
            else:
                errors = list(hop.result())
            for (_, written), error in zip(queued, errors, strict=True):
                if written.done():  # its sender was cancelled
                    continue
                if error is None:
                    written.set_result(None)
                elif isinstance(error, asyncio.CancelledError):
                    written.cancel()
                else:
                    written.set_exception(error)

        hop.add_done_callback(settle)

    def _write_all(self, messages: list[Email]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self._write(message)
            except Exception as error:
                errors.append(error)
            else:
                errors.append(None)
        return errors

    def _write(self, message: Email) -> None:
        tmp, new = self.directory / "tmp", self.directory / "new"
        name = str(message.delivery_id)
        path = tmp / f"{name}.eml"
        raw = message.data
        try:
            path.write_bytes(raw)
            os.replace(path, new / f"{name}.eml")
        except FileNotFoundError:  # the folders are made when missing, not checked before every message
            tmp.mkdir(parents=True, exist_ok=True)
            new.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            os.replace(path, new / f"{name}.eml")


class HttpSms:
    def __init__(self, client: httpx.AsyncClient, settings: NotifySettings) -> None:
        assert settings.sms_gateway_url
        self.client = client
        self.url = settings.sms_gateway_url
        self.api_key = settings.sms_api_key.get_secret_value() if settings.sms_api_key else None
        self.sender = settings.sms_sender
        self.timeout = settings.sms_timeout_seconds

    async def send(self, *, delivery_id: uuid.UUID, to: str, text: str, language: str) -> None:
        headers = {"Idempotency-Key": str(delivery_id), "Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"id": str(delivery_id), "to": to, "text": text, "sender": self.sender, "language": language}
        try:
            response = await self.client.post(
                self.url, content=orjson.dumps(body), headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise ChannelError(f"SMS gateway unreachable: {type(exc).__name__}") from None
        if response.is_success:
            return
        status = response.status_code
        temporary = status in (408, 425, 429) or status >= 500
        raise ChannelError(f"SMS gateway answered {status}", permanent=not temporary)


class JsonlSms:
    """Appends each text message as one JSON line a person can read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def send(self, *, delivery_id: uuid.UUID, to: str, text: str, language: str) -> None:
        line = orjson.dumps(
            {
                "id": str(delivery_id),
                "to": to,
                "text": text,
                "language": language,
                "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(line + b"\n")


def email_sender(settings: NotifySettings) -> EmailSender:
    return SmtpEmail(settings) if settings.smtp_host else MaildirEmail(settings.data_dir / "mail")


def sms_sender(settings: NotifySettings, client: httpx.AsyncClient) -> SmsSender:
    return HttpSms(client, settings) if settings.sms_gateway_url else JsonlSms(settings.data_dir / "sms.jsonl")
