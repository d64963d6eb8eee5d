"""Structured logs carry the trace id (of the current span) and the event id; a request continues its caller's trace."""

from __future__ import annotations

import json
import logging

from shared.observability import JsonFormatter, event_id_var
from shared.tracing import Tracing, context_of, traceparent

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _format(record_msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("onestop.test", logging.INFO, __file__, 1, record_msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    parsed: dict[str, object] = json.loads(JsonFormatter("intake").format(record))
    return parsed


def test_a_log_line_carries_service_trace_and_event() -> None:
    tracer = Tracing("intake").tracer
    with tracer.start_as_current_span("handle", context=context_of(CALLER)) as span:
        token = event_id_var.set("evt-123")
        try:
            line = _format("handled", consumer="intake-status")
        finally:
            event_id_var.reset(token)
        own = f"{span.get_span_context().span_id:016x}"
        assert traceparent() == f"00-0af7651916cd43dd8448eb211c80319c-{own}-01"
    assert line["service"] == "intake"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c", "the caller's trace continues"
    assert line["span_id"] == own
    assert line["event_id"] == "evt-123"
    assert line["consumer"] == "intake-status"
    assert line["message"] == "handled"
    outside = _format("outside any event")
    assert "event_id" not in outside
    assert "trace_id" not in outside


def test_malformed_trace_context_starts_a_new_trace() -> None:
    tracer = Tracing("intake").tracer
    for bad in ("00-00000000000000000000000000000000-b7ad6b7169203331-01", "garbage", None):
        with tracer.start_as_current_span("handle", context=context_of(bad)) as span:
            context = span.get_span_context()
            assert context.is_valid
            assert f"{context.trace_id:032x}" != "0" * 32
            assert span.parent is None, bad  # type: ignore[attr-defined]
