"""OpenTelemetry traces: a span for each HTTP request, each database statement, and each NATS publish and consume.

The W3C trace context travels in HTTP headers and in NATS message headers (``traceparent``). Between a request (or an
event handler) and the relay that publishes its events later, it travels through the outbox: the envelope stored in
the outbox row carries the ``traceparent`` of the span that emitted it (the CloudEvents distributed-tracing
extension), and the relay's publish span is that span's child. So one application is one trace, from intake's POST
through eligibility, routing and notify.

Each service has its own tracer provider (``service.name`` = ``onestop-<service>``), so several services in one
process (as in tests) keep their spans apart. Spans are exported over OTLP/HTTP when ``otlp_endpoint`` is set;
otherwise they still exist (their trace ids are in the log lines) and go nowhere. Database statements are traced only
inside a span (a request, a handler, a publish) — the relay's and the timers' idle polls make no traces of their
own — and only while the service's spans go somewhere (:meth:`Tracing.export_to`): a span per statement that no one
receives is a few percent of a consumer's CPU for nothing. Likewise a request's, a handling's and a publish's span is,
until then, a bare span context (:meth:`Tracing.quiet_span`): the ids and trace flags the SDK would have given it, so
what propagates is the same, without the SDK span's cost (some 40 µs each, about 6 % of notify's CPU).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
_TRACERS: dict[str, Tracer] = {}
# Each service's Tracing, by name: whether its spans go anywhere (see instrument_database).
_TRACINGS: dict[str, Tracing] = {}
_STATEMENT_LIMIT = 1000
# A traceparent as the services write it (version 00, lower-case hex, nothing around it); any other form is left to
# the propagator's rules (see _parent).
_CANONICAL = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# The flags a child span takes from its parent's: sampled (ParentBased follows the parent) and random-trace-id.
_INHERITED_FLAGS = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID


class Tracing:
    """One service's tracer provider, built from its settings for the app's lifetime."""

    def __init__(
        self,
        service: str,
        *,
        otlp_endpoint: str | None = None,
        otlp_headers: Mapping[str, str] | None = None,
        sample_ratio: float = 1.0,
    ) -> None:
        self.service = service
        resource = Resource.create({"service.name": f"onestop-{service}", "service.namespace": "onestop"})
        # Roots are sampled by trace id; a child as its parent was (ParentBased's default delegates, which
        # quiet_span relies on).
        self._root_sampler = TraceIdRatioBased(sample_ratio)
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(self._root_sampler))
        # Whether the spans go anywhere: until they do, database statements make none (see instrument_database).
        self.exporting = False
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint, headers=dict(otlp_headers or {}), timeout=10)
            self.export_to(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("onestop")
        _TRACERS[service] = self.tracer
        _TRACINGS[service] = self

    def export_to(self, processor: SpanProcessor) -> None:
        """Send the service's spans, its database statements' with them, to ``processor`` as well."""
        self.provider.add_span_processor(processor)
        self.exporting = True

    def quiet_span(self, parent: SpanContext | None) -> Span:
        """The span the SDK would start under ``parent`` (None: a new trace), when nothing records it: no name, no
        attributes, no timing, only its span context — the parent's trace id and tracestate (or a new random trace
        id), a new span id, and the trace flags the provider's sampler would give it. What propagates from it (log
        lines, ``traceparent`` headers, the outbox envelope) is what a recorded span's would be, so a service that
        exports continues the same traces."""
        ids = self.provider.id_generator
        if parent is None:
            trace_id = ids.generate_trace_id()
            root = self._root_sampler.should_sample(None, trace_id, "")
            flags = TraceFlags.SAMPLED if root.decision is Decision.RECORD_AND_SAMPLE else TraceFlags.DEFAULT
            if ids.is_trace_id_random():
                flags |= TraceFlags.RANDOM_TRACE_ID
            return NonRecordingSpan(SpanContext(trace_id, ids.generate_span_id(), False, TraceFlags(flags)))
        return NonRecordingSpan(
            SpanContext(
                parent.trace_id, ids.generate_span_id(), False,
                TraceFlags(parent.trace_flags & _INHERITED_FLAGS), parent.trace_state,
            )
        )  # fmt: skip

    @classmethod
    def from_settings(cls, service: str, settings: Any) -> Tracing:
        return cls(
            service,
            otlp_endpoint=settings.otlp_endpoint,
            otlp_headers=settings.otlp_headers,
            sample_ratio=settings.trace_sample_ratio,
        )

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        self.provider.shutdown()


def tracer(service: str) -> Tracer:
    """The service's tracer (a no-op one until the service's app built its provider)."""
    return _TRACERS.get(service) or trace.get_tracer("onestop")


# ---------------------------------------------------------------------------------------------- context


def traceparent(context: Context | None = None) -> str | None:
    """The W3C ``traceparent`` of the current span (or of ``context``), None outside any span."""
    return span_traceparent(trace.get_current_span(context))


def span_traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span``: what the propagator injects for it (the tests hold it to that), written
    here directly, for every event emitted and every message published (the propagator's carrier, setter and context
    lookups cost several times the string)."""
    context = span.get_span_context()
    if context == trace.INVALID_SPAN_CONTEXT:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def context_of(value: str | None) -> Context:
    """The context a ``traceparent`` names (an empty one when absent or malformed: a new trace starts)."""
    parent = _parent(value)
    return trace.set_span_in_context(NonRecordingSpan(parent), Context()) if parent is not None else Context()


