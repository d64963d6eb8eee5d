"""CPU-seconds per application, per service: what the pipeline costs, less sensitive to a busy machine than wall time.

The platform started as ``make run`` starts it (through ``bench/api.py``'s runner and warm-up), then N applications
submitted at a few connections (a Python client: the HTTP path is measured by ``bench/api.py`` with wrk; here only
what each service spends matters), the pipeline left to settle (nothing pending in any consumer, outbox or notify's
queue), and each process's CPU time read from ``/proc`` before and after. Each service's idle rate (its timers, a
few seconds measured first) is taken off, so a slower settle does not count as work. Also printed: applications per
second from the first submit until settled, the submissions' p50/p99, the longest event-loop stall per service, what
of each service's CPU its event loop's thread used (the kernel's schedstat of its main thread), and the SQL
statements and transactions per application of each service, by the work that ran them (each consumer, the outbox
relay, ``http``): the services count them here (``database_count_statements``), a listener per statement that costs
each about a microsecond of CPU.

    .venv/bin/python bench/pipeline_cpu.py -n 150 [--backend postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import LIFE_EVENT, SERVICE_NAMES, Options, Processes, Run, running
from bench.probes import count_difference, events_handled, loop_stall, work_counts
from onestop.runner import Platform

IDLE_SECONDS = 8.0


async def measure(applications: int, backend_name: str, connections: int) -> dict[str, Any]:
    options = Options(residents=max(50, min(applications, 200)), warmup=4)
    with tempfile.TemporaryDirectory(prefix="onestop-pipeline-cpu-") as tmp:
        async with running(options, backend_name, Path(tmp), settings={"database_count_statements": True}) as run:
            return await _measure(run, run.platform, applications, connections, backend_name)


async def _measure(
    run: Run, platform: Platform, applications: int, connections: int, backend_name: str
) -> dict[str, Any]:
    await run.prepare()
    processes = Processes(platform)
    load_before = [round(x, 2) for x in os.getloadavg()]
    idle_from, loops_idle_from = processes.cpu(), _loop_cpu(processes)
    await asyncio.sleep(IDLE_SECONDS)
    idle = {k: (v - idle_from[k]) / IDLE_SECONDS for k, v in processes.cpu().items()}
    loops_idle = {k: (v - loops_idle_from[k]) / IDLE_SECONDS for k, v in _loop_cpu(processes).items()}

    gate = asyncio.Semaphore(connections)
    latencies: list[float] = []

    async def submit(i: int) -> None:
        caller = run.callers[i % len(run.callers)]
        body = {"resident_id": str(caller.resident_id), "life_event": LIFE_EVENT, "answers": run.answers}
        headers = caller.headers | {"Idempotency-Key": uuid.uuid4().hex}
        async with gate:
            started = time.monotonic()
            response = await run.client.post(f"{run.intake}/v1/applications", headers=headers, json=body)
            latencies.append(time.monotonic() - started)
        response.raise_for_status()

    counted = {s: await run.metrics(s) for s in SERVICE_NAMES}
    before, loops_before, t0 = processes.cpu(), _loop_cpu(processes), time.monotonic()
    await asyncio.gather(*(submit(i) for i in range(applications)))
    submitted = time.monotonic() - t0
    settled_at = await run.pipeline.settle(since=t0, deadline=t0 + 600)
    seconds = (settled_at if settled_at is not None else time.monotonic()) - t0
    spent = {k: v - before[k] for k, v in processes.cpu().items()}
    loops_spent = {k: v - loops_before[k] for k, v in _loop_cpu(processes).items()}
    latencies.sort()
    stalls = {}
    for service in SERVICE_NAMES:
        stall = loop_stall(await run.metrics(service))
        stalls[service] = stall.to_json()["ms"] if stall else None
    per_application = {k: round((v - idle[k] * seconds) / applications, 4) for k, v in spent.items()}
    loops_per_application = {k: round((v - loops_idle[k] * seconds) / applications, 4) for k, v in loops_spent.items()}
    statements: dict[str, dict[str, float]] = {}
    transactions: dict[str, dict[str, float]] = {}
    events: dict[str, float] = {}
    for service in SERVICE_NAMES:
        text = await run.metrics(service)
        handled = count_difference(events_handled(text), events_handled(counted[service]))
        events |= {consumer: round(n / applications, 2) for consumer, n in handled.items()}
        for metric, into in (("onestop_db_statements", statements), ("onestop_db_transactions", transactions)):
            works = count_difference(work_counts(text, metric), work_counts(counted[service], metric))
            into[service] = {w: round(n / applications, 2) for w, n in works.items()} | {
                "total": round(sum(works.values()) / applications, 2)
            }
    return {
        "backend": backend_name,
        "applications": applications,
        "settled": settled_at is not None,
        "cpu_s_per_application": per_application | {"total": round(sum(per_application.values()), 4)},
        # Of each service's, what its event loop's thread used: the rest is its other threads' (SQLite's checkpoints,
        # work handed to a thread such as notify's Maildir writes).
        "event_loop_thread_cpu_s_per_application": loops_per_application,
        "statements_per_application": statements | {"total": round(sum(v["total"] for v in statements.values()), 2)},
        "transactions_per_application": transactions
        | {"total": round(sum(v["total"] for v in transactions.values()), 2)},
        "events_per_application": events | {"total": round(sum(events.values()), 2)},
        "applications_per_s": round(applications / seconds, 1),
        "submitted_in_s": round(submitted, 2),
        "post_ms": {
            "p50": round(1000 * latencies[len(latencies) // 2], 1),
            "p99": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        },
        "longest_loop_stall_ms": stalls,
        "dead_letters": await run.databases.dead_letters(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def _loop_cpu(processes: Processes) -> dict[str, float]:
    """Each service's event-loop thread's CPU time so far (its main thread's, from the kernel's schedstat)."""
    return {name: s.running_s if s is not None else 0.0 for name, s in processes.scheduling().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", "--applications", type=int, default=150)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--connections", type=int, default=4, help="submissions at once")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.applications, args.backend, args.connections)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
