"""One application is one trace through all four services: intake's request, its database statements, the outbox
relay's publish, and each consumer's handling in eligibility, routing and notify, linked by the W3C traceparent in
HTTP and NATS headers (and, between a transaction and its relay, in the outbox row). Log lines carry the trace id.

The four services run in the test's process, each served over real HTTP on the real nats-server, with the SDK's
in-memory exporter added to each service's tracer provider. While a service exports nothing, its spans are only
span contexts, with the ids and flags the SDK would have given them (tested without the platform, below)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from onestop.registry import BY_NAME
from shared.auth import Role, TokenIssuer
from shared.migrations import upgrade
from shared.observability import JsonFormatter
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import service_settings
from tests.support.waiting import wait_until

ORDER = ("eligibility", "intake", "routing", "notify")  # eligibility first: intake reads its catalogue
JOB_LOSS = {"employment_status": "unemployed", "job_loss_reason": "dismissal", "korean_national": True,
            "earned_income": 1_500_000, "business_income": 0, "public_pension_income": 0,
            "crisis_type": "main_earner_job_loss", "household_assets": 30_000_000}  # fmt: skip
RESIDENT = {"name": "Trace Resident", "birth_date": "1984-02-02", "district_code": "11440",
            "address": "1 Sejong-daero, Seoul", "household": [], "email": "trace@residents.example.kr",
            "phone": "+82-10-5555-0100", "preferred_language": "en", "preferred_channels": ["inbox"]}  # fmt: skip


@contextlib.asynccontextmanager
async def platform_in_process(
    tmp_path: Path, nats_url: str, prefix: str, keys_dir: Path, issuer: TokenIssuer, exporter: InMemorySpanExporter
) -> AsyncIterator[dict[str, str]]:
    urls: dict[str, str] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in ORDER:
            entry = BY_NAME[name]
            others = {f"{other}_url": url for other, url in urls.items()}
            settings = service_settings(
                name, database_url=f"sqlite+aiosqlite:///{tmp_path / name}.db", nats_url=nats_url, prefix=prefix,
                keys_dir=keys_dir, data_dir=tmp_path / name, log_level="INFO", log_json=True,
                service_token=issuer.mint(Role.SERVICE, service=name), **others,
            )  # fmt: skip
            await upgrade(settings.database_url, entry.migrations)
            seeder = entry.seeder()
            if seeder is not None:
                await seeder(settings)
            module = __import__(f"services.{name}.main", fromlist=["create_app"])
            app: FastAPI = module.create_app(settings)
            app.state.tracing.export_to(SimpleSpanProcessor(exporter))
            urls[name] = await stack.enter_async_context(serve(app))
        yield urls


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"]).removeprefix("onestop-")


async def test_one_application_is_one_trace_through_all_four_services(
    tmp_path: Path, nats_server: NatsServer, bus_prefix: str, keys_dir: Path, issuer: TokenIssuer
) -> None:
    exporter = InMemorySpanExporter()
    lines = io.StringIO()
    async with platform_in_process(tmp_path, nats_server.url, bus_prefix, keys_dir, issuer, exporter) as urls:
        # The log lines the services write, captured as they are formatted (configure_logging set the root handler).
        capture = logging.StreamHandler(lines)
        capture.setFormatter(JsonFormatter("test"))
        logging.getLogger().addHandler(capture)
        try:
            resident = uuid.uuid4()
            auth = {"Authorization": f"Bearer {issuer.mint(Role.RESIDENT, resident_id=resident)}"}
            async with httpx.AsyncClient(base_url=urls["intake"], timeout=30) as intake:
                registered = await intake.post("/v1/residents", headers=auth, json=RESIDENT)
                assert registered.status_code == 201, registered.text
                exporter.clear()  # the application's trace only
                application = {"resident_id": str(resident), "life_event": "job_loss", "answers": JOB_LOSS,
                               "channel": "web"}  # fmt: skip
                filed = await intake.post("/v1/applications", headers=auth, json=application)
                assert filed.status_code == 201, filed.text
                trace_id = filed.headers["traceparent"].split("-")[1]

                def spans() -> list[ReadableSpan]:
                    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]

                def through_everyone() -> bool:
                    consumed = {(_service(s), s.name) for s in spans() if s.kind == SpanKind.CONSUMER}
                    return {("eligibility", f"process {bus_prefix}.application.submitted"),
                            ("routing", f"process {bus_prefix}.eligibility.determined"),
                            ("notify", f"process {bus_prefix}.case.routed")} <= consumed  # fmt: skip

                await wait_until(through_everyone, timeout=60)
        finally:
            logging.getLogger().removeHandler(capture)

    ours = spans()
    by_id = {s.context.span_id: s for s in ours}
    assert {_service(s) for s in ours} == {"intake", "eligibility", "routing", "notify"}

    # Intake: the request, its statements inside it, and the publish of application.submitted under the request.
    [request] = [s for s in ours if s.kind == SpanKind.SERVER and s.name == "POST /v1/applications"]
    assert _service(request) == "intake"
    assert request.parent is None or request.parent.trace_id == request.context.trace_id
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 201
    statements = [
        s for s in ours if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == request.context.span_id
    ]
    assert any(
        str((s.attributes or {}).get("db.query.text", "")).startswith("INSERT INTO applications") for s in statements
    )
    for span in statements:
        assert "Trace Resident" not in str(span.attributes), "no parameter values (personal data) in spans"

    def publish(service: str, event_type: str) -> ReadableSpan:
        [span] = [s for s in ours if s.kind == SpanKind.PRODUCER and _service(s) == service
                  and s.name == f"publish {bus_prefix}.{event_type}"]  # fmt: skip
        return span

    def consumed(service: str, event_type: str) -> list[ReadableSpan]:
        return [s for s in ours if s.kind == SpanKind.CONSUMER and _service(s) == service
                and s.name == f"process {bus_prefix}.{event_type}"]  # fmt: skip

    submitted = publish("intake", "application.submitted")
    assert submitted.parent is not None
    assert submitted.parent.span_id == request.context.span_id, "the outbox row kept the request's span"

    # Each hop: the consumer's span is the child of the publish span (the traceparent NATS header), and the next
    # publish is the child of the handling that emitted it.
    # (notify has two consumers of application.submitted: the residents' and the partners'.)
    for service, event_type in (("eligibility", "application.submitted"), ("notify", "application.submitted")):
        handlings = consumed(service, event_type)
        assert handlings, service
        assert all(h.parent is not None and h.parent.span_id == submitted.context.span_id for h in handlings)
    determined = publish("eligibility", "eligibility.determined")
    assert determined.parent is not None
    assert by_id[determined.parent.span_id] in consumed("eligibility", "application.submitted")
    [routing] = [s for s in consumed("routing", "eligibility.determined") if s.parent
                 and s.parent.span_id == determined.context.span_id]  # fmt: skip
    case_routed = [s for s in ours if s.kind == SpanKind.PRODUCER and _service(s) == "routing"
                   and s.name == f"publish {bus_prefix}.case.routed"]  # fmt: skip
    assert case_routed
    assert all(s.parent is not None and s.parent.span_id == routing.context.span_id for s in case_routed)
    told = consumed("notify", "case.routed")
    assert told
    assert all(s.parent is not None and by_id[s.parent.span_id].kind == SpanKind.PRODUCER for s in told)
    # Database statements of a handler are inside its span.
    assert any(s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == routing.context.span_id for s in ours)

    # The log lines of the request carry its trace id.
    logged = [json.loads(line) for line in lines.getvalue().splitlines() if line.startswith("{")]
    [request_line] = [e for e in logged if e.get("message") == "request" and e.get("route") == "/v1/applications"]
    assert request_line["trace_id"] == trace_id
    assert request_line["span_id"] == f"{request.context.span_id:016x}"


def test_otlp_export_is_configured_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from shared.tracing import Tracing

    monkeypatch.setenv("ONESTOP_ROUTING_OTLP_ENDPOINT", "http://collector.example:4318/v1/traces")
    monkeypatch.setenv("ONESTOP_ROUTING_OTLP_HEADERS", '{"authorization": "Bearer t"}')
    monkeypatch.setenv("ONESTOP_ROUTING_TRACE_SAMPLE_RATIO", "0.25")
    settings = BY_NAME["routing"].settings()
    tracing = Tracing.from_settings("routing", settings)
    processors: Any = tracing.provider._active_span_processor._span_processors  # the SDK keeps them here
    [exporting] = processors
    exporter = exporting.span_exporter
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector.example:4318/v1/traces"
    client: Any = exporter._client
    assert client._headers["authorization"] == "Bearer t"
    assert "0.25" in tracing.provider.sampler.get_description()
    quiet = Tracing.from_settings("routing", BY_NAME["routing"].settings(otlp_endpoint=None))
    assert quiet.provider._active_span_processor._span_processors == ()  # spans made, exported nowhere
    assert tracing.exporting
    assert not quiet.exporting


async def test_statements_make_spans_only_while_the_services_spans_go_somewhere(tmp_path: Path) -> None:
    """A span per database statement costs a consumer a few percent of its CPU: made only once something receives
    the service's spans (an OTLP endpoint set, or a processor added through Tracing.export_to)."""
    from sqlalchemy import text

    from shared.db import Database
    from shared.tracing import Tracing, instrument_database

    tracing = Tracing("statements-test")
    seen = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(seen))  # sees the spans, but is not an export
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'statements.db'}")
    instrument_database(db.engine, "statements-test")
    try:

        async def statement_spans(name: str) -> list[ReadableSpan]:
            with tracing.tracer.start_as_current_span(name) as outer:
                async with db.session() as session:
                    await session.execute(text("SELECT 1"))
            return [
                s
                for s in seen.get_finished_spans()
                if s.parent is not None and s.parent.span_id == outer.get_span_context().span_id
            ]

        assert await statement_spans("unexported") == [], "no span for a statement no one receives"
        exported = InMemorySpanExporter()
        tracing.export_to(SimpleSpanProcessor(exported))
        [span] = await statement_spans("exported")
        assert span.kind == SpanKind.CLIENT
        assert (span.attributes or {}).get("db.query.text") == "SELECT 1"
        assert span in exported.get_finished_spans()
    finally:
        await db.dispose()
        tracing.shutdown()


