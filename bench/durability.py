"""Durability benchmark (``make bench``): what JetStream's fsync policy costs, on this machine's disk.

``sync_interval`` unset (the server's default: files are fsynced every two minutes, and written to the operating
system at once) against ``sync_interval: always`` (fsync before each acknowledgement), on one node and on a 3-node
cluster with R3 streams (the production shape; ``onestop run --cluster``). Measured the way the outbox relay
publishes: batches published without waiting, then their acknowledgements gathered; and one event at a time, as a
quiet platform does (the latency an application's first event sees). The README's "Durability" section chose the
defaults from these figures.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats
from nats.js.api import StorageType, StreamConfig

from onestop.runner import Platform, PlatformConfig

N = int(os.environ.get("BENCH_DURABILITY_EVENTS", "5000"))
SINGLES = int(os.environ.get("BENCH_DURABILITY_SINGLES", "300"))
BATCH = 1000
PAYLOAD = b'{"specversion":"1.0","type":"kr.onestop.application.submitted","data":{' + b'"x":"' + b"y" * 900 + b'"}}'


async def measure(url: str, replicas: int) -> dict[str, float]:
    nc = await nats.connect(url.split(","))
    js = nc.jetstream(timeout=30)
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE,
                                     num_replicas=replicas))  # fmt: skip
    started = time.perf_counter()
    for chunk in range(0, N, BATCH):
        futures = [
            await js.publish_async("bench.event", PAYLOAD, headers={"Nats-Msg-Id": uuid.uuid4().hex})
            for _ in range(min(BATCH, N - chunk))
        ]
        await asyncio.gather(*futures)
    batched = N / (time.perf_counter() - started)
    latencies = []
    for _ in range(SINGLES):
        one = time.perf_counter()
        await js.publish("bench.single", PAYLOAD, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        latencies.append((time.perf_counter() - one) * 1000)
    latencies.sort()
    await nc.close()
    return {
        "batched_per_s": batched,
        "single_p50_ms": statistics.median(latencies),
        "single_p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def run(cluster: bool, sync_interval: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as var:
        platform = Platform(PlatformConfig.on_free_ports(Path(var), cluster=cluster, sync_interval=sync_interval,
                                                         nats_auth=False, env_file=None))  # fmt: skip
        (platform.var / "logs").mkdir(parents=True)
        platform.start_nats()
        try:
            return asyncio.run(measure(platform.nats_url, 3 if cluster else 1))
        finally:
            platform.stop_nats()


def main() -> int:
    print(f"JetStream fsync policy: {N} events published in batches of {BATCH}, then {SINGLES} one at a time")
    print(f"{'shape':<22}{'sync_interval':<16}{'batched events/s':>18}{'single p50 ms':>15}{'single p99 ms':>15}")
    for cluster in (False, True):
        for sync in (None, "always"):
            result = run(cluster, sync)
            shape = "3-node cluster, R3" if cluster else "single node"
            print(f"{shape:<22}{sync or 'default (lazy)':<16}{result['batched_per_s']:>18,.0f}"
                  f"{result['single_p50_ms']:>15.2f}{result['single_p99_ms']:>15.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
