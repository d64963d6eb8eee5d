"""Fixtures shared by the whole suite: a real nats-server, a real PostgreSQL, keys and tokens, settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from onestop.natsauth import PartnerEntry, PasswordStore, platform_users, render_authorization
from shared import turns
from shared.auth import TokenIssuer, ensure_keypair
from tests.support.loop_clock import LoopClock
from tests.support.nats import NatsServer
from tests.support.nats_clients import Client
from tests.support.postgres import PostgresServer

# `make test` runs on two workers (pytest-xdist). The suites that start the platform as processes (a dozen of them,
# several cores' worth at times) are one unit of work, run one at a time on one worker in their files' order; the
# other tests go module by module to whichever worker is free. (xdist's own `--dist loadgroup` groups nothing under
# pytest 9: it renames each test through an attribute pytest no longer reads.)
PLATFORM_SUITES = ("tests/chaos/", "tests/e2e/", "tests/onestop/", "tests/portal/", "tests/bench/", "tests/deploy/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class PlatformSuitesApart(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "platform" if nodeid.startswith(PLATFORM_SUITES) else super()._split_scope(nodeid)

    return PlatformSuitesApart(config, log)


@pytest.fixture
def loop_clock(monkeypatch: pytest.MonkeyPatch) -> LoopClock:
    """shared.turns' clock, moved by the test alone."""
    clock = LoopClock()
    monkeypatch.setattr(turns, "time", clock)
    return clock


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    ensure_keypair(directory)
    return directory


@pytest.fixture(scope="session")
def issuer(keys_dir: Path) -> TokenIssuer:
    return TokenIssuer.from_directory(keys_dir)


@pytest.fixture
def bus_prefix() -> str:
    """Each test gets its own stream and subjects on the shared nats-server."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(database_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on SQLite and, in a second run of the test, on PostgreSQL (dropped after the test:
    the suite makes hundreds)."""
    if database_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


# ---------------------------------------------------------------------------------------------- NATS users

PARTNERS = [PartnerEntry("bank", "A bank"), PartnerEntry("ngo", "An NGO")]


@pytest.fixture
def passwords(tmp_path: Path) -> PasswordStore:
    return PasswordStore(tmp_path / "passwords")


@pytest.fixture
def secured_nats(tmp_path: Path, bus_prefix: str, passwords: PasswordStore) -> Iterator[NatsServer]:
    """A nats-server that admits only the platform's users (intake and notify) and two partners', with the
    subject permissions `make run` and production configure."""
    users = platform_users(prefix=bus_prefix, services=["intake", "notify"], partners=PARTNERS, passwords=passwords)
    server = NatsServer(tmp_path / "secured-nats", extra_config=render_authorization(users)).start()
    yield server
    server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """NATS connections a test opens (tests.support.nats_clients.connect), closed after it."""
    made: list[Client] = []
    yield made
    for client in made:
        if client.nc is not None and not client.nc.is_closed:
            await client.nc.close()
