"""Fixtures of the intake tests: the real eligibility service whose catalogue intake reads (migrated and seeded once
per session into a template, copied onto the test's database backend, served over real HTTP), and intake itself
running against the real NATS and database."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.auth import Role, TokenIssuer
from tests.support.eligibility_server import (
    Eligibility,
    ThreadedEligibility,
    postgres_template,
    running_eligibility,
    sqlite_template,
)
from tests.support.nats import NatsServer
from tests.support.postgres import PostgresServer
from tests.support.services import RunningService, running_service


def _sqlite_copy(template: Path, directory: Path) -> str:
    copy = directory / "eligibility.db"
    shutil.copyfile(template, copy)
    return f"sqlite+aiosqlite:///{copy}"


@pytest.fixture(scope="session")
def eligibility_sqlite_template(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer, keys_dir: Path
) -> Path:
    path = tmp_path_factory.mktemp("eligibility-template") / "eligibility.db"
    return sqlite_template(path, nats_url=nats_server.url, keys_dir=keys_dir)


@pytest.fixture(scope="session")
def eligibility_postgres_template(postgres_server: PostgresServer, nats_server: NatsServer, keys_dir: Path) -> str:
    return postgres_template(postgres_server, nats_url=nats_server.url, keys_dir=keys_dir)


# The shared instances: eligibility's only state intake's tests touch is its catalogue, and they only read it (its
# consumer listens on a prefix of its own, which nothing publishes to), so nothing leaks from one test to the next.


@pytest.fixture(scope="session")
def shared_eligibility_sqlite(
    eligibility_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer, keys_dir: Path
) -> Iterator[ThreadedEligibility]:
    database_url = _sqlite_copy(eligibility_sqlite_template, tmp_path_factory.mktemp("eligibility-shared"))
    service = ThreadedEligibility(
        database_url, nats_url=nats_server.url, prefix=f"e{uuid.uuid4().hex[:12]}", keys_dir=keys_dir
    ).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def shared_eligibility_postgresql(
    eligibility_postgres_template: str, postgres_server: PostgresServer, nats_server: NatsServer, keys_dir: Path
) -> Iterator[ThreadedEligibility]:
    database_url = postgres_server.create_database(template=eligibility_postgres_template)
    service = ThreadedEligibility(
        database_url, nats_url=nats_server.url, prefix=f"e{uuid.uuid4().hex[:12]}", keys_dir=keys_dir
    ).start()
    yield service
    service.stop()


@pytest.fixture
def eligibility_url(database_backend: str, request: pytest.FixtureRequest) -> str:
    """Where intake finds eligibility's ``GET /v1/life-events`` and ``GET /v1/fact-types``: the real service on the
    test's database backend, shared by the session's tests on that backend."""
    service: ThreadedEligibility = request.getfixturevalue(f"shared_eligibility_{database_backend}")
    return service.url


@pytest.fixture
def eligibility_database_url(database_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database of the test's own for eligibility, on the test's backend: a copy of the migrated, seeded template."""
    if database_backend == "sqlite":
        return _sqlite_copy(request.getfixturevalue("eligibility_sqlite_template"), tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(template=request.getfixturevalue("eligibility_postgres_template"))


@pytest.fixture
async def eligibility(
    eligibility_database_url: str, nats_server: NatsServer, bus_prefix: str, keys_dir: Path
) -> AsyncIterator[Eligibility]:
    """A real eligibility service of the test's own, served over real HTTP in the test's event loop, for a test that
    counts its requests or takes it down (``await eligibility.stop()``). Its bus prefix is its own: consuming the
    test's application.submitted would put real determinations among the events a test publishes itself."""
    async with running_eligibility(
        eligibility_database_url, nats_url=nats_server.url, prefix=f"{bus_prefix}-eligibility", keys_dir=keys_dir
    ) as service:
        yield service


@pytest.fixture
def intake_token(issuer: TokenIssuer) -> str:
    return issuer.mint(Role.SERVICE, service="intake")


@pytest.fixture
async def intake(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    eligibility_url: str,
    intake_token: str,
) -> AsyncIterator[RunningService]:
    async with running_service(
        "intake",
        database_url=database_url,
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        eligibility_url=eligibility_url,
        service_token=intake_token,
    ) as service:
        yield service