# ---------------------------------------------------------------------------------------------- spans no one receives
# Until a service exports (an OTLP endpoint, or export_to), its request, handling and publish spans are only span
# contexts: what propagates (log lines, traceparent headers, the outbox envelope) must be what the SDK's span's would
# have been, so that one service exporting later still sees whole traces.

trace_ids = st.integers(1, 2**128 - 1)
span_ids = st.integers(1, 2**64 - 1)
trace_flags = st.integers(0, 255)  # sampled (0x01), random-trace-id (0x02), and bits no one defined yet
ratios = st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 1.0)
trace_states = st.sampled_from([TraceState(), TraceState([("vendor", "v1")]), TraceState([("a", "1"), ("b", "2")])])


def _traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def _sdk_span(tracing: Any, context: Any) -> Any:
    """The span the SDK itself starts under ``context`` (processors or not, its ids, flags and tracestate are the
    same): the reference the spans no one receives must match."""
    return tracing.provider.get_tracer("reference").start_span("reference", context=context)


@settings(max_examples=200, deadline=None)
@given(trace_id=trace_ids, span_id=span_ids, flags=trace_flags, ratio=ratios)
def test_a_handling_no_one_receives_continues_its_publishers_trace_unrecorded(
    trace_id: int, span_id: int, flags: int, ratio: float
) -> None:
    from shared.tracing import Tracing, consume_span, context_of, current_ids, traceparent

    tracing = Tracing("quiet-consume", sample_ratio=ratio)
    parent = _traceparent(trace_id, span_id, flags)
    with consume_span("quiet-consume", "quiet-events", "onestop.case.routed", parent, "evt-1") as span:
        assert not span.is_recording(), "no SDK span: nothing would receive it"
        context = span.get_span_context()
        assert context.is_valid
        assert context.trace_id == trace_id, "the publisher's trace continues"
        assert context.span_id != span_id
        assert context.trace_flags.sampled == bool(flags & 0x01), "sampled exactly when the publisher's span was"
        reference = _sdk_span(tracing, context_of(parent)).get_span_context()
        assert (context.trace_flags, context.trace_state, context.is_remote) == (
            reference.trace_flags, reference.trace_state, reference.is_remote,
        )  # fmt: skip
        assert traceparent() == _traceparent(trace_id, context.span_id, reference.trace_flags)
        assert current_ids() == (f"{trace_id:032x}", f"{context.span_id:016x}")
    assert traceparent() is None, "current only inside the block"


