"""Fixtures of the notify tests: the real intake service (where notify asks for residents' contact details), a real
SMTP server (aiosmtpd, STARTTLS and AUTH), real HTTP servers as the SMS gateway and the partner's webhook endpoint, and
the notify service itself."""

from __future__ import annotations

import functools
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onestop.runner import unused_port
from services.intake.settings import IntakeSettings
from shared.auth import Role, TokenIssuer
from shared.bus import Bus
from shared.settings import ServiceSettings
from tests.services.notify.support import SMS_API_KEY, SMTP_PASSWORD, SMTP_USER, Producer, start_notify
from tests.support.endpoints import Endpoint, served_endpoint
from tests.support.intake_server import IntakeServer
from tests.support.nats import NatsServer
from tests.support.postgres import PostgresServer
from tests.support.services import RunningService, postgres_template, service_settings, sqlite_template
from tests.support.smtp import MailServer, mail_server

# ================================================================================================ intake (the real one)


@pytest.fixture(scope="session")
def intake_sqlite_template() -> Path:
    """One SQLite file with intake's migrations applied, copied for each test."""
    return sqlite_template("intake")


@pytest.fixture(scope="session")
def intake_postgres_template(postgres_server: PostgresServer) -> str:
    """One PostgreSQL database with intake's migrations applied, the template of each test's intake database."""
    return postgres_template(postgres_server, "intake")


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
            eligibility_url=f"http://127.0.0.1:{unused_port()}",
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


# ================================================================================================ outside systems


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    """The mail relay: a real SMTP server that requires STARTTLS and AUTH."""
    with mail_server(tmp_path, user=SMTP_USER, password=SMTP_PASSWORD) as mail:
        yield mail


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


@pytest.fixture
async def producer(nats_server: NatsServer, bus_prefix: str) -> AsyncIterator[Producer]:
    bus = Bus(ServiceSettings(nats_url=nats_server.url, bus_prefix=bus_prefix), name="test-producer")
    await bus.connect(attempts=20)
    try:
        yield Producer(bus)
    finally:
        await bus.close()
