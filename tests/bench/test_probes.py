"""What the HTTP benchmark reads of the writer lock off a service's metrics (per kind of work, how many transactions
waited for it and held it between two readings, their quantiles, and a consumer's events a transaction), of the
machine's idleness, and of a process's event-loop thread waiting for a CPU."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import generate_latest

from bench import probes
from bench.api import LockReading, lock_figures
from bench.probes import Scheduling, events_handled, quantiles, scheduling, wait_for_quiet, work_histograms
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


_SPIN = """
import os, time
os.sched_setaffinity(0, {0})
while time.process_time() < 0.5:
    pass
time.sleep(30)
"""


async def test_two_processes_ready_to_run_on_one_cpu_are_each_seen_running_and_waiting_for_it() -> None:
    """The kernel's own account: each of two processes that share one CPU spends about as long waiting for it as
    running on it; the benchmark reads a service's event-loop thread the same way."""
    spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2)]
    try:
        readings: list[Scheduling | None] = []
        for _ in range(300):
            readings = [scheduling(p.pid) for p in spinners]
            if all(r is not None and r.running_s >= 0.5 for r in readings):
                break
            await asyncio.sleep(0.05)
        assert all(r is not None and r.running_s >= 0.5 for r in readings), readings
        waited = sum(r.waiting_s for r in readings if r is not None)
        assert waited >= 0.3, readings
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert scheduling(spinners[0].pid) is None, "a process gone has no schedstat"


def test_the_difference_of_two_readings_is_what_happened_between_them() -> None:
    earlier, later = Scheduling(1.25, 0.5), Scheduling(3.0, 2.75)
    assert later - earlier == Scheduling(1.75, 2.25)
