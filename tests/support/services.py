"""Run one real service in the test's process: its migrations applied to a real database, its lifespan (NATS
connection, relay, consumers) running against the real nats-server, and an httpx client on its ASGI app."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from onestop.registry import BY_NAME
from shared.auth import TokenIssuer
from shared.events import CloudEvent, EventData, new_event
from shared.migrations import upgrade
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from shared.sqlite import FileLock
from tests.support.postgres import PostgresServer

C = TypeVar("C")
T = TypeVar("T")


@dataclass
class RunningService:
    name: str
    app: FastAPI
    client: httpx.AsyncClient
    settings: ServiceSettings
    issuer: TokenIssuer
    # What the test published through :meth:`publish`: :meth:`settled` waits for each to be handled.
    published: list[CloudEvent] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def context(self, kind: type[C]) -> C:
        """The service's typed context (``ServiceDefinition.context``)."""
        context = self.runtime.context
        assert isinstance(context, kind), f"{self.name}'s context is a {type(context).__name__}"
        return context

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the service's own Prometheus registry (0 when not recorded yet)."""
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    async def publish(self, data: EventData | CloudEvent, *, source: str = "/onestop/test") -> CloudEvent:
        """Publish an event the way another service's outbox relay does (Nats-Msg-Id = event id)."""
        event = data if isinstance(data, CloudEvent) else new_event(data, source=source)
        await self.runtime.bus.publish_event(event)
        self.published.append(event)
        return event

    async def settled(self, *consumers: str) -> bool:
        """The service's consumers (or the ones named: ``events`` for ``<service>-events``) have handled every event
        the test published and hold nothing else pending. Handled means in the consumer's inbox or its dead letters
        — the server's pending counts alone may lag a publish it has just acknowledged."""
        bus, tables = self.runtime.bus, self.runtime.tables
        for consumer in self.runtime.consumers.values():
            if consumers and consumer.durable.removeprefix(f"{self.name}-") not in consumers:
                continue
            expected = {e.id for e in self.published if e.event_type in consumer.dispatch.event_types}
            if expected:
                async with self.runtime.db.session() as session:
                    handled = set(
                        (
                            await session.scalars(
                                select(tables.inbox.c.event_id).where(
                                    tables.inbox.c.consumer == consumer.durable, tables.inbox.c.event_id.in_(expected)
                                )
                            )
                        ).all()
                    )
                    handled |= set(
                        (
                            await session.scalars(
                                select(tables.dead_letters.c.event_id).where(
                                    tables.dead_letters.c.consumer == consumer.durable,
                                    tables.dead_letters.c.event_id.in_(expected - handled),
                                )
                            )
                        ).all()
                    )
                if handled != expected:
                    return False
            info = await bus.js.consumer_info(bus.stream, consumer.durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    async def count(self, table: Any, *where: Any) -> int:
        """Rows of a model or table in the service's database, where the conditions hold."""
        async with self.runtime.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    def auth(self, role: str, **claims: Any) -> dict[str, str]:
        """Headers carrying a token for ``role`` (``resident_id=``, ``offices=``, ``partner_id=`` ...)."""
        return {"Authorization": f"Bearer {self.issuer.mint(role, **claims)}"}


# ---------------------------------------------------------------------------------------------- migrated databases

_TEMPLATES: dict[str, Path] = {}  # service -> a SQLite file at the head of its migrations
_TEMPLATES_LOCK = threading.Lock()
_TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="onestop-templates-"))
atexit.register(shutil.rmtree, _TEMPLATE_DIR, True)