def _parent(value: str | None) -> SpanContext | None:
    """The (remote) span a ``traceparent`` names, None when absent or malformed. The services' own form is read here
    directly, as the propagator would read it (a quarter of its cost); any other goes through the propagator."""
    if not value:
        return None
    if (match := _CANONICAL.fullmatch(value)) is not None:
        trace_id, span_id = int(match[1], 16), int(match[2], 16)
        if trace_id and span_id:
            return SpanContext(trace_id, span_id, True, TraceFlags(int(match[3], 16)))
    context = trace.get_current_span(PROPAGATOR.extract({TRACEPARENT: value})).get_span_context()
    return context if context.is_valid else None


def _quiet(service: str) -> Tracing | None:
    """The service's Tracing while its spans go nowhere (spans are then only their context: Tracing.quiet_span)."""
    tracing = _TRACINGS.get(service)
    return tracing if tracing is not None and not tracing.exporting else None


@contextlib.contextmanager
def _current(span: Span) -> Iterator[Span]:
    """``span`` as the current span (its ids in log lines and in ``traceparent()``) inside the block."""
    token = context_api.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        context_api.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _failed(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def server_span(service: str, method: str, headers: Mapping[str, str]) -> AbstractContextManager[Span]:
    """An HTTP request's span, continuing the caller's trace when it sent ``traceparent``."""
    if (quiet := _quiet(service)) is not None:
        return _current(quiet.quiet_span(_parent(headers.get(TRACEPARENT))))
    return _server_span(service, method, headers)


@contextlib.contextmanager
def _server_span(service: str, method: str, headers: Mapping[str, str]) -> Iterator[Span]:
    with tracer(service).start_as_current_span(
        method, context=context_of(headers.get(TRACEPARENT)), kind=SpanKind.SERVER,
        attributes={"http.request.method": method}, record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc)
            raise


def consume_span(
    service: str, consumer: str, subject: str, parent: str | None, event_id: str
) -> AbstractContextManager[Span]:
    """Handling one event: a child of the span that published it (its ``traceparent`` header)."""
    if (quiet := _quiet(service)) is not None:
        return _current(quiet.quiet_span(_parent(parent)))
    return _consume_span(service, consumer, subject, parent, event_id)


@contextlib.contextmanager
def _consume_span(service: str, consumer: str, subject: str, parent: str | None, event_id: str) -> Iterator[Span]:
    with tracer(service).start_as_current_span(
        f"process {subject}", context=context_of(parent), kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                    "messaging.consumer.group.name": consumer, "messaging.message.id": event_id},
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc)
            raise


def publish_span(service: str, subject: str, parent: str | None, message_id: str) -> Span:
    """Publishing one event (started now, ended by the caller once JetStream answered): a child of the span that
    emitted it, whose ``traceparent`` the outbox row kept."""
    if (quiet := _quiet(service)) is not None:
        return quiet.quiet_span(_parent(parent))
    return tracer(service).start_span(
        f"publish {subject}", context=context_of(parent), kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                    "messaging.message.id": message_id},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the database


def _exporting(service: str) -> bool:
    tracing = _TRACINGS.get(service)
    return tracing is not None and tracing.exporting


def instrument_database(engine: AsyncEngine, service: str) -> None:
    """A span per statement (the SQL, never its parameters: they hold personal data), inside the current span, while
    the service's spans go somewhere."""
    sync_engine = engine.sync_engine
    system = sync_engine.dialect.name

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if context is None or not _exporting(service) or not trace.get_current_span().get_span_context().is_valid:
            return
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer(service).start_span(
            f"{verb} {system}", kind=SpanKind.CLIENT,
            attributes={"db.system": system, "db.query.text": statement[:_STATEMENT_LIMIT]},
        )  # fmt: skip
        context._onestop_span = span

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        span = getattr(context, "_onestop_span", None)
        if span is not None:
            span.end()
            context._onestop_span = None

    @event.listens_for(sync_engine, "handle_error")
    def _error(exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, "_onestop_span", None) if context is not None else None
        if span is not None:
            _failed(span, exception_context.original_exception)
            span.end()
            context._onestop_span = None


__all__ = [
    "TRACEPARENT", "Span", "Status", "StatusCode", "Tracing", "consume_span", "context_of", "current_ids",
    "instrument_database", "publish_span", "server_span", "span_traceparent", "trace", "traceparent",
    "tracer",
]  # fmt: skip
