"""Intake's CPU per ``POST /v1/applications`` with the rest of the pipeline frozen: the submit path's own cost.

The platform started as ``make run`` starts it (``bench/api.py``'s runner and warm-up), then eligibility, routing,
notify and the portal stopped with SIGSTOP (and let go again with SIGCONT before the platform stops), so that the
application-shaped POSTs of wrk (as ``bench/api.py`` sends them) are all intake does besides relaying its events.
Each process's CPU time is read from ``/proc`` before and after the load. Unlike ``bench/pipeline_cpu.py`` the figure
hardly moves with the machine's load: nothing else of the platform competes with intake for the cores.

    .venv/bin/python bench/post_cpu.py [--connections 4] [--seconds 8] [--backend postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import Options, Processes, post_requests, running

# What keeps running: the service measured and the NATS server its relay publishes to.
RUNNING = ("intake", "nats-server")


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def measure(backend_name: str, connections: int, seconds: float) -> dict[str, Any]:
    options = Options(residents=200, warmup=4)
    with tempfile.TemporaryDirectory(prefix="onestop-post-cpu-") as tmp:
        async with running(options, backend_name, Path(tmp)) as run:
            await run.prepare()
            processes = Processes(run.platform)
            others = [pid for name, pid in processes.pids.items() if name not in RUNNING]
            with frozen(others):
                posts = post_requests(run.callers, run.answers)
                before = processes.cpu()
                load = await run.load(run.intake, posts, "post", connections, seconds, creates=True)
                result = await load.result()
                after = processes.cpu()
            requests = max(result.requests, 1)
            return {
                "backend": backend_name,
                "connections": connections,
                "requests": result.requests,
                "failed": result.failed,
                "rate": round(result.rate, 1),
                "latency_ms": result.to_json()["latency_ms"],
                "cpu_ms_per_post": {k: round(1000 * (after[k] - before[k]) / requests, 2) for k in RUNNING},
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.backend, args.connections, args.seconds)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