async def migrated(database_url: str, service: str) -> None:
    """The service's migrations applied to the database. A database not made yet (SQLite) or made empty (the
    suite's PostgreSQL) becomes a copy of a template that alembic migrated once per test process: the same schema,
    made once instead of once per test (about 80 ms each on SQLite, 0.5-0.9 s on PostgreSQL against 0.15-0.25 s for
    a copy). Anything else is upgraded by alembic as the service would be."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not Path(str(url.database)).exists():
        shutil.copyfile(sqlite_template(service), str(url.database))
        return
    server = PostgresServer.serving(database_url) if url.get_backend_name() == "postgresql" else None
    if server is not None and url.database and server.is_empty(url.database):
        server.replace_with_copy(url.database, postgres_template(server, service))
        return
    await upgrade(database_url, BY_NAME[service].migrations)


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion in a loop of its own, on another thread: session fixtures and templates made
    on first use are synchronous, and a loop of their own must not replace or block on the one pytest-asyncio set
    for the test."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _upgrade_apart(database_url: str, service: str) -> None:
    run_apart(upgrade(database_url, BY_NAME[service].migrations))


def sqlite_template(service: str) -> Path:
    """A SQLite file at the head of the service's migrations, made on first use: one self-contained file to copy."""
    with _TEMPLATES_LOCK:
        if service not in _TEMPLATES:
            path = _TEMPLATE_DIR / f"{service}.db"
            _upgrade_apart(f"sqlite+aiosqlite:///{path}", service)
            connection = sqlite3.connect(path)  # everything in the one file that is copied
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
            # No WAL or shared-memory file left (every page is in the database); the writer lock's files hold no data.
            locks = {path.name + suffix for suffix in FileLock.SUFFIXES}
            leftovers = [p.name for p in _TEMPLATE_DIR.glob(f"{path.name}?*") if p.name not in locks]
            assert leftovers == [], f"the template must be one self-contained file, found {leftovers}"
            _TEMPLATES[service] = path
        return _TEMPLATES[service]


_POSTGRES_TEMPLATES: dict[tuple[int, str], str] = {}  # (server's port, service) -> a database at the head


def postgres_template(server: PostgresServer, service: str) -> str:
    """The name of a database at the head of the service's migrations on ``server``, made on first use. Upgrading
    disposes of its engine, so no connection to it is left: PostgreSQL copies only a database nobody is connected to."""
    with _TEMPLATES_LOCK:
        key = (server.port, service)
        if key not in _POSTGRES_TEMPLATES:
            url = server.create_database()
            _upgrade_apart(url, service)
            _POSTGRES_TEMPLATES[key] = str(make_url(url).database)
        return _POSTGRES_TEMPLATES[key]


def service_settings(
    name: str, *, database_url: str, nats_url: str, prefix: str, keys_dir: Path, **overrides: Any
) -> ServiceSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "bus_prefix": prefix,
        "jwt_public_key_file": keys_dir / "issuer.pub.pem",
        "consumer_ack_wait_seconds": 2.0,
        "outbox_poll_interval_seconds": 0.05,
        "log_json": False,
        "log_level": "WARNING",
        # Built by the first request reaching each router, as FastAPI does by itself: a test's service answers a few
        # (tests/shared/test_service.py checks the services' own setting).
        "build_route_handlers": False,
    }
    values.update(overrides)
    return BY_NAME[name].settings(**values)


@contextlib.asynccontextmanager
async def running_service(
    name: str,
    *,
    database_url: str,
    nats_url: str,
    prefix: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    migrate: bool = True,
    seed: bool = False,
    wait_ready: bool = True,
    **overrides: Any,
) -> AsyncIterator[RunningService]:
    """The service in the test's process: migrated (and seeded, when asked) first, its lifespan running."""
    entry = BY_NAME[name]
    settings = service_settings(
        name, database_url=database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir, **overrides
    )
    if migrate:
        await migrated(settings.database_url, name)
    seeder = entry.seeder() if seed else None
    if seeder is not None:
        await seeder(settings)
    module = __import__(f"services.{name}.main", fromlist=["create_app"])
    app: FastAPI = module.create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            service = RunningService(name, app, client, settings, issuer)
            if wait_ready:
                await _wait_ready(service)
            yield service


async def _wait_ready(service: RunningService, timeout: float = 20.0) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        response = await service.client.get("/readyz")
        if response.status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{service.name} not ready: {response.text}")
