"""How the HTTP benchmark reads the platform (a service's metrics, NATS monitoring) and judges and writes a run:
the issue's floors as pass, miss or n/a, the JSON and the chart. Behaviour only; no speed is measured here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from bench import report
from bench.api import parse_options
from bench.probes import STALL_METRIC, consumer_backlog, count_difference, loop_stall, request_counts
from shared.observability import Metrics


def test_request_counts_by_status_come_from_a_services_metrics() -> None:
    metrics = Metrics("intake")
    for status, n in (("201", 5), ("422", 2)):
        for _ in range(n):
            metrics.http_requests.labels(method="POST", route="/v1/applications", status=status).inc()
    metrics.http_requests.labels(method="GET", route="/v1/applications", status="200").inc()
    metrics.http_requests.labels(method="POST", route="/v1/residents", status="201").inc()
    text = generate_latest(metrics.registry).decode()

    before = request_counts(text, "POST", "/v1/applications")
    assert before == {"201": 5, "422": 2}
    metrics.http_requests.labels(method="POST", route="/v1/applications", status="201").inc(3)
    after = request_counts(generate_latest(metrics.registry).decode(), "POST", "/v1/applications")
    assert count_difference(after, before) == {"201": 3}


def test_the_event_loop_stall_is_read_when_a_service_reports_it_and_none_otherwise() -> None:
    # A process that does not report it (an older build, another program): no figure rather than a made-up one.
    other = CollectorRegistry()
    Gauge("onestop_http_requests_in_flight", "requests", registry=other).set(1)
    assert loop_stall(generate_latest(other).decode()) is None

    # The services report it (shared.observability.LoopMonitor).
    metrics = Metrics("routing")
    metrics.loop_stall_max.set(0.032)
    stall = loop_stall(generate_latest(metrics.registry).decode())
    assert stall is not None
    assert (stall.seconds, stall.metric, stall.kind) == (0.032, STALL_METRIC, "max")
    assert stall.to_json()["ms"] == 32.0


def test_another_stall_gauge_name_is_accepted_and_a_histogram_gives_a_bound() -> None:
    # Another program's names for it (these registries stand for another process's /metrics, not ours).
    registry = CollectorRegistry()
    Gauge("onestop_event_loop_lag_seconds", "lag", ["loop"], registry=registry).labels(loop="main").set(0.2)
    stall = loop_stall(generate_latest(registry).decode())
    assert stall is not None
    assert (stall.seconds, stall.kind) == (0.2, "max")

    registry = CollectorRegistry()
    histogram = Histogram(
        "onestop_event_loop_stall_seconds", "stalls", registry=registry, buckets=(0.01, 0.05, 0.1, 0.5)
    )
    for seconds in (0.004, 0.02, 0.07):
        histogram.observe(seconds)
    stall = loop_stall(generate_latest(registry).decode())
    assert stall is not None
    assert (stall.seconds, stall.kind) == (0.1, "bound"), "every observation is at most 0.1 s"


def test_the_consumers_backlog_is_what_is_pending_plus_unacknowledged_for_the_platforms_consumers() -> None:
    jsz = {
        "account_details": [
            {
                "stream_detail": [
                    {
                        "consumer_detail": [
                            {"name": "intake-status-view", "num_pending": 7, "num_ack_pending": 3},
                            {"name": "routing-cases", "num_pending": 0, "num_ack_pending": 0},
                            {"name": "partner-audit-tool", "num_pending": 900, "num_ack_pending": 0},
                        ]
                    }
                ]
            }
        ]
    }
    assert consumer_backlog(jsz, ["intake", "routing"]) == {"intake-status-view": 10, "routing-cases": 0}
    assert consumer_backlog({"account_details": None}, ["intake"]) == {}


def wrk_result(
    rate: float, p50: float | None, p99: float | None, failed: int = 0, connections: int = 16
) -> dict[str, Any]:
    return {
        "connections": connections,
        "seconds": 10.0,
        "requests": int(rate * 10),
        "rate": rate,
        "latency_ms": {"p50": p50, "p90": p99, "p99": p99, "p99.9": p99, "mean": p50, "max": p99},
        "errors": {"connect": 0, "read": 0, "write": 0, "status": failed, "timeout": 0},
    }


def a_run() -> dict[str, Any]:
    """A run where every floor is met, on SQLite; tests spoil one part at a time."""
    return {
        "generated_at": "2026-01-01T00:00:00+00:00",
        "machine": {"cpus": 2, "load_average_before": [0.4, 0.5, 0.5]},
        "baseline": {"GET /hello": wrk_result(8000, 1.5, 5), "POST /v1/applications": wrk_result(6000, 2.0, 6)},
        "backends": {
            "sqlite": {
                "endpoints": {
                    "GET /healthz (idle)": wrk_result(4000, 3, 10),
                    "POST /v1/applications c1": wrk_result(300, 3, 20, connections=1),
                    "POST /v1/applications c16": wrk_result(700, 15, 80),
                    "GET /v1/applications/{id}": wrk_result(90, 5, 40, connections=2),
                    "GET /v1/queues/{office}": wrk_result(95, 4, 30, connections=2),
                },
                "machine_busy_percent_under_load": 99.4,
                "end_to_end": {
                    "applications": 7000,
                    "seconds": 100.0,
                    "per_second": 70.0,
                    "settled": True,
                    "dead_letters": {"intake": 0, "notify": 0},
                    "last_busy_s": {"notify-residents": 98.0, "intake outbox": 40.0},
                    "sample": {"checked": 25, "complete": 25, "problems": []},
                    "backlog_timeline": [
                        {"t": 0.0, "consumers": 0, "outboxes": 0, "notify": 0},
                        {"t": 5.0, "consumers": 900, "outboxes": 12, "notify": 40},
                    ],
                },
                "services": {
                    "intake": {
                        "loop_stall": {"ms": 12.0, "metric": STALL_METRIC, "kind": "max"},
                        "rss_peak_mb": 120.0,
                        "cpu_percent_under_load": 80.0,
                        "loop_waiting_for_cpu_percent": 45.0,
                    },
                    "notify": {"loop_stall": None, "rss_peak_mb": 130.0, "cpu_percent_under_load": 20.0},
                    "nats-server": {"rss_peak_mb": 300.0, "cpu_percent_under_load": 5.0},
                },
            }
        },
    }


def judged(data: dict[str, Any]) -> dict[str, bool | None]:
    return {f.what: f.passed for f in report.floors(data)}


def test_a_run_meeting_every_floor_passes_and_an_unreported_stall_is_neither_pass_nor_miss() -> None:
    floors = judged(a_run())
    assert floors.pop("notify longest event-loop stall") is None
    assert all(floors.values()), floors
    assert "nats-server RSS under load" not in floors, "the floors are about the services"


def test_each_floor_is_missed_on_its_own() -> None:
    post, status, queue = "POST /v1/applications c16", "GET /v1/applications/{id}", "GET /v1/queues/{office}"
    spoil: list[tuple[str, tuple[str, ...], str, Any]] = [
        ("POST /v1/applications c16 rate", ("endpoints", post), "rate", 599.0),
        ("POST /v1/applications c16 p99", ("endpoints", post, "latency_ms"), "p99", 101.0),
        ("every request answered 2xx", ("endpoints", queue, "errors"), "status", 1),
        ("GET /v1/applications/{id} p99 under load", ("endpoints", status, "latency_ms"), "p99", None),
        ("GET /v1/queues/{office} p99 under load", ("endpoints", queue, "latency_ms"), "p99", 50.5),
        ("end to end, applications settled", ("end_to_end",), "per_second", 49.9),
        ("sampled applications complete", ("end_to_end", "sample"), "complete", 24),
        ("intake longest event-loop stall", ("services", "intake", "loop_stall"), "ms", 51.0),
        ("notify RSS under load", ("services", "notify"), "rss_peak_mb", 151.0),
    ]
    for what, path, key, value in spoil:
        data = a_run()
        part = data["backends"]["sqlite"]
        for step in path:
            part = part[step]
        part[key] = value
        missed = [w for w, passed in judged(data).items() if passed is False]
        assert missed == [what], (what, missed)

    data = a_run()
    data["backends"]["sqlite"]["end_to_end"]["dead_letters"]["notify"] = 1
    assert judged(data)["sampled applications complete"] is False
    data = a_run()
    data["backends"]["sqlite"]["end_to_end"]["settled"] = False
    assert judged(data)["end to end, applications settled"] is False


def test_the_post_floor_is_a_share_of_the_baseline_measured_in_the_same_run() -> None:
    data = a_run()
    data["baseline"]["POST /v1/applications"]["rate"] = 7100.0  # 10 % is now 710 > 700
    assert judged(data)["POST /v1/applications c16 rate"] is False


def test_the_report_is_written_as_json_and_a_png_chart_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = a_run()
    data["backends"]["postgresql"] = copy.deepcopy(data["backends"]["sqlite"])
    data["backends"]["postgresql"]["endpoints"]["GET /v1/queues/{office}"]["latency_ms"]["p99"] = None
    data["floors"] = [f.to_json() for f in report.floors(data)]

    json_path, png_path = report.write(data, tmp_path / "bench")

    written = json.loads(json_path.read_text())
    assert written["backends"]["sqlite"]["end_to_end"]["per_second"] == 70.0
    assert {(f["backend"], f["what"], f["passed"]) for f in written["floors"]} >= {
        ("postgresql", "GET /v1/queues/{office} p99 under load", False),
        ("sqlite", "GET /v1/queues/{office} p99 under load", True),
    }
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme_figures = (tmp_path / "bench" / "api.md").read_text()
    assert "| `POST /v1/applications c16` | postgresql | 16 | 700 | 11.7% | 15.0 ms | 80.0 ms | 0 |" in readme_figures
    assert "| GET /v1/queues/{office} p99 under load | postgresql | - | <= 50 ms | **miss** |" in readme_figures
    assert png_path.stat().st_size > 10_000
    assert readme_figures.startswith("Set-up: one process per service.\n")
    # Of the services that report it (notify here does not), how long the event loop waited for a CPU.
    assert "| intake 12.0 ms, notify n/a | intake 45 % (99.4 %) |" in readme_figures

    report.show(written)
    printed = capsys.readouterr().out
    assert "POST /v1/applications c16" in printed
    assert "last to drain: notify-residents (98 s), intake outbox (40 s)" in printed
    assert "MISS  postgresql  GET /v1/queues/{office} p99 under load" in printed
    assert "n/a   sqlite      notify longest event-loop stall" in printed
    assert "the CPUs were in use during the load: sqlite 99.4 %, postgresql 99.4 %" in printed
    assert "busy" not in printed

    written["backends"]["postgresql"]["load_average_before"] = [6.5, 3.0, 2.0]
    report.show(written)
    assert "the machine was busy with other work" in capsys.readouterr().out.replace("\n", " ")

    # Each part waited for a quiet machine: the load average, which still shows what ended a minute ago, is not
    # taken for load; a part that never found the machine quiet is.
    for part in [written["machine"], *written["backends"].values()]:
        part["quiet_before"] = {"waited_s": 14.2, "idle": 0.95, "reached": True}
    report.show(written)
    printed = capsys.readouterr().out.replace("\n", " ")
    assert (
        "waited for the machine to go quiet (90 % idle for 3 s) before: baseline 14 s, sqlite 14 s, postgresql 14 s"
        in printed
    )
    assert "busy" not in printed
    written["backends"]["sqlite"]["quiet_before"] = {"waited_s": 120.3, "idle": 0.41, "reached": False}
    report.show(written)
    assert "the machine was busy with other work" in capsys.readouterr().out.replace("\n", " ")


def test_a_run_of_split_services_says_so_and_the_option_is_a_flag() -> None:
    data = a_run()
    data["floors"] = [f.to_json() for f in report.floors(data)]
    data["options"] = {"workers": True}
    assert report.markdown(data).startswith(
        "Set-up: each service an api process and a worker running its consumers at a lower CPU priority (--workers)."
    )
    assert parse_options(["--workers"]).workers is True
    assert parse_options([]).workers is False