@settings(max_examples=200, deadline=None)
@given(trace_id=trace_ids, span_id=span_ids, flags=trace_flags, state=trace_states, remote=st.booleans())
def test_a_span_no_one_receives_has_the_context_the_sdk_would_give_it(
    trace_id: int, span_id: int, flags: int, state: TraceState, remote: bool
) -> None:
    """Any parent, local or remote, with or without a tracestate: the same trace id, flags and tracestate as the
    SDK's child of it, and a new span id."""
    from shared.tracing import Tracing, trace

    tracing = Tracing("quiet-context", sample_ratio=0.5)
    parent = SpanContext(trace_id, span_id, remote, TraceFlags(flags), state)
    span = tracing.quiet_span(parent)
    context = span.get_span_context()
    reference = _sdk_span(tracing, trace.set_span_in_context(NonRecordingSpan(parent))).get_span_context()
    assert not span.is_recording()
    assert context.span_id not in (span_id, 0)
    assert (context.trace_id, context.trace_flags, context.trace_state, context.is_remote) == (
        reference.trace_id, reference.trace_flags, reference.trace_state, reference.is_remote,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(ratio=ratios, parent=st.sampled_from([None, "", "garbage", _traceparent(0, 1, 1), _traceparent(1, 0, 1)]))
def test_a_request_no_one_receives_without_a_valid_caller_starts_a_new_sampled_or_not_trace(
    ratio: float, parent: str | None
) -> None:
    from shared.tracing import Tracing, server_span, traceparent

    tracing = Tracing("quiet-root", sample_ratio=ratio)
    headers = {} if parent is None else {"traceparent": parent}
    with server_span("quiet-root", "GET", headers) as span:
        context = span.get_span_context()
        assert not span.is_recording()
        assert context.is_valid, "a new trace"
        # Sampled as the provider's sampler decides a root with this trace id; the ids are random (W3C level 2 flag).
        decision = tracing.provider.sampler.should_sample(None, context.trace_id, "GET").decision
        sampled = decision is Decision.RECORD_AND_SAMPLE
        assert context.trace_flags == (TraceFlags.SAMPLED if sampled else 0) | TraceFlags.RANDOM_TRACE_ID
        assert traceparent() == _traceparent(context.trace_id, context.span_id, context.trace_flags)
    if ratio in (0.0, 1.0):
        assert context.trace_flags.sampled == (ratio == 1.0)


@given(value=st.from_regex(r"\A[ \t]?[0-9a-fA-F]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?[ \t]?\Z") | st.text())
def test_a_traceparent_is_read_as_the_propagator_reads_it(value: str) -> None:
    from shared.tracing import PROPAGATOR, context_of, trace

    mine = trace.get_current_span(context_of(value)).get_span_context()
    theirs = trace.get_current_span(PROPAGATOR.extract({"traceparent": value})).get_span_context()
    assert mine == theirs


def test_a_publish_no_one_receives_carries_a_child_of_the_emitting_span() -> None:
    from shared.tracing import Tracing, publish_span, trace, traceparent

    Tracing("quiet-publish")
    emitted = _traceparent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x01)
    span = publish_span("quiet-publish", "onestop.case.routed", emitted, "evt-1")
    span.set_status(Status(StatusCode.ERROR, "not acknowledged"))  # what the relay does: nothing to record it in
    span.end()
    context = span.get_span_context()
    assert not span.is_recording()
    assert traceparent(trace.set_span_in_context(span)) == _traceparent(
        0x0AF7651916CD43DD8448EB211C80319C, context.span_id, 0x01
    )
    assert context.span_id != 0xB7AD6B7169203331


