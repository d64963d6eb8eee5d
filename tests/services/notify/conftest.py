"""Fixtures of the notify tests: a stand-in for intake's contact endpoint, a real SMTP server (aiosmtpd, STARTTLS and
AUTH), real HTTP servers as the SMS gateway and the partner's webhook endpoint, and the notify service itself."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Header, Request, Response

from onestop.runner import free_port
from shared.auth import Role, TokenIssuer, TokenVerifier
from shared.bus import MSG_ID_HEADER, Bus
from shared.events import CloudEvent, EventData, new_event, subject_for
from shared.problems import Unauthorized
from shared.settings import ServiceSettings
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service

SMTP_USER = "notify"
SMTP_PASSWORD = "smtp-test-password"
SMS_API_KEY = "sms-test-key"

# ================================================================================================ intake stand-in


@dataclass
class IntakeStandIn:
    """What intake's ``GET /v1/residents/{id}/contact`` knows; ``down`` makes it answer 503."""

    contacts: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    calls: int = 0

    def add(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        language: str = "ko",
        channels: tuple[str, ...] = ("inbox", "email", "sms"),
    ) -> uuid.UUID:
        resident_id = uuid.uuid4()
        self.contacts[resident_id] = {
            "resident_id": str(resident_id),
            "email": email,
            "phone": phone,
            "preferred_language": language,
            "preferred_channels": list(channels),
        }
        return resident_id


def intake_stand_in_app(state: IntakeStandIn, verifier: TokenVerifier) -> FastAPI:
    """Exactly the contract notify uses: the contact endpoint, for the notify service's token only."""
    app = FastAPI()

    @app.get("/v1/residents/{resident_id}/contact")
    async def contact(resident_id: uuid.UUID, authorization: str = Header(default="")) -> Response:
        state.calls += 1
        scheme, _, token = authorization.partition(" ")
        try:
            principal = await verifier.verify(token) if scheme.lower() == "bearer" else None
        except Unauthorized:
            principal = None
        if principal is None:
            return Response(status_code=401)
        if principal.role is not Role.SERVICE or principal.service != "notify":
            return Response(status_code=403)
        if state.down:
            return Response(status_code=503)
        found = state.contacts.get(resident_id)
        if found is None:
            return Response(status_code=404)
        import orjson

        return Response(orjson.dumps(found), media_type="application/json")

    return app


@pytest.fixture
def intake() -> IntakeStandIn:
    return IntakeStandIn()


@pytest.fixture
async def intake_url(intake: IntakeStandIn, keys_dir: Path) -> AsyncIterator[str]:
    """Where notify finds intake. A stand-in serving only the contact endpoint, over real HTTP."""
    verifier = TokenVerifier(
        issuer="onestop-embedded",
        audience="onestop",
        algorithms=["EdDSA"],
        public_key_pem=(keys_dir / "issuer.pub.pem").read_bytes(),
    )
    async with serve(intake_stand_in_app(intake, verifier)) as url:
        yield url


# ================================================================================================ SMTP


@dataclass
class MailServer:
    host: str
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"] == address]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            # As real servers do, the refusal quotes the address (which notify must not keep or publish).
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 Message accepted"


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    """A real SMTP server that requires STARTTLS and AUTH, as a mail relay would."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns about its own deprecated internals
    mail = MailServer("127.0.0.1", free_port())

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            mail.logins.append(mechanism)
        return AuthResult(success=ok)

    controller = Controller(
        mail,
        hostname=mail.host,
        port=mail.port,
        tls_context=_self_signed(tmp_path),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    yield mail
    controller.stop()


# ================================================================================================ HTTP endpoints


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Endpoint:
    """A partner's webhook endpoint or the SMS gateway: records every request; ``fail_next`` requests get
    ``fail_status``, and ``down`` makes every request fail."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    down: bool = False

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status < 300]


def endpoint_app(state: Endpoint) -> FastAPI:
    app = FastAPI()

    @app.post("/{path:path}")
    async def receive(path: str, request: Request) -> Response:
        body = await request.body()
        status = 200
        if state.down:
            status = state.fail_status
        elif state.fail_next > 0:
            state.fail_next -= 1
            status = state.fail_status
        state.requests.append(Received(path, dict(request.headers), body, status))
        return Response(status_code=status)

    return app


@contextlib.asynccontextmanager
async def served_endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()
    async with serve(endpoint_app(state)) as url:
        state.url = url
        yield state


@pytest.fixture
async def sms_gateway() -> AsyncIterator[Endpoint]:
    async with served_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
async def partner_endpoint() -> AsyncIterator[Endpoint]:
    async with served_endpoint() as endpoint:
        yield endpoint


# ================================================================================================ the service


@pytest.fixture
def notify_settings(
    intake_url: str, smtp: MailServer, sms_gateway: Endpoint, tmp_path: Path, issuer: TokenIssuer
) -> dict[str, Any]:
    """Settings for tests: real SMTP and SMS gateway, short timers, 127.0.0.1 allowed for webhooks."""
    return {
        "intake_url": intake_url,
        "service_token": issuer.mint(Role.SERVICE, service="notify"),
        "app_base_url": "https://onestop.example.kr",
        "data_dir": tmp_path / "notify-data",
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_starttls": True,
        "smtp_validate_certs": False,
        "smtp_username": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "smtp_from": "OneStop <no-reply@onestop.example.kr>",
        "sms_gateway_url": f"{sms_gateway.url}/v1/messages",
        "sms_api_key": SMS_API_KEY,
        "contact_cache_seconds": 0,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "delivery_max_attempts": 4,
        "bundle_window_seconds": 0.4,
        "worker_interval_seconds": 0.05,
        "webhook_retry_base_seconds": 0.05,
        "webhook_retry_max_seconds": 0.2,
        "webhook_max_attempts": 5,
        "webhook_allowed_networks": ["127.0.0.1/32"],
        "consumer_batch_size": 20,
    }


@contextlib.asynccontextmanager
async def start_notify(
    *,
    database_url: str,
    nats_url: str,
    prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    settings: dict[str, Any],
) -> AsyncIterator[RunningService]:
    async with running_service(
        "notify",
        database_url=database_url,
        nats_url=nats_url,
        prefix=prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        **settings,
    ) as service:
        yield service


@pytest.fixture
async def notify(
    database_url: str,
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    notify_settings: dict[str, Any],
) -> AsyncIterator[RunningService]:
    async with start_notify(
        database_url=database_url,
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        settings=notify_settings,
    ) as service:
        yield service


# ================================================================================================ the other services


class Producer:
    """Publishes events as the other services would (their outbox relays publish with Nats-Msg-Id = event id)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def publish(self, data: EventData, *, source: str = "/onestop/test") -> CloudEvent:
        event = new_event(data, source=source)
        await self.bus.publish_event(event)
        return event

    async def republish(self, event: CloudEvent) -> None:
        """The same event again under another message id: a redelivery JetStream cannot de-duplicate."""
        await self.bus.js.publish(
            subject_for(self.bus.prefix, event.event_type),
            event.to_json(),
            headers={MSG_ID_HEADER: f"{event.id}-again-{uuid.uuid4().hex[:6]}"},
        )


@pytest.fixture
async def producer(nats_server: NatsServer, bus_prefix: str) -> AsyncIterator[Producer]:
    bus = Bus(ServiceSettings(nats_url=nats_server.url, bus_prefix=bus_prefix), name="test-producer")
    await bus.connect(attempts=20)
    try:
        yield Producer(bus)
    finally:
        await bus.close()


async def eventually(predicate: Any, *, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll a predicate (sync or async) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
