"""The real eligibility service for another service's tests (intake reads its catalogue): migrated and seeded once
per session into a template (a SQLite file, a PostgreSQL template database) whose copies it serves over real HTTP, on
the real nats-server (on a bus prefix of its own, so its consumer and events stay out of the test's stream).

Intake only reads eligibility's catalogue, so most tests share one instance per database backend, served from a
thread with an event loop of its own for the whole session; a test that takes eligibility down starts its own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from services.eligibility.main import MIGRATIONS, create_app
from services.eligibility.seed import seed
from services.eligibility.settings import EligibilitySettings
from shared.migrations import upgrade
from tests.support.http import serve
from tests.support.postgres import PostgresServer
from tests.support.services import run_apart, service_settings


def _settings(database_url: str, *, nats_url: str, prefix: str, keys_dir: Path) -> EligibilitySettings:
    # Nothing reaches its consumer (its bus prefix is its own), so its outbox stays empty: no need to poll it at the
    # tests' usual 50 ms, which, with instances living in the test process, would only take CPU from the tests.
    settings = service_settings(
        "eligibility",
        database_url=database_url,
        nats_url=nats_url,
        prefix=prefix,
        keys_dir=keys_dir,
        outbox_poll_interval_seconds=2.0,
        screening_schedule=False,  # intake only reads the catalogue: no screening runs by itself here
    )
    assert isinstance(settings, EligibilitySettings)
    return settings


async def _migrate_and_seed(database_url: str, *, nats_url: str, keys_dir: Path) -> str:
    await upgrade(database_url, MIGRATIONS)
    return await seed(_settings(database_url, nats_url=nats_url, prefix="unused", keys_dir=keys_dir))


def sqlite_template(path: Path, *, nats_url: str, keys_dir: Path) -> Path:
    """A migrated, seeded SQLite file whose copies serve as eligibility's database."""
    run_apart(_migrate_and_seed(f"sqlite+aiosqlite:///{path}", nats_url=nats_url, keys_dir=keys_dir))
    connection = sqlite3.connect(path)  # everything in the main file, so that copying it copies it all
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return path


def postgres_template(server: PostgresServer, *, nats_url: str, keys_dir: Path) -> str:
    """A migrated, seeded PostgreSQL database to copy (``CREATE DATABASE ... TEMPLATE``); returns its name."""
    url = server.create_database()
    run_apart(_migrate_and_seed(url, nats_url=nats_url, keys_dir=keys_dir))
    return url.rsplit("/", 1)[1]


@dataclass
class Eligibility:
    """One running eligibility service: where it answers, its app, and how to stop it (it goes down for good)."""

    url: str
    app: FastAPI
    _stack: contextlib.AsyncExitStack = field(repr=False)

    async def stop(self) -> None:
        await self._stack.aclose()

    async def get(self, path: str, token: str) -> Any:
        return await catalogue_get(self.url, path, token)

    async def requests_to(self, route: str, status: int | None = None) -> int:
        """How many GET requests ``route`` has answered (with ``status``, or whatever their status): the service's own
        Prometheus counter ``onestop_http_requests_total``, read from its ``/metrics`` over HTTP."""
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get("/metrics")
        response.raise_for_status()
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
                if sample.name == "onestop_http_requests_total"
                and sample.labels.get("route") == route
                and sample.labels.get("method") == "GET"
                and (status is None or sample.labels.get("status") == str(status))
            )
        )


@contextlib.asynccontextmanager
async def running_eligibility(
    database_url: str, *, nats_url: str, prefix: str, keys_dir: Path
) -> AsyncIterator[Eligibility]:
    """Serve eligibility (already migrated and seeded at ``database_url``) over real HTTP until the block ends or
    ``stop()`` is called."""
    app = create_app(_settings(database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir))
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve(app))
        yield Eligibility(url, app, stack)


async def catalogue_get(url: str, path: str, token: str) -> Any:
    """What eligibility itself answers at ``path`` (a ``GET``), asked as ``token``'s holder."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return response.json()


class ThreadedEligibility:
    """``running_eligibility`` in a thread with an event loop of its own, so it outlives each test's loop."""

    def __init__(self, database_url: str, *, nats_url: str, prefix: str, keys_dir: Path) -> None:
        self._args = (database_url, nats_url, prefix, keys_dir)
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._url: str | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="eligibility", daemon=True)

    async def _main(self) -> None:
        database_url, nats_url, prefix, keys_dir = self._args
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        try:
            async with running_eligibility(database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir) as svc:
                self._url = svc.url
                self._started.set()
                await self._done.wait()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._started.set()

    @property
    def url(self) -> str:
        assert self._url is not None, "not started"
        return self._url

    def start(self) -> ThreadedEligibility:
        self._thread.start()
        if not self._started.wait(timeout=60) or self._url is None:
            raise RuntimeError("eligibility did not start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._done is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(timeout=60)
