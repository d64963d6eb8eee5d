"""HTTP benchmark (``make bench``): the APIs under load while the event pipeline runs at capacity, on SQLite and on
PostgreSQL, against a hello-world baseline measured in the same run.

The load comes from wrk (compiled, Debian's package; never a Python client competing for the same cores). In order:

1. the baseline: ``bench/hello.py`` served as the services are (uvicorn, no access log), GET and an
   application-shaped POST (the very requests sent to intake below);
2. per backend, the platform started as ``make run`` starts it (the same runner, on free ports, a temporary var dir,
   seed data; one database per service), then residents registered and a few applications settled as a warm-up and
   as the reference every sampled application is compared with;
3. ``GET /healthz`` of intake, idle (the framework and middleware alone);
4. ``POST /v1/applications`` at 1 connection, then at 16 connections (a unique Idempotency-Key per request, each
   resident's own token); during the 16-connection load, probes of ``GET /v1/applications/{id}`` (a resident's
   status) and ``GET /v1/queues/{office}`` (a caseworker's queue) at a few connections each;
5. end to end: from the first submit until no consumer has anything pending (NATS ``/jsz``: ``num_pending`` +
   ``num_ack_pending`` of every platform consumer) and every service's outbox is empty; then a random sample of the
   applications checked against the reference: every program of the bundle determined with the same outcome, the
   same cases, the same notifications;
6. each service's peak RSS and CPU while loaded, its dead letters, and the longest event-loop stall it reports.

A JSON report and a PNG chart go to ``var/bench/`` (``api.json``, ``api.png``); a table and the issue's floors
(issue 14) as pass/miss lines are printed. Exit status 1 when a floor is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import report
from bench.probes import (
    Histogram,
    Scheduling,
    consumer_backlog,
    count_difference,
    cpu_seconds,
    cpu_times,
    events_handled,
    loop_stall,
    quantiles,
    request_counts,
    rss_mb,
    scheduling,
    wait_for_quiet,
    work_histograms,
)
from bench.report import QUEUE, STATUS
from bench.wrk import Load, Request, Result, script
from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, free_port, wait_for_port
from shared.auth import Role, TokenIssuer, ensure_keypair
from tests.support.postgres import PostgresServer

SERVICE_NAMES = [s.name for s in SERVICES]
LIFE_EVENT = "birth"
DISTRICT = "11170"  # Yongsan-gu


def birth_answers(today: dt.date) -> dict[str, Any]:
    """A second child born nine days ago to an employed parent: twelve programs across five departments, some
    granted automatically, some for a caseworker (as in the end-to-end birth journey)."""
    return {
        "child_birth_date": (today - dt.timedelta(days=9)).isoformat(),
        "birth_order": 2,
        "newborns": 1,
        "korean_national": True,
        "birth_registered": True,
        "earned_income": 2_200_000,
        "business_income": 0,
        "public_pension_income": 0,
        "employment_status": "employed",
    }


@dataclass
class Options:
    """Durations in seconds; every one is a command-line option (``--single-seconds`` for ``single_seconds``)."""

    baseline_seconds: float = field(default=5, metadata={"help": "each hello-world load"})
    idle_seconds: float = field(default=3, metadata={"help": "GET /healthz on the idle platform"})
    single_seconds: float = field(default=5, metadata={"help": "the POST load at 1 connection"})
    seconds: float = field(
        default=10, metadata={"help": "the POST load at --connections, with the GET probes beside it"}
    )
    connections: int = 16
    threads: int = field(default=1, metadata={"help": "wrk threads per load"})
    probe_connections: int = field(default=2, metadata={"help": "per GET probe"})
    probe_delay_ms: int = field(default=20, metadata={"help": "pause between a probe connection's requests"})
    residents: int = field(default=200, metadata={"help": "registered before the load; the POSTs cycle through them"})
    warmup: int = field(
        default=8,
        metadata={"help": "applications settled before the load: the reference and the status probe's targets"},
    )
    sample: int = field(default=25, metadata={"help": "applications checked against the reference once settled"})
    settle_timeout: float = field(
        default=240, metadata={"help": "give up waiting for the pipeline after this long from the first submit"}
    )
    backends: tuple[str, ...] = ("sqlite", "postgresql")
    workers: bool = field(
        default=False,
        metadata={"help": "each service's consumers in a worker of lower CPU priority (onestop run --workers)"},
    )
    out: Path = ROOT / "var" / "bench"


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    for f in fields(Options):
        default = f.default
        kind = {"float": float, "int": int, "Path": Path}.get(str(f.type), str)
        shown = ",".join(default) if isinstance(default, tuple) else default
        what = f.metadata.get("help", "")
        flag = f"--{f.name.replace('_', '-')}"
        if str(f.type) == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=what)
            continue
        parser.add_argument(flag, type=kind, default=shown, help=f"{what} (default: %(default)s)".lstrip())
    args = vars(parser.parse_args(argv))
    args["backends"] = tuple(b.strip() for b in str(args["backends"]).split(",") if b.strip())
    unknown = set(args["backends"]) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return Options(**args)


# ---------------------------------------------------------------------------------------------- the databases


class Databases:
    """Plain reads of each service's database, beside the platform and outside its sessions (one short read
    transaction per query: a WAL reader never blocks SQLite's writer), for what HTTP does not show: outbox backlog,
    dead letters, counts."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.engines = {service: create_async_engine(url) for service, url in urls.items()}

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()

    async def rows(self, service: str, sql: str) -> list[tuple[Any, ...]]:
        async with self.engines[service].connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql))]

    async def count(self, service: str, sql: str) -> int:
        return int((await self.rows(service, sql))[0][0])

    async def outbox_backlog(self) -> dict[str, int]:
        return {s: await self.count(s, "SELECT count(*) FROM outbox WHERE published_at IS NULL") for s in self.engines}

    async def dead_letters(self) -> dict[str, int]:
        return {s: await self.count(s, "SELECT count(*) FROM dead_letters") for s in self.engines}

    async def notify_holding(self) -> int:
        """Notify's messages not out yet: still collecting their bundle, or a delivery still to make."""
        unreleased = await self.count("notify", "SELECT count(*) FROM notifications WHERE released_at IS NULL")
        undelivered = await self.count(
            "notify", "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'failed')"
        )
        return unreleased + undelivered

    async def applications(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        rows = await self.rows("intake", "SELECT id, resident_id FROM applications")
        return [(_uuid(a), _uuid(r)) for a, r in rows]


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# ---------------------------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    postgres: PostgresServer | None = None

    @classmethod
    def start(cls, name: str) -> Backend:
        if name == "sqlite":
            # The runner's default (var/<service>.db), the writer lock timed per kind of work (a few microseconds a
            # transaction): how long requests wait for it and how long each consumer holds it.
            return cls(name, {s: {"database_time_writer_lock": True} for s in SERVICE_NAMES})
        server = PostgresServer().start()
        return cls(name, {s: {"database_url": server.create_database()} for s in SERVICE_NAMES}, server)

    def stop(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()


# ---------------------------------------------------------------------------------------------- the platform


class Pipeline:
    """The platform's work still to do: each consumer's backlog in JetStream and each outbox's unpublished rows."""

    def __init__(self, platform: Platform, databases: Databases) -> None:
        self.jsz_url = f"http://{platform.config.host}:{platform.config.nats_http_port}/jsz"
        self.databases = databases
        self.http = httpx.AsyncClient(timeout=10)
        self.timeline: list[dict[str, Any]] = []
        # When each part last had work (seconds since the load began): the last to drain is the bottleneck.
        self.last_busy: dict[str, float] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def backlog(self) -> tuple[dict[str, int], dict[str, int], int]:
        """What each consumer has still to do, each outbox's unpublished rows, and notify's messages not out yet.
        JetStream first, then the databases: a consumer writes its outbox rows before it acknowledges, so work moving
        between the two is seen in one or the other (and settling asks for a second of quiet looks in a row)."""
        jsz = (await self.http.get(self.jsz_url, params={"accounts": "true", "consumers": "true"})).json()
        consumers = consumer_backlog(jsz, SERVICE_NAMES)
        outboxes = await self.databases.outbox_backlog()
        return consumers, outboxes, await self.databases.notify_holding()

    async def look(self, since: float) -> int:
        consumers, outboxes, notify = await self.backlog()
        pending, unpublished = sum(consumers.values()), sum(outboxes.values())
        t = round(time.monotonic() - since, 2)
        self.timeline.append({"t": t, "consumers": pending, "outboxes": unpublished, "notify": notify})
        parts = consumers | {f"{s} outbox": n for s, n in outboxes.items()} | {"notify messages held": notify}
        self.last_busy |= {part: t for part, n in parts.items() if n}
        return pending + unpublished + notify

    @contextlib.asynccontextmanager
    async def recording(self, since: float, interval: float = 0.5) -> AsyncIterator[None]:
        """The backlog over time, while the load runs."""

        async def record() -> None:
            while True:
                await self.look(since)
                await asyncio.sleep(interval)

        task = asyncio.create_task(record())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self, *, since: float, deadline: float, quiet_for: float = 1.0) -> float | None:
        """Wait until nothing is pending anywhere for ``quiet_for`` seconds; returns the time the quiet began, or None
        at the deadline."""
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if await self.look(since) == 0:
                quiet_since = quiet_since if quiet_since is not None else now
                if time.monotonic() - quiet_since >= quiet_for:
                    return quiet_since
            else:
                quiet_since = None
            await asyncio.sleep(0.25)
        return None


class Processes:
    """Peak RSS and CPU time of the services (and nats-server) while sampled."""

    def __init__(self, platform: Platform) -> None:
        assert platform.nats is not None
        self.pids = {name: p.pid for name, p in platform.processes.items()} | {"nats-server": platform.nats.pid}
        self.peak_rss: dict[str, float] = dict.fromkeys(self.pids, 0.0)

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}

    def scheduling(self) -> dict[str, Scheduling | None]:
        """Each service's event-loop thread: time on a CPU and time waiting for one (not nats-server's: its main
        thread is one of many)."""
        return {name: scheduling(pid) for name, pid in self.pids.items() if name != "nats-server"}

    @contextlib.asynccontextmanager
    async def sampling(self, interval: float = 0.25) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                for name, pid in self.pids.items():
                    self.peak_rss[name] = max(self.peak_rss[name], rss_mb(pid) or 0.0)
                await asyncio.sleep(interval)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Caller:
    """A resident with their own token."""

    resident_id: uuid.UUID
    token: str

    @classmethod
    def new(cls, issuer: TokenIssuer) -> Caller:
        resident_id = uuid.uuid4()
        return cls(resident_id, issuer.mint(Role.RESIDENT, resident_id=resident_id))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def registration(self) -> dict[str, Any]:
        """Every resident alike (a parent in Yongsan-gu with a working spouse), so every application must come out
        as the reference does."""
        return {
            "name": f"Bench Resident {self.resident_id.hex[:6]}",
            "birth_date": "1990-04-12",
            "district_code": DISTRICT,
            "address": "1 Sejong-daero, Seoul",
            "household": [{"relation": "spouse", "birth_date": "1991-01-09", "monthly_income": 2_000_000}],
            "email": f"{self.resident_id.hex[:10]}@residents.example.kr",
            "phone": "+82-10-5555-0100",
            "preferred_language": "ko",
            "preferred_channels": ["inbox", "email"],
        }