def test_once_exported_the_spans_are_recorded_again() -> None:
    from shared.tracing import Tracing, consume_span, publish_span, server_span

    tracing = Tracing("quiet-then-exported")
    parent = _traceparent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x01)
    with consume_span("quiet-then-exported", "events", "onestop.case.routed", parent, "evt-1") as quiet:
        assert not quiet.is_recording()
    exported = InMemorySpanExporter()
    tracing.export_to(SimpleSpanProcessor(exported))
    try:
        with consume_span("quiet-then-exported", "events", "onestop.case.routed", parent, "evt-2") as handling:
            assert handling.is_recording()
            publish_span("quiet-then-exported", "onestop.notice.sent", None, "evt-3").end()
        with server_span("quiet-then-exported", "GET", {"traceparent": parent}) as request:
            assert request.is_recording()
        spans = {s.name: s for s in exported.get_finished_spans()}
        assert set(spans) == {"process onestop.case.routed", "publish onestop.notice.sent", "GET"}
        process = spans["process onestop.case.routed"]
        assert process.kind == SpanKind.CONSUMER
        assert process.parent is not None
        assert process.parent.span_id == 0xB7AD6B7169203331
        assert process.context is not None
        assert process.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert (process.attributes or {})["messaging.message.id"] == "evt-2"
    finally:
        tracing.shutdown()


@given(
    trace_id=st.integers(0, 2**128 - 1) | st.sampled_from([0, 1, 2**128 - 1]),
    span_id=st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**64 - 1]),
    flags=st.integers(0, 255),
    state=st.lists(
        st.tuples(st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z"), st.from_regex(r"\A[a-z0-9]{1,8}\Z")), max_size=2
    ),
)
def test_a_span_s_traceparent_is_what_the_propagator_writes(
    trace_id: int, span_id: int, flags: int, state: list[tuple[str, str]]
) -> None:
    """The ``traceparent`` of the current span (each event emitted carries it) and of a publish span (each message
    the relay publishes carries it) is written directly, as the propagator writes it, invalid spans included."""
    from shared.tracing import PROPAGATOR, span_traceparent, trace, traceparent

    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(flags), TraceState(state)))
    context = trace.set_span_in_context(span)
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=context)
    assert span_traceparent(span) == traceparent(context) == carrier.get("traceparent")


def test_outside_any_span_there_is_no_traceparent_as_for_the_propagator() -> None:
    from shared.tracing import PROPAGATOR, span_traceparent, trace, traceparent

    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    assert traceparent() is None
    assert "traceparent" not in carrier
    assert span_traceparent(trace.INVALID_SPAN) is None
