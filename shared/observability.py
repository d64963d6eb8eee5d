"""Structured JSON logging that carries the trace id (of the current OpenTelemetry span, shared/tracing.py) and the
event id, the HTTP request span, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
import sys
import threading
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import sqlite, tracing

event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (shared/tracing.py), None outside any span."""
    return tracing.traceparent()


# ---------------------------------------------------------------------------------------------- logging

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (ids := tracing.current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if (event_id := event_id_var.get()) is not None:
            entry["event_id"] = event_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access logs carry query strings, which may hold personal data; our own middleware logs requests instead.
    logging.getLogger("uvicorn.access").setLevel("WARNING")


# ---------------------------------------------------------------------------------------------- metrics


class Metrics:
    """One registry per app, so several apps can live in one process (as they do in tests)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"service": service}
        self.http_requests = Counter(
            "onestop_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "onestop_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.events_published = Counter(
            "onestop_events_published", "Events published by the outbox relay", registry=self.registry
        )
        self.events_handled = Counter(
            "onestop_events_handled", "Events handled by consumers", ["consumer", "result"], registry=self.registry
        )
        self.dead_letters = Counter(
            "onestop_dead_letters", "Events sent to the dead-letter subject", ["consumer"], registry=self.registry
        )
        self.consumer_pending = Gauge(
            "onestop_consumer_pending",
            "Events a consumer has yet to handle, as JetStream counts them (not delivered, or not acknowledged)",
            ["consumer"],
            registry=self.registry,
        )
        self.events_republished = Counter(
            "onestop_outbox_events_republished",
            "Events marked sent that the stream no longer held, published again by the reconciler",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "onestop_outbox_backlog", "Unpublished outbox rows at the last relay pass", registry=self.registry
        )
        self.loop_lag = Histogram(
            "onestop_event_loop_lag_seconds",
            "How late the event loop ran a timer, whatever held it (its own work, or the OS running other processes)",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.loop_lag_max = Gauge(
            "onestop_event_loop_lag_max_seconds",
            "The latest the event loop ran a timer since the service started",
            registry=self.registry,
        )
        self.loop_stall_max = Gauge(
            "onestop_event_loop_stall_max_seconds",
            "The longest the event loop was held by its own work (lateness bounded by its thread's CPU time) since "
            "the service started",
            registry=self.registry,
        )
        # Only when the setting database_count_statements is on (see count_statements).
        self.db_statements = Counter(
            "onestop_db_statements",
            "SQL statements sent to the database (an executemany is one), by the work that sent them",
            ["work"],
            registry=self.registry,
        )
        self.db_transactions = Counter(
            "onestop_db_transactions", "Transactions committed, by the work that ran them", ["work"],
            registry=self.registry,
        )  # fmt: skip
        # Only when the setting database_time_writer_lock is on (see time_writer_lock).
        lock_buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5)
        self.db_writer_wait = Histogram(
            "onestop_db_writer_wait_seconds",
            "How long a write transaction waited for the process's SQLite writer lock, by the work that ran it",
            ["work"],
            registry=self.registry,
            buckets=lock_buckets,
        )
        self.db_writer_hold = Histogram(
            "onestop_db_writer_hold_seconds",
            "How long a write transaction held the process's SQLite writer lock, by the work that ran it",
            ["work"],
            registry=self.registry,
            buckets=lock_buckets,
        )
        self.info = Gauge("onestop_service_info", "Service identity", ["service"], registry=self.registry)
        self.info.labels(**labels).set(1)


def count_statements(engine: AsyncEngine, metrics: Metrics) -> None:
    """Count each statement and commit on ``engine`` by the work that ran it: a consumer (its worker task's name,
    ``intake-status-0`` counted as ``intake-status``), the outbox relay and the other named background tasks, or
    ``http`` for requests. Listeners on every statement: for measuring, never on by default."""

    def work() -> str:
        return _work(asyncio.current_task(), background=sqlite.BACKGROUND.get())

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _statement(*_: Any) -> None:
        metrics.db_statements.labels(work=work()).inc()

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(*_: Any) -> None:
        metrics.db_transactions.labels(work=work()).inc()


def time_writer_lock(database: str, metrics: Metrics) -> None:
    """Time each write transaction's wait for the SQLite writer lock of ``database`` (a file) and its hold of it, by
    the work that ran it (as :func:`count_statements` names it). For measuring, never on by default."""

    def observe(task: asyncio.Task[Any] | None, background: bool, waited: float, held: float) -> None:
        work = _work(task, background=background)
        metrics.db_writer_wait.labels(work=work).observe(waited)
        metrics.db_writer_hold.labels(work=work).observe(held)

    sqlite.watch(database, observe)


def _work(task: asyncio.Task[Any] | None, *, background: bool) -> str:
    """A consumer (its worker task's name, ``intake-status-0`` counted as ``intake-status``), the outbox relay and
    the other named background tasks, or ``http`` for requests."""
    if task is None or not background:
        return "http"
    return _TASK_NUMBER.sub("", task.get_name())


_TASK_NUMBER = re.compile(r"-\d+$")


class LoopMonitor:
    """Measures event-loop stalls: a timer due every ``interval`` seconds, and how late it runs. Whatever holds the
    loop (CPU work between two awaits, a blocking call) delays every request and handler by as long; the lateness of
    the timer is that delay, seen from at most one interval after it began. Works on any loop (uvloop has no
    slow-callback hook), at the cost of a few microseconds ``1/interval`` times a second.

    Lateness also counts the time the loop's thread was ready to run but the OS ran other processes (a loaded
    machine). On Linux that time is known (``/proc/self/task/<id>/schedstat``, time waiting on a run queue) and the
    *stall* leaves it out: what the service itself held the loop for (its work, a blocking call, its other threads
    holding the GIL). Elsewhere the stall is the lateness."""

    def __init__(self, metrics: Metrics, *, interval: float = 0.02) -> None:
        self.metrics = metrics
        self.interval = interval
        self.latest = 0.0
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        with _RunQueueClock() as queued:
            # One reading a tick (the end of one is the start of the next): each is a read of a /proc file.
            waited = queued()
            while True:
                due = loop.time() + self.interval
                await asyncio.sleep(self.interval)
                now_waited = queued()
                self.observe(loop.time() - due, now_waited - waited)
                waited = now_waited

    def observe(self, lag: float, preempted: float = 0.0) -> None:
        """One tick: how late the timer ran, and how long meanwhile the OS kept the loop's thread waiting to run."""
        lag = max(lag, 0.0)
        self.metrics.loop_lag.observe(lag)
        if lag > self.latest:
            self.latest = lag
            self.metrics.loop_lag_max.set(lag)
        stall = max(lag - preempted, 0.0)
        if stall > self.longest:
            self.longest = stall
            self.metrics.loop_stall_max.set(stall)


class _RunQueueClock:
    """Seconds the calling thread has spent ready to run but not running (Linux); always 0 where unknown."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def __enter__(self) -> _RunQueueClock:
        with contextlib.suppress(OSError):
            self._fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
            self()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            os.close(self._fd)
            self._fd = None
            return 0.0


class RequestContextMiddleware:
    """Per request: a span continuing the caller's trace (or starting one), timed and counted; the response carries
    ``traceparent``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, service: str = "onestop") -> None:
        self.app = app
        self.metrics = metrics
        self.service = service
        self.log = logging.getLogger("onestop.http")
        # (method, route, status) -> its counter and its histogram: the client library's ``labels()`` checks and
        # looks up its arguments under a lock, several times the cost of counting, at every request.
        self._samples: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or []
            if name == b"traceparent"
        }
        with tracing.server_span(self.service, scope["method"], headers) as span:
            event_id_var.set(None)
            started = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    tp = current_traceparent()
                    if tp:
                        message.setdefault("headers", []).append((b"traceparent", tp.encode()))
                await send(message)

            try:
                await self.forward(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                elapsed = time.perf_counter() - started
                # The route template, never the concrete path: paths hold resident ids.
                span.update_name(f"{scope['method']} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(tracing.Status(tracing.StatusCode.ERROR))
                requests, latency = self._series(scope["method"], template, status)
                requests.inc()
                latency.observe(elapsed)
                self.log.info(
                    "request",
                    extra={"method": scope["method"], "route": template, "status": status,
                           "ms": round(elapsed * 1000, 2)},
                )  # fmt: skip

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request, within its span: to the app. A subclass may answer some itself (``shared.service``'s body
        limit) in this one layer rather than in a middleware of its own beneath it."""
        await self.app(scope, receive, send)

    def _series(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        """The request's counter and histogram, as ``labels()`` gives them (they are the same objects every time)."""
        key = (method, route, status)
        series = self._samples.get(key)
        if series is None:
            series = self._samples[key] = (
                self.metrics.http_requests.labels(method=method, route=route, status=str(status)),
                self.metrics.http_latency.labels(method=method, route=route),
            )
        return series
