"""One application is one trace through all four services: intake's request, its database statements, the outbox
relay's publish, and each consumer's handling in eligibility, routing and notify, linked by the W3C traceparent in
HTTP and NATS headers (and, between a transaction and its relay, in the outbox row). Log lines carry the trace id.

The four services run in the test's process, each served over real HTTP on the real nats-server, with the SDK's
in-memory exporter added to each service's tracer provider."""

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
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

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