def post_requests(callers: list[Caller], answers: dict[str, Any]) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/applications",
            {**c.headers, "Content-Type": "application/json"},
            json.dumps(
                {"resident_id": str(c.resident_id), "life_event": LIFE_EVENT, "answers": answers, "channel": "web"}
            ),
        )
        for c in callers
    ]


async def baseline(options: Options, directory: Path, posts: list[Request]) -> dict[str, Result]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.hello:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=process)
        url = f"http://127.0.0.1:{port}"
        out = {}
        for label, lua in (
            ("GET /hello", script([Request("GET", "/hello")])),
            ("POST /v1/applications", script(posts, idempotency_prefix=uuid.uuid4().hex)),
        ):
            load = await Load.start(
                url,
                lua,
                directory=directory,
                label=f"baseline {label}",
                connections=options.connections,
                seconds=options.baseline_seconds,
                threads=options.threads,
            )
            out[label] = await load.result()
        return out
    finally:
        process.terminate()
        process.wait()


@contextlib.asynccontextmanager
async def running(
    options: Options, backend_name: str, directory: Path, *, settings: dict[str, Any] | None = None
) -> AsyncIterator[Run]:
    """The platform started on one backend as ``make run`` starts it (free ports, a var dir under ``directory``),
    ``settings`` given to every service on top of the backend's, and a :class:`Run` on it; all stopped after."""
    backend = await asyncio.to_thread(Backend.start, backend_name)
    platform = Platform(
        PlatformConfig(
            var_dir=directory / f"var-{backend_name}",
            nats_port=free_port(),
            nats_http_port=free_port(),
            ports={s: free_port() for s in SERVICE_NAMES},
            overrides={s: backend.overrides.get(s, {}) | (settings or {}) for s in SERVICE_NAMES},
            workers=options.workers,
            ready_timeout=120,
        )
    )
    try:
        await asyncio.to_thread(platform.start)
        databases = Databases({e.name: platform.settings_values(e)["database_url"] for e in SERVICES})
        run = Run(options, platform, databases, directory / backend_name)
        try:
            yield run
        finally:
            await run.close()
    finally:
        await asyncio.to_thread(platform.stop)
        await asyncio.to_thread(backend.stop)


