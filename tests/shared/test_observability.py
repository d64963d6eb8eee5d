"""Structured logs carry the trace id (of the current span) and the event id; a request continues its caller's trace."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from sqlalchemy import text

from shared import sqlite
from shared.db import Database, background
from shared.observability import JsonFormatter, Metrics, count_statements, event_id_var, time_writer_lock
from shared.tracing import Tracing, context_of, traceparent
from tests.support.waiting import wait_until

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


async def test_statements_and_commits_are_counted_by_the_work_that_ran_them(tmp_path: Path) -> None:
    """What bench/pipeline_cpu.py reads per service: each consumer's statements apart (its worker task's name
    without the worker's number), the relay's and other background tasks' by theirs, requests' as ``http``."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'counted.db'}")
    metrics = Metrics("test")
    count_statements(db.engine, metrics)
    count_statements(db.read_engine, metrics)

    async def consumer() -> None:
        background()
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
            await session.execute(text("SELECT 2"))

    try:
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
        await asyncio.create_task(consumer(), name="intake-status-view-0")
        async with db.read_session() as session:
            await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()

    def sample(name: str, work: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"work": work})

    assert sample("onestop_db_statements_total", "intake-status-view") == 2
    assert sample("onestop_db_statements_total", "http") == 2
    assert sample("onestop_db_transactions_total", "intake-status-view") == 1
    assert sample("onestop_db_transactions_total", "http") == 2


async def test_the_writer_lock_is_timed_by_the_work_that_waited_for_it_and_held_it(tmp_path: Path) -> None:
    """What bench/api.py reads per service: how long requests waited for SQLite's writer lock, and how long each
    consumer held it; a read takes no lock and is not timed."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'timed.db'}")
    metrics = Metrics("test")
    time_writer_lock(str(tmp_path / "timed.db"), metrics)
    held, may_commit = asyncio.Event(), asyncio.Event()

    async def consumer() -> None:
        background()
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
            held.set()
            await may_commit.wait()

    async def request() -> None:
        async with db.session() as session:
            await session.execute(text("SELECT 1"))

    def sample(name: str, work: str) -> float:
        return metrics.registry.get_sample_value(name, {"work": work}) or 0.0

    try:
        batch = asyncio.create_task(consumer(), name="intake-status-view-0")
        await held.wait()
        waiting = asyncio.create_task(request())
        await wait_until(lambda: _is(db.writers_waiting(), 1))
        may_commit.set()
        await asyncio.gather(batch, waiting)
        async with db.read_session() as session:
            await session.execute(text("SELECT 1"))
    finally:
        sqlite.watch(str(tmp_path / "timed.db"), None)
        await db.dispose()

    assert sample("onestop_db_writer_hold_seconds_count", "intake-status-view") == 1
    assert sample("onestop_db_writer_hold_seconds_count", "http") == 1
    waited = sample("onestop_db_writer_wait_seconds_sum", "http")
    assert waited > 0, "the request waited while the consumer held the lock"
    assert sample("onestop_db_writer_hold_seconds_sum", "intake-status-view") >= waited, "held all the while"
    assert sample("onestop_db_writer_wait_seconds_sum", "intake-status-view") == 0, "the consumer found it free"


async def _is(value: int, expected: int) -> bool:
    return value == expected
