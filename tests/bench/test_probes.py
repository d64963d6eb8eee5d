"""What the HTTP benchmark reads of the writer lock off a service's metrics: per kind of work, how many transactions
waited for it and held it between two readings, their quantiles, and a consumer's events a transaction."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from bench import probes
from bench.api import LockReading, lock_figures
from bench.probes import events_handled, quantiles, wait_for_quiet, work_histograms
from shared.observability import Metrics


def _reading(metrics: Metrics) -> LockReading:
    text = generate_latest(metrics.registry).decode()
    return LockReading(
        work_histograms(text, "onestop_db_writer_wait_seconds"),
        work_histograms(text, "onestop_db_writer_hold_seconds"),
        events_handled(text),
    )


def test_lock_figures_count_only_what_happened_between_the_readings() -> None:
    metrics = Metrics("intake")
    metrics.db_writer_hold.labels(work="http").observe(4.0)  # before the load: not counted
    metrics.events_handled.labels(consumer="intake-status-view", result="handled").inc(7)
    before = _reading(metrics)
    for _ in range(98):
        metrics.db_writer_hold.labels(work="http").observe(0.004)
        metrics.db_writer_wait.labels(work="http").observe(0.0)
    for _ in range(2):
        metrics.db_writer_hold.labels(work="http").observe(0.4)
        metrics.db_writer_wait.labels(work="http").observe(0.4)
    for _ in range(4):
        metrics.db_writer_hold.labels(work="intake-status-view").observe(0.025)
        metrics.db_writer_wait.labels(work="intake-status-view").observe(0.1)
    metrics.events_handled.labels(consumer="intake-status-view", result="handled").inc(40)
    metrics.events_handled.labels(consumer="intake-status-view", result="duplicate").inc(3)

    figures = lock_figures({"intake": _reading(metrics)}, {"intake": before})["intake"]
    http = figures["hold"]["http"]
    assert http["count"] == 100
    assert 2 <= http["p50_ms"] <= 5, "half of the holds were within the bucket of 4 ms (2 to 5 ms)"
    assert 300 <= http["p99_ms"] <= 500, "the two long holds hold the 99th percentile, within their bucket"
    assert round(http["total_ms"]) == 98 * 4 + 2 * 400
    view = figures["hold"]["intake-status-view"]
    assert (view["count"], view["events"], view["events_per_transaction"]) == (4, 40, 10.0)
    assert "events" not in http, "requests handle no events"
    assert figures["wait"]["http"]["p50_ms"] <= 0.5, "most requests found the lock free"


def test_quantiles_of_a_histogram_with_nothing_new_are_left_out() -> None:
    metrics = Metrics("intake")
    metrics.db_writer_hold.labels(work="outbox-relay").observe(0.01)
    text = generate_latest(metrics.registry).decode()
    same = work_histograms(text, "onestop_db_writer_hold_seconds")
    assert quantiles(same, same) == {}


def _stat(windows: list[float]) -> list[tuple[float, float]]:
    """Cumulative (idle, total) readings whose successive windows were each this idle, 100 jiffies a window."""
    readings, idle, total = [(0.0, 0.0)], 0.0, 0.0
    for share in windows:
        idle, total = idle + 100 * share, total + 100
        readings.append((idle, total))
    return readings


async def test_a_benchmark_begins_once_the_cpus_have_been_idle_for_windows_in_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter(_stat([0.2, 0.95, 0.5, 0.9, 0.92, 0.97, 0.1]))
    monkeypatch.setattr(probes, "cpu_times", lambda: next(readings))
    quiet = await wait_for_quiet(idle=0.9, seconds=3, window=0.001)
    assert quiet.reached
    assert quiet.idle == pytest.approx(0.97)
    assert next(readings)[1] == 700, "six windows read, and not the seventh"


async def test_a_benchmark_waits_no_longer_than_its_timeout_and_says_the_machine_never_went_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = iter(_stat([0.3] * 1000))
    monkeypatch.setattr(probes, "cpu_times", lambda: next(readings))
    quiet = await wait_for_quiet(idle=0.9, seconds=3, timeout=0.05, window=0.001)
    assert not quiet.reached
    assert quiet.waited_s >= 0.05
    assert quiet.idle == pytest.approx(0.3)