async def run_backend(options: Options, name: str, directory: Path) -> dict[str, Any]:
    """Everything measured on one backend, as a JSON-ready dict, begun once the machine is quiet (what ran before,
    the other backend's platform stopping, is not measured with it)."""
    quiet = await wait_for_quiet()
    started = time.monotonic()
    async with running(options, name, directory) as run:
        startup = round(time.monotonic() - started, 1)
        load = [round(x, 2) for x in os.getloadavg()]
        return {
            "backend": name,
            "startup_s": startup,
            "load_average_before": load,
            "quiet_before": quiet.to_json(),
        } | await run.measure()


@dataclass
class Reference:
    """The warm-up: applications settled before the load, the first of them what every sampled one must match."""

    applications: list[tuple[uuid.UUID, Caller]]
    programs: list[str]
    seen: dict[str, Any]
    office: str


class Run:
    """One backend's measurement, on a running platform."""

    def __init__(self, options: Options, platform: Platform, databases: Databases, directory: Path) -> None:
        assert platform.issuer is not None
        self.options = options
        self.platform = platform
        self.issuer = platform.issuer
        self.databases = databases
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.pipeline = Pipeline(platform, databases)
        self.client = httpx.AsyncClient(timeout=30)
        self.intake, self.routing = platform.url("intake"), platform.url("routing")
        self.answers = birth_answers(dt.date.today())
        self.callers = [Caller.new(self.issuer) for _ in range(options.residents)]

    async def close(self) -> None:
        await self.client.aclose()
        await self.pipeline.close()
        await self.databases.close()

    async def metrics(self, process: str) -> str:
        """A service's metrics (its api process's, or its one process's), or a worker's by its name."""
        return (await self.client.get(f"{self.platform.process_url(process)}/metrics")).text

    @property
    def service_processes(self) -> list[str]:
        """Each service's process, or its api process and its worker."""
        return [p for s in SERVICE_NAMES for p in [s, *self.platform.worker_names(s)]]

    async def writer_lock(self) -> dict[str, LockReading]:
        """Each service's writer-lock histograms (wait, hold) by work and its consumers' events handled, as they stand
        (SQLite only; else empty)."""
        out = {}
        for service in self.service_processes:
            text = await self.metrics(service)
            wait = work_histograms(text, "onestop_db_writer_wait_seconds")
            if wait:
                hold = work_histograms(text, "onestop_db_writer_hold_seconds")
                out[service] = LockReading(wait, hold, events_handled(text))
        return out

    def load(self, url: str, requests: list[Request], label: str, connections: int, seconds: float,
             *, creates: bool = False, delay_ms: int = 0) -> Any:  # fmt: skip
        lua = script(requests, idempotency_prefix=uuid.uuid4().hex if creates else None, delay_ms=delay_ms)
        return Load.start(url, lua, directory=self.directory, label=label, connections=connections, seconds=seconds,
                          threads=self.options.threads)  # fmt: skip

    async def measure(self) -> dict[str, Any]:
        o = self.options
        reference = await self.prepare()
        endpoints: dict[str, Result] = {}
        # The framework and middleware alone, on the idle platform.
        idle = await self.load(self.intake, [Request("GET", "/healthz")], "healthz", o.connections, o.idle_seconds)
        endpoints["GET /healthz (idle)"] = await idle.result()

        already = {a for a, _ in await self.databases.applications()}
        posts = post_requests(self.callers, self.answers)
        status_probe = [Request("GET", f"/v1/applications/{a}", c.headers) for a, c in reference.applications]
        caseworker = self.issuer.mint(Role.CASEWORKER, offices=[reference.office], subject="caseworker:bench")
        queue_probe = [Request("GET", f"/v1/queues/{reference.office}", {"Authorization": f"Bearer {caseworker}"})]
        post16 = f"POST /v1/applications c{o.connections}"
        route = ("POST", "/v1/applications")
        processes = Processes(self.platform)
        statuses: dict[str, dict[str, int]] = {}

        # The load; the end-to-end clock starts at the first submit.
        locks = [await self.writer_lock()]
        before = request_counts(await self.metrics("intake"), *route)
        t0 = time.monotonic()
        async with processes.sampling(), self.pipeline.recording(since=t0):
            single = await self.load(self.intake, posts, "post-c1", 1, o.single_seconds, creates=True)
            endpoints["POST /v1/applications c1"] = await single.result()
            middle = request_counts(await self.metrics("intake"), *route)
            locks.append(await self.writer_lock())
            statuses["POST /v1/applications c1"] = count_difference(middle, before)

            cpu_before, scheduled_before, machine_before = processes.cpu(), processes.scheduling(), cpu_times()
            loaded_at = time.monotonic()
            loads = {
                post16: await self.load(self.intake, posts, "post", o.connections, o.seconds, creates=True),
                STATUS: await self.load(self.intake, status_probe, "status", o.probe_connections, o.seconds,
                                        delay_ms=o.probe_delay_ms),
                QUEUE: await self.load(self.routing, queue_probe, "queue", o.probe_connections, o.seconds,
                                       delay_ms=o.probe_delay_ms),
            }  # fmt: skip
            for label, running in loads.items():
                endpoints[label] = await running.result()
            cpu = {k: v - cpu_before[k] for k, v in processes.cpu().items()}
            scheduled = _differences(processes.scheduling(), scheduled_before)
            machine_idle, machine_total = (now - then for now, then in zip(cpu_times(), machine_before, strict=True))
            loaded_for = time.monotonic() - loaded_at
            statuses[post16] = count_difference(request_counts(await self.metrics("intake"), *route), middle)
            locks.append(await self.writer_lock())
        async with processes.sampling():
            settled_at = await self.pipeline.settle(since=t0, deadline=t0 + o.settle_timeout)

        accepted = [(a, r) for a, r in await self.databases.applications() if a not in already]
        end_to_end = await self.end_to_end(reference, accepted, t0, settled_at)
        services: dict[str, Any] = {}
        for service in self.service_processes:
            stall = loop_stall(await self.metrics(service))
            services[service] = {"loop_stall": stall.to_json() if stall else None}
        for name in processes.pids:
            services.setdefault(name, {}).update(
                rss_peak_mb=round(processes.peak_rss[name], 1),
                cpu_percent_under_load=round(100 * cpu[name] / loaded_for, 1),
            )
            if (waits := scheduled.get(name)) is not None:
                # The share of the load's time the service's event loop was ready to run but had no CPU.
                services[name]["loop_waiting_for_cpu_percent"] = round(100 * waits.waiting_s / loaded_for, 1)
        return {
            "office": reference.office,
            "programs": reference.programs,
            "endpoints": {k: v.to_json() for k, v in endpoints.items()},
            "statuses": statuses,
            "machine_busy_percent_under_load": round(100 * (1 - machine_idle / max(machine_total, 1.0)), 1),
            "writer_lock": {
                label: lock_figures(after, before)
                for label, before, after in (
                    ("POST /v1/applications c1", locks[0], locks[1]),
                    (post16, locks[1], locks[2]),
                )
            },
            "end_to_end": end_to_end,
            "services": services,
        }

    async def prepare(self) -> Reference:
        """Residents registered as they register themselves, then the warm-up applications through the whole pipeline
        (caches filled, the catalogue fetched): the reference, and what the status probe reads. Not measured."""
        gate = asyncio.Semaphore(4)

        async def register(c: Caller) -> None:
            async with gate:
                r = await self.client.post(f"{self.intake}/v1/residents", json=c.registration(), headers=c.headers)
            r.raise_for_status()

        await asyncio.gather(*(register(c) for c in self.callers))
        events = (await self.client.get(f"{self.intake}/v1/life-events", headers=self.callers[0].headers)).json()
        programs = sorted(p["code"] for p in next(e for e in events if e["code"] == LIFE_EVENT)["programs"])
        warm = []
        for c in self.callers[: self.options.warmup]:
            body = {"resident_id": str(c.resident_id), "life_event": LIFE_EVENT, "answers": self.answers}
            r = await self.client.post(f"{self.intake}/v1/applications", headers=c.headers, json=body)
            r.raise_for_status()
            warm.append((uuid.UUID(r.json()["id"]), c))
        limit = self.options.settle_timeout
        if await self.pipeline.settle(since=time.monotonic(), deadline=time.monotonic() + limit) is None:
            raise RuntimeError(f"the warm-up applications did not settle within {limit:g} s")
        self.pipeline.timeline.clear()
        self.pipeline.last_busy.clear()
        seen = await self.outcome_of(*warm[0])
        if sorted(seen["outcomes"]) != programs or not all(seen["outcomes"].values()):
            raise RuntimeError(f"the reference application is incomplete: {seen}")
        if not seen["offices"]:
            raise RuntimeError("the reference application has no case open in any office")
        return Reference(warm, programs, seen, seen["offices"][0])

    async def outcome_of(self, application_id: uuid.UUID, caller: Caller) -> dict[str, Any]:
        """What a resident sees of one application: each program's outcome and case, and the messages about it."""
        view = (await self.client.get(f"{self.intake}/v1/applications/{application_id}", headers=caller.headers)).json()
        kinds: set[str] = set()
        before: str | None = None
        while True:  # the resident's inbox, a page at a time, newest first
            params: dict[str, Any] = {"limit": 100} | ({"before": before} if before else {})
            inbox = f"{self.platform.url('notify')}/v1/inbox"
            page = (await self.client.get(inbox, headers=caller.headers, params=params)).json()
            kinds |= {m["kind"] for m in page["items"] if m["application_id"] == str(application_id)}
            before = page.get("next_before")
            if not before:
                break
        shown = view.get("programs") or []
        cases = {p["program_code"]: p.get("case") or {} for p in shown}
        return {
            "round": (view.get("determination") or {}).get("round"),
            "outcomes": {p["program_code"]: p["outcome"] for p in shown},
            "cases": {code: case.get("status") for code, case in cases.items()},
            "offices": sorted({case["office_code"] for case in cases.values() if case.get("status") == "open"}),
            "notified": sorted({(n["channel"], n["template"]) for n in view.get("notifications") or []}),
            "inbox": sorted(kinds),
        }

    async def end_to_end(
        self,
        reference: Reference,
        accepted: list[tuple[uuid.UUID, uuid.UUID]],
        t0: float,
        settled_at: float | None,
    ) -> dict[str, Any]:
        """Applications per second from the first submit until settled, and a random sample checked against the
        reference (same answers, same kind of resident: the same programs, outcomes, cases and notifications)."""
        end = settled_at if settled_at is not None else time.monotonic()
        consumers, outboxes, notify = await self.pipeline.backlog()
        sample = random.sample(accepted, min(self.options.sample, len(accepted))) if settled_at is not None else []
        callers = {c.resident_id: c for c in self.callers}
        problems: dict[str, list[str]] = {}
        for application_id, resident_id in sample:
            seen = await self.outcome_of(application_id, callers[resident_id])
            if found := differences(reference.seen, seen, reference.programs):
                problems[str(application_id)] = found
        timeline = self.pipeline.timeline
        return {
            "applications": len(accepted),
            "seconds": round(end - t0, 2),
            "per_second": round(len(accepted) / (end - t0), 1),
            "settled": settled_at is not None,
            "left": {"consumers": consumers, "outboxes": outboxes, "notify": notify},
            "dead_letters": await self.databases.dead_letters(),
            "last_busy_s": dict(sorted(self.pipeline.last_busy.items(), key=lambda kv: -kv[1])),
            "sample": {
                "checked": len(sample),
                "complete": len(sample) - len(problems),
                "problems": [f"{a}: {'; '.join(p)}" for a, p in list(problems.items())[:10]]
                or ([] if settled_at is not None else [f"not settled within {self.options.settle_timeout:g} s"]),
            },
            "backlog_timeline": timeline[:: max(1, len(timeline) // 400)],
        }


@dataclass(frozen=True)
class LockReading:
    """One service's writer-lock histograms by work, and how many events each of its consumers has handled."""

    wait: dict[str, Histogram]
    hold: dict[str, Histogram]
    handled: dict[str, int]


def _differences(
    after: dict[str, Scheduling | None], before: dict[str, Scheduling | None]
) -> dict[str, Scheduling | None]:
    return {
        name: now - then if now is not None and (then := before.get(name)) is not None else None
        for name, now in after.items()
    }


def lock_figures(after: dict[str, LockReading], before: dict[str, LockReading]) -> dict[str, dict[str, Any]]:
    """Per service, during one load: each kind of work's waits for the writer lock and its holds of it; for a
    consumer (its work is named as its durable), the events it handled and how many a transaction."""
    out = {}
    for service, reading in after.items():
        earlier = before.get(service, LockReading({}, {}, {}))
        hold = quantiles(reading.hold, earlier.hold)
        for work, figures in hold.items():
            if work in reading.handled:
                events = reading.handled[work] - earlier.handled.get(work, 0)
                figures["events"] = events
                figures["events_per_transaction"] = round(events / figures["count"], 1)
        out[service] = {"wait": quantiles(reading.wait, earlier.wait), "hold": hold}
    return out


def differences(reference: dict[str, Any], seen: dict[str, Any], programs: list[str]) -> list[str]:
    out = []
    if not seen["round"]:
        out.append("no eligibility round recorded")
    missing = sorted(set(programs) - {p for p, o in seen["outcomes"].items() if o})
    if missing:
        out.append(f"not determined: {', '.join(missing)}")
    for program, outcome in reference["outcomes"].items():
        if seen["outcomes"].get(program) not in (None, outcome):
            out.append(f"{program}: {seen['outcomes'].get(program)} where the reference has {outcome}")
        if reference["cases"].get(program) and not seen["cases"].get(program):
            out.append(f"{program}: no case")
    if not set(reference["notified"]) <= set(map(tuple, seen["notified"])):
        out.append(f"notifications recorded {seen['notified']}, the reference has {reference['notified']}")
    if not set(reference["inbox"]) <= set(seen["inbox"]):
        out.append(f"inbox {seen['inbox']}, the reference has {reference['inbox']}")
    return out


async def main_async(options: Options) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="onestop-bench-") as tmp:
        directory = Path(tmp)
        quiet = await wait_for_quiet()
        load_before = os.getloadavg()
        # The baseline is sent the very same requests: residents' bodies and tokens (signed with a key of its own).
        ensure_keypair(directory / "keys")
        issuer = TokenIssuer.from_directory(directory / "keys")
        fake = [Caller.new(issuer) for _ in range(options.residents)]
        base = await baseline(options, directory, post_requests(fake, birth_answers(dt.date.today())))
        backends = {}
        for name in options.backends:
            print(f"  measuring on {name}...", flush=True)
            backends[name] = await run_backend(options, name, directory)
    return {
        "generated_at": started.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "quiet_before": quiet.to_json(),
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "baseline": {k: v.to_json() for k, v in base.items()},
        "backends": backends,
    }


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    print(
        f"\nHTTP benchmark: wrk against the platform on {', '.join(options.backends)} "
        f"({options.seconds:g} s at {options.connections} connections)",
        flush=True,
    )
    data = asyncio.run(main_async(options))
    data["floors"] = [f.to_json() for f in report.floors(data)]
    options.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = report.write(data, options.out)
    report.show(data)
    print(f"\n  report: {json_path}\n  chart:  {png_path}")
    return 1 if any(f["passed"] is False for f in data["floors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
