"""Structured logs carry the trace id and the event id."""

from __future__ import annotations

import json
import logging

from shared.observability import JsonFormatter, event_id_var, parse_traceparent, start_trace


def _format(record_msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("onestop.test", logging.INFO, __file__, 1, record_msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    parsed: dict[str, object] = json.loads(JsonFormatter("intake").format(record))
    return parsed


def test_a_log_line_carries_service_trace_and_event() -> None:
    trace_id = start_trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    token = event_id_var.set("evt-123")
    try:
        line = _format("handled", consumer="intake-status")
    finally:
        event_id_var.reset(token)
    assert line["service"] == "intake"
    assert line["trace_id"] == trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert line["event_id"] == "evt-123"
    assert line["consumer"] == "intake-status"
    assert line["message"] == "handled"
    assert "event_id" not in _format("outside any event")


def test_malformed_trace_context_starts_a_new_trace() -> None:
    assert parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01") is None
    assert parse_traceparent("garbage") is None
    fresh = start_trace("garbage")
    assert len(fresh) == 32
    assert start_trace(None) != fresh
