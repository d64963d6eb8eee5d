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
import datetime as dt
import email.utils
import functools
import os
import uuid
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Protocol

import aiosmtplib
import httpx
import orjson

from services.notify.rendering import RenderedMessage
from services.notify.settings import NotifySettings


class ChannelError(Exception):
    """A send that did not happen. ``permanent``: retrying the same message cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EmailSender(Protocol):
    async def send(self, message: Message) -> None: ...


class SmsSender(Protocol):
    async def send(self, *, delivery_id: uuid.UUID, to: str, text: str, language: str) -> None: ...


def build_email(
    settings: NotifySettings, *, to: str, rendered: RenderedMessage, delivery_id: uuid.UUID, language: str
) -> Message:
    """A multipart/alternative message (plain text, then HTML), UTF-8, the subject in RFC 2047 encoded words.

    Built with the ``compat32`` MIME classes, not ``EmailMessage``: the latter parses every header it is given
    through the header registry and re-folds it when written, three times the CPU for the same message, which under
    load was a tenth of the service's. These classes refuse a value that would smuggle a header in; the subject is
    made one line and, like an address's display name, encoded when it is not ASCII."""
    # The boundary given, not left to the generator, which draws one and compiles a regular expression of it to
    # search the parts for it (a compile per message, most of its writing). No line of the parts can be this one:
    # their bodies are base64 (no "-" or "_" in it), their headers do not start with "--".
    message = MIMEMultipart("alternative", boundary=f"=_{delivery_id.hex}")
    message["From"] = _sender(settings.smtp_from)
    message["To"] = to if to.isascii() else _mailbox(to)
    subject = " ".join(rendered.subject.split())  # one line, whatever the template made of it
    # A Header folds its encoded words itself (typeshed types these classes' header values as str alone).
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8", header_name="Subject")  # type: ignore[assignment]
    message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    # The same Message-ID on every retry lets a receiving system drop a copy it already has.
    domain = email.utils.parseaddr(settings.smtp_from)[1].rpartition("@")[2] or "onestop.local"
    message["Message-ID"] = f"<{delivery_id}@{domain}>"
    message["Content-Language"] = language
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders should not answer
    for body, subtype in ((rendered.text, "plain"), (rendered.html, "html")):
        part = MIMEText(body, subtype, "utf-8")
        del part["MIME-Version"]  # once, at the top
        message.attach(part)
    return message


@functools.cache
def _sender(smtp_from: str) -> str:
    return _mailbox(smtp_from)


def _mailbox(value: str) -> str:
    """An address header's value: a display name that is not ASCII in encoded words, the address as it is."""
    name, address = email.utils.parseaddr(value)
    if not address:
        raise ValueError("not an e-mail address")
    return email.utils.formataddr((name, address), charset="utf-8")


class SmtpEmail:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    async def send(self, message: Message) -> None:
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
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
        self._queued: list[tuple[Message, asyncio.Future[None]]] = []

    async def send(self, message: Message) -> None:
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

    def _write_all(self, messages: list[Message]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self._write(message)
            except Exception as error:
                errors.append(error)
            else:
                errors.append(None)
        return errors

    def _write(self, message: Message) -> None:
        tmp, new = self.directory / "tmp", self.directory / "new"
        name = str(message["Message-ID"]).strip("<>").partition("@")[0] or uuid.uuid4().hex
        path = tmp / f"{name}.eml"
        raw = message.as_bytes()
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
