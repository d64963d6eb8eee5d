"""Structured JSON logging that carries the trace id (of the current OpenTelemetry span, shared/tracing.py) and the
event id, the HTTP request span, and Prometheus metrics."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing

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
        self.info = Gauge("onestop_service_info", "Service identity", ["service"], registry=self.registry)
        self.info.labels(**labels).set(1)


class RequestContextMiddleware:
    """Per request: a span continuing the caller's trace (or starting one), timed and counted; the response carries
    ``traceparent``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, service: str = "onestop") -> None:
        self.app = app
        self.metrics = metrics
        self.service = service
        self.log = logging.getLogger("onestop.http")

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
                await self.app(scope, receive, send_wrapper)
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
                self.metrics.http_requests.labels(method=scope["method"], route=template, status=str(status)).inc()
                self.metrics.http_latency.labels(method=scope["method"], route=template).observe(elapsed)
                self.log.info(
                    "request",
                    extra={"method": scope["method"], "route": template, "status": status,
                           "ms": round(elapsed * 1000, 2)},
                )  # fmt: skip
