"""Fixtures of the notify tests: the real intake service (where notify asks for residents' contact details), a real
SMTP server (aiosmtpd, STARTTLS and AUTH), real HTTP servers as the SMS gateway and the partner's webhook endpoint, and
the notify service itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import email
import email.policy
import functools
import ipaddress
import logging
import shutil
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from sqlalchemy import func, select, update

from onestop.registry import BY_NAME
from onestop.runner import free_port
from services.intake.main import create_app as create_intake_app
from services.intake.settings import IntakeSettings
from services.notify.models import Notification, NotificationItem, NotificationStatus, utcnow
from shared.auth import Role, TokenIssuer
from shared.bus import MSG_ID_HEADER, Bus
from shared.events import CloudEvent, EventData, new_event, subject_for
from shared.migrations import upgrade
from shared.settings import ServiceSettings
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.postgres import PostgresServer
from tests.support.services import RunningService, running_service, service_settings

SMTP_USER = "notify"
SMTP_PASSWORD = "smtp-test-password"
SMS_API_KEY = "sms-test-key"

# ================================================================================================ intake (the real one)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx loads the CA bundle for every client, even one that only speaks plain HTTP: load it once."""
    return ssl.create_default_context()


@dataclass
class IntakeServer:
    """The real intake service, its migrations applied, served over real HTTP on a fixed port: ``stop()`` takes it
    down (notify then meets a refused connection) and ``start()`` brings it back on the same address. ``client``
    talks to it over that HTTP."""

    issuer: TokenIssuer
    port: int = field(default_factory=free_port)
    settings: IntakeSettings | None = field(default=None, init=False)
    client: httpx.AsyncClient = field(init=False, repr=False)
    _stack: contextlib.AsyncExitStack | None = field(default=None, init=False, repr=False)
    _starting: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, verify=_tls_context())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_soon(self, database: Callable[[], str], configure: Callable[[str], IntakeSettings]) -> None:
        """Make intake's database and start it, in the background: alongside the notify service, which needs
        intake's address, not intake. The first call through ``call`` waits for it, and so do ``stop`` and
        ``close``."""

        async def first_start() -> None:
            self.settings = configure(await asyncio.to_thread(database))
            await self.start()

        self._starting = asyncio.create_task(first_start(), name="intake-start")

    async def started(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            await starting

    async def start(self) -> None:
        assert self.settings is not None, "intake has no database yet"
        assert self._stack is None, "intake is running already"
        stack = contextlib.AsyncExitStack()
        # A new app each time, as a restarted process would be; its durable consumers pick up where they were.
        await stack.enter_async_context(serve(create_intake_app(self.settings), port=self.port))
        self._stack = stack
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.started()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def close(self) -> None:
        try:
            await self.stop()
        finally:
            await self.client.aclose()

    async def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.client.get("/readyz")
            if response.status_code == 200:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"intake not ready: {response.text}")
            await asyncio.sleep(0.05)

    def resident_auth(self, resident_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(Role.RESIDENT, resident_id=resident_id)}"}

    async def call(self, method: str, path: str, *, resident_id: uuid.UUID, body: Any) -> dict[str, Any]:
        """One request to intake over HTTP as the resident; the answer's JSON (a 2xx is required)."""
        await self.started()
        response = await self.client.request(method, path, json=body, headers=self.resident_auth(resident_id))
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result

    async def register(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        language: str = "ko",
        channels: tuple[str, ...] | None = None,
    ) -> uuid.UUID:
        """A resident registers themselves at intake with these contact details; returns the resident's id. The
        channels default to the inbox plus each channel an address was given for."""
        if channels is None:
            channels = ("inbox", *(("email",) if email else ()), *(("sms",) if phone else ()))
        resident_id = uuid.uuid4()
        body = {
            "name": "김민지",
            "birth_date": "1991-03-08",
            "district_code": "11110",
            "address": "서울특별시 종로구 삼봉로 43",
            "email": email,
            "phone": phone,
            "preferred_language": language,
            "preferred_channels": list(channels),
        }
        created = await self.call("POST", "/v1/residents", resident_id=resident_id, body=body)
        assert created["id"] == str(resident_id), "a resident's token registers that resident"
        return resident_id

    async def update(self, resident_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
        """The resident changes their record at intake (``PATCH``: only the fields given)."""
        return await self.call("PATCH", f"/v1/residents/{resident_id}", resident_id=resident_id, body=changes)

    async def set_consents(self, resident_id: uuid.UUID, consents: dict[str, bool]) -> dict[str, Any]:
        """The resident's complete consent set (a purpose left out is withdrawn)."""
        body = {"consents": consents}
        return await self.call("PUT", f"/v1/residents/{resident_id}/consents", resident_id=resident_id, body=body)


def _migrate_in_a_thread(url: str) -> None:
    """Apply intake's migrations from a session fixture: in a thread of its own, so that its event loop never
    touches the one pytest-asyncio keeps for the tests."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, upgrade(url, BY_NAME["intake"].migrations)).result()


@pytest.fixture(scope="session")
def intake_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file with intake's migrations applied, copied for each test."""
    path = tmp_path_factory.mktemp("intake-template") / "intake.db"
    _migrate_in_a_thread(f"sqlite+aiosqlite:///{path}")
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert leftovers == [], f"the template must be one self-contained file, found {leftovers}"
    return path


@pytest.fixture(scope="session")
def intake_postgres_template(postgres_server: PostgresServer) -> str:
    """One PostgreSQL database with intake's migrations applied, the template of each test's intake database."""
    url = postgres_server.create_database()
    _migrate_in_a_thread(url)  # the engine is disposed afterwards: a template must have no open connection
    return url.rsplit("/", 1)[1]


@pytest.fixture
def new_intake_database(database_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes intake's own database on the test's backend (never notify's: no service reads another's tables),
    migrated, and returns its URL: a copy of the session's template, which costs far less than running the
    migrations for every test. A function, so that the ``intake`` fixture can make the database in the background."""
    if database_backend == "sqlite":
        template: Path = request.getfixturevalue("intake_sqlite_template")
        path = tmp_path / "intake.db"

        def copy() -> str:
            shutil.copyfile(template, path)
            return f"sqlite+aiosqlite:///{path}"

        return copy
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return functools.partial(server.create_database, template=request.getfixturevalue("intake_postgres_template"))


@pytest.fixture
def intake_shares_stream() -> bool:
    """Whether intake publishes and consumes on the notify test's own stream. By default it does not: the test then
    publishes exactly the events it means notify to handle, and intake's own (``resident.updated`` on every
    registration) stay on intake's stream. A test about what intake tells notify over the bus turns it on with
    ``@pytest.mark.parametrize("intake_shares_stream", [True], ids=[SHARED_STREAM])``."""
    return False


SHARED_STREAM = "intake-on-notify-stream"


@pytest.fixture
async def intake(
    intake_shares_stream: bool,
    new_intake_database: Callable[[], str],
    nats_server: NatsServer,
    bus_prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    tmp_path: Path,
) -> AsyncIterator[IntakeServer]:
    """The real intake service, on the same nats-server as notify. Residents register through its API; notify asks
    it for their contact details with its service token, as in production. Registering residents needs no
    eligibility (only applications do), so eligibility's address points where nothing listens: a call to it would
    fail the test rather than pass unnoticed."""

    def configure(database_url: str) -> IntakeSettings:
        settings = service_settings(
            "intake",
            database_url=database_url,
            nats_url=nats_server.url,
            prefix=bus_prefix if intake_shares_stream else f"{bus_prefix}-intake",
            keys_dir=keys_dir,
            data_dir=tmp_path / "intake-data",
            eligibility_url=f"http://127.0.0.1:{free_port()}",
            # The relay is woken by intake's own commits; the poll is only its fallback, and at the tests' usual
            # 0.05 s an idle intake would take CPU from the notify service under test.
            outbox_poll_interval_seconds=0.5,
        )
        assert isinstance(settings, IntakeSettings)
        return settings

    server = IntakeServer(issuer)
    try:
        server.start_soon(new_intake_database, configure)
        yield server
    finally:
        await server.close()


@pytest.fixture
def intake_url(intake: IntakeServer) -> str:
    """Where notify finds intake."""
    return intake.url


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
def bundle_window_seconds() -> float:
    """Short, for tests where each message holds one event: the window only delays its release. A test that needs
    several events in one message widens it (``@pytest.mark.parametrize("bundle_window_seconds", [WIDE_WINDOW])``)
    and closes it with :func:`close_bundle` once they are all in, so that a slow machine cannot split the bundle."""
    return 0.4


WIDE_WINDOW = 3600.0


@pytest.fixture
def notify_settings(
    intake_url: str,
    smtp: MailServer,
    sms_gateway: Endpoint,
    tmp_path: Path,
    issuer: TokenIssuer,
    bundle_window_seconds: float,
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
        "bundle_window_seconds": bundle_window_seconds,
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


async def close_bundle(notify: RunningService, resident: uuid.UUID, kind: str, *, events: int) -> None:
    """Once the resident's message of ``kind`` that is still collecting holds ``events`` events, end its bundling
    window now, as the clock would: the worker releases it on its next pass. Fails if the events were split over
    several messages or more arrived."""

    async def collecting() -> list[tuple[uuid.UUID, int]]:
        async with notify.runtime.db.session() as session:
            rows = await session.execute(
                select(Notification.id, func.count(NotificationItem.id))
                .join(NotificationItem, NotificationItem.notification_id == Notification.id)
                .where(
                    Notification.resident_id == resident,
                    Notification.kind == kind,
                    Notification.status == NotificationStatus.COLLECTING.value,
                )
                .group_by(Notification.id)
            )
            return [(row[0], row[1]) for row in rows]

    async def complete() -> bool:
        bundles = await collecting()
        assert len(bundles) <= 1, f"{kind} split over several messages: {bundles}"
        assert not bundles or bundles[0][1] <= events, f"{kind}: more than {events} events in the message"
        return bool(bundles) and bundles[0][1] == events

    await eventually(complete)
    [(notification_id, _)] = await collecting()
    async with notify.runtime.db.session() as session:
        await session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.status == NotificationStatus.COLLECTING.value)
            .values(next_step_at=utcnow())
        )


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
