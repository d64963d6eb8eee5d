"""Bus benchmark (``make bench``): how fast the outbox relay publishes to JetStream, how fast a consumer applies
events with its inbox on SQLite, and, measured in the same run as the ceiling, raw nats-py async publishing; then the
idle memory of each service.

Floors (issue 2): relay >= 5,000 events/s, consumer >= 1,000 events/s, each service idle < 120 MB RSS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats
from sqlalchemy import select
from sqlalchemy.engine import make_url

from onestop.natsconf import nats_server_binary, single_node_config
from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, free_port, wait_for_port
from shared.bus import MSG_ID_HEADER, stream_name
from tests.support.bus_harness import Harness, effects, withdrawn

N = int(os.environ.get("BENCH_EVENTS", "20000"))
FLOOR_RELAY, FLOOR_CONSUMER, CEILING_RSS_MB = 5_000, 1_000, 120


def start_nats(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (directory / "js").mkdir(parents=True)
    conf = directory / "nats.conf"
    conf.write_text(single_node_config(store_dir=directory / "js", port=port, http_port=None))
    process = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    wait_for_port("127.0.0.1", port, timeout=20, process=process)
    return process, f"nats://127.0.0.1:{port}"


async def raw_publish_rate(url: str, prefix: str, n: int) -> float:
    """The ceiling: nats-py publish_async straight to JetStream, acks gathered, no database."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream_name(prefix), subjects=[f"{prefix}.>"])
    payload = withdrawn().model_dump_json().encode() * 2  # about the size of a real event
    started = time.perf_counter()
    for chunk in range(0, n, 1000):
        futures = [
            await js.publish_async(f"{prefix}.raw", payload, headers={MSG_ID_HEADER: uuid.uuid4().hex})
            for _ in range(min(1000, n - chunk))
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return n / elapsed


class Watcher:
    """Counts rows on its own plain connection, outside any transaction. The platform's sessions begin with
    BEGIN IMMEDIATE (the write lock), so polling through them would make the measured component wait for the
    benchmark's own reads; a WAL reader never blocks a writer."""

    def __init__(self, db_url: str) -> None:
        self.connection = sqlite3.connect(str(make_url(db_url).database), isolation_level=None, check_same_thread=False)

    async def count(self, sql: str) -> int:
        return int((await asyncio.to_thread(lambda: self.connection.execute(sql).fetchone()))[0])

    async def wait_for(self, sql: str, done: Callable[[int], bool]) -> None:
        while not done(await self.count(sql)):
            await asyncio.sleep(0.01)


async def relay_and_consumer(url: str, prefix: str, db_url: str, n: int) -> dict[str, float]:
    h = await Harness(nats_url=url, prefix=prefix, database_url=db_url, batch_size=500, outbox_batch_size=1000).setup()
    watcher = Watcher(db_url)
    try:
        for chunk in range(0, n, 1000):  # the events are committed to the outbox first
            await h.emit([withdrawn() for _ in range(min(1000, n - chunk))])

        started = time.perf_counter()
        await h.start_relay()
        await watcher.wait_for("SELECT count(*) FROM outbox WHERE published_at IS NULL", lambda left: left == 0)
        relay_rate = n / (time.perf_counter() - started)
        await h.relay.stop()

        started = time.perf_counter()
        await h.start_consumer()
        await watcher.wait_for("SELECT count(*) FROM effects", lambda applied: applied >= n)
        consumer_rate = n / (time.perf_counter() - started)
        await h.consumer.stop()  # type: ignore[union-attr]
    finally:
        watcher.connection.close()
        await h.stop()

    # Latency through the whole path (commit -> relay -> JetStream -> consumer -> commit) at a steady load: one event
    # per transaction, the clock read right after each commit.
    h = await Harness(nats_url=url, prefix=prefix + "l", database_url=db_url + "-latency", batch_size=100).setup()
    committed: dict[str, float] = {}
    try:
        await h.start_relay()
        await h.start_consumer()
        rate, seconds = 200, 5  # events per second offered
        for _ in range(rate * seconds):
            [event] = await h.emit([withdrawn()])
            committed[event.id] = time.time()
            await asyncio.sleep(1 / rate)
        watcher = Watcher(db_url + "-latency")
        await watcher.wait_for("SELECT count(*) FROM effects", lambda applied: applied >= rate * seconds)
        watcher.connection.close()
        async with h.db.session() as session:
            rows = (await session.execute(select(effects.c.event_id, effects.c.applied_at))).all()
        latencies = sorted(
            ((a if a.tzinfo else a.replace(tzinfo=dt.UTC)).timestamp() - committed[e]) * 1000 for e, a in rows
        )
    finally:
        await h.stop()
    return {
        "relay": relay_rate,
        "consumer": consumer_rate,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


def idle_rss() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as var:
        platform = Platform(
            PlatformConfig(
                var_dir=Path(var),
                nats_port=free_port(),
                nats_http_port=None,
                ports={s.name: free_port() for s in SERVICES},
            )
        )
        platform.start()
        try:
            time.sleep(5)  # let start-up allocations settle
            out = {}
            for name, process in platform.processes.items():
                status = Path(f"/proc/{process.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
                out[name] = kb / 1024
            return out
        finally:
            platform.stop()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_nats(Path(tmp) / "nats")
        try:
            raw = asyncio.run(raw_publish_rate(url, "rawbench", N))
            db_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            result = asyncio.run(relay_and_consumer(url, "busbench", db_url, N))
        finally:
            process.terminate()
            process.wait()
    rss = idle_rss()
    ok = True
    print(f"\nbus benchmark ({N} events, SQLite, one nats-server, {os.cpu_count()} cores)\n")
    print(f"  {'measure':<44}{'value':>14}  {'floor / ceiling':>18}  ratio to raw")
    print(f"  {'raw nats-py publish_async (baseline)':<44}{raw:>10,.0f} ev/s  {'':>18}  1.00")
    for label, key, floor in (
        ("outbox relay -> JetStream", "relay", FLOOR_RELAY),
        ("consumer applied, inbox on SQLite", "consumer", FLOOR_CONSUMER),
    ):
        value = result[key]
        ok &= value >= floor
        mark = "ok" if value >= floor else "BELOW FLOOR"
        print(f"  {label:<44}{value:>10,.0f} ev/s  {'>= ' + format(floor, ','):>18}  {value / raw:.2f}  {mark}")
    print(f"  {'commit -> applied latency at 200 ev/s, p50':<44}{result['p50_ms']:>11.1f} ms")
    print(f"  {'commit -> applied latency at 200 ev/s, p99':<44}{result['p99_ms']:>11.1f} ms")
    for name, mb in rss.items():
        ok &= mb < CEILING_RSS_MB
        mark = "ok" if mb < CEILING_RSS_MB else "ABOVE CEILING"
        print(f"  {name + ' idle RSS':<44}{mb:>11.1f} MB  {'< ' + str(CEILING_RSS_MB) + ' MB':>18}        {mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
