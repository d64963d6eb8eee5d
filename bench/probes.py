"""What the HTTP benchmark reads off the running platform besides wrk's figures: the consumers' backlog from NATS
monitoring (``/jsz``), a service's Prometheus metrics (request counts by status, the event-loop stall), and a
process's memory and CPU from ``/proc``, and how long its event loop's thread waited for a CPU."""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The metric a service reports its longest event-loop stall under. Any gauge whose name says "event loop" and
# "stall", "lag" or "block" is accepted (the name the services settle on may vary); a histogram gives an upper bound.
STALL_METRIC = "onestop_event_loop_stall_max_seconds"
_STALL_NAME = re.compile(r"event_loop.*(stall|lag|block)", re.IGNORECASE)


@dataclass(frozen=True)
class Stall:
    seconds: float
    metric: str
    # "max" when the service reports its longest stall; "bound" when only a histogram bucket bounds it.
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {"ms": round(self.seconds * 1000, 1), "metric": self.metric, "kind": self.kind}


def loop_stall(metrics_text: str) -> Stall | None:
    """The longest event-loop stall a service's ``/metrics`` reports, or None when it reports none."""
    found: list[Stall] = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != STALL_METRIC and not _STALL_NAME.search(family.name):
            continue
        if family.type in ("gauge", "untyped"):
            values = [s.value for s in family.samples if not math.isnan(s.value)]
            if values:
                found.append(Stall(max(values), family.name, "max"))
        elif family.type == "histogram":
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
            total = next((count for le, count in buckets if math.isinf(le)), 0.0)
            if total:
                bound = next(le for le, count in buckets if count >= total)
                found.append(Stall(bound, family.name, "bound"))
    exact = [s for s in found if s.metric == STALL_METRIC]
    return (exact or found)[0] if found else None


def request_counts(metrics_text: str, method: str, route: str) -> dict[str, int]:
    """Requests a service answered on one route, by status (``onestop_http_requests_total``)."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "onestop_http_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("method") == method and labels.get("route") == route:
                status = labels.get("status", "?")
                counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def work_counts(metrics_text: str, metric: str) -> dict[str, int]:
    """A counter by the work that ran it (``onestop_db_statements``, ``onestop_db_transactions``: shared/observability.py,
    present when the service counts statements)."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                work = sample.labels.get("work", "?")
                counts[work] = counts.get(work, 0) + int(sample.value)
    return counts


def events_handled(metrics_text: str) -> dict[str, int]:
    """Events each consumer (its durable name) handled, not counting duplicates (``onestop_events_handled``)."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "onestop_events_handled":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("result") == "handled":
                consumer = sample.labels.get("consumer", "?")
                counts[consumer] = counts.get(consumer, 0) + int(sample.value)
    return counts


def count_difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def consumer_backlog(jsz: dict[str, Any], prefixes: Iterable[str]) -> dict[str, int]:
    """Per durable consumer whose name starts with one of ``prefixes`` (the platform's services): what it has still
    to do, ``num_pending`` (not yet delivered) + ``num_ack_pending`` (delivered, not yet acknowledged). Read from
    ``/jsz?accounts=true&consumers=true``."""
    wanted = tuple(f"{p}-" for p in prefixes)
    backlog: dict[str, int] = {}
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            for consumer in stream.get("consumer_detail") or []:
                name = consumer.get("name", "")
                if name.startswith(wanted):
                    backlog[name] = int(consumer.get("num_pending", 0)) + int(consumer.get("num_ack_pending", 0))
    return backlog


_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115 - a /proc read
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - a /proc read
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are plain.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class Scheduling:
    """A thread's time on a CPU and its time runnable but waiting for one, in seconds since it began (the kernel's
    schedstat). Of a service's main thread, which runs its event loop: a request's every step waits as long as the
    loop waits for a CPU, however little work the step is."""

    running_s: float
    waiting_s: float

    def __sub__(self, earlier: Scheduling) -> Scheduling:
        return Scheduling(self.running_s - earlier.running_s, self.waiting_s - earlier.waiting_s)


def scheduling(pid: int) -> Scheduling | None:
    """The main thread's :class:`Scheduling` (its thread id is the process id); None when the process is gone or the
    kernel keeps no schedstat."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", encoding="ascii") as schedstat:
            running_ns, waiting_ns, _ = schedstat.read().split()
    except (OSError, ValueError):
        return None
    return Scheduling(int(running_ns) / 1e9, int(waiting_ns) / 1e9)


@dataclass(frozen=True)
class Histogram:
    """One histogram's cumulative bucket counts by upper bound (``le``), in order, and the sum of what it observed."""

    buckets: list[tuple[float, float]]
    total: float


def work_histograms(metrics_text: str, metric: str) -> dict[str, Histogram]:
    """A histogram by the work that ran it (``onestop_db_writer_wait_seconds``, ``onestop_db_writer_hold_seconds``:
    shared/observability.py, present when the service times the writer lock)."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != metric:
            continue
        for sample in family.samples:
            work = sample.labels.get("work", "?")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(work, {})[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                sums[work] = sample.value
    return {work: Histogram(sorted(b.items()), sums.get(work, 0.0)) for work, b in buckets.items()}


def quantiles(
    after: dict[str, Histogram], before: dict[str, Histogram], qs: tuple[float, ...] = (0.5, 0.99)
) -> dict[str, dict[str, Any]]:
    """Per work, what was observed between two readings of a histogram: how many, their sum, and the quantiles ``qs``
    (in ms, linearly interpolated within a bucket as Prometheus' ``histogram_quantile`` does; beyond the last finite
    bound, that bound)."""
    out: dict[str, dict[str, Any]] = {}
    for work, histogram in sorted(after.items()):
        earlier = before.get(work, Histogram([], 0.0))
        previous = dict(earlier.buckets)
        counts = [(le, count - previous.get(le, 0.0)) for le, count in histogram.buckets]
        total = counts[-1][1] if counts else 0.0
        if total <= 0:
            continue
        row: dict[str, Any] = {"count": int(total), "total_ms": round((histogram.total - earlier.total) * 1000, 1)}
        for q in qs:
            rank, lower, below = q * total, 0.0, 0.0
            value = lower
            for le, count in counts:
                if count >= rank:
                    if not math.isinf(le):
                        value = lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
                    break
                if not math.isinf(le):
                    lower, below, value = le, count, le
            row[f"p{round(q * 100):d}_ms"] = round(value * 1000, 2)
        out[work] = row
    return out


def cpu_times() -> tuple[float, float]:
    """(idle, total) jiffies of all the machine's CPUs since boot, from ``/proc/stat`` (time waiting on the disk counts
    as busy: a benchmark's fsyncs wait behind it)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [float(x) for x in stat.readline().split()[1:]]
    return fields[3], sum(fields[:8])


@dataclass(frozen=True)
class Quiet:
    """How long a benchmark waited for the machine to go quiet, and how idle it was when it began."""

    waited_s: float
    idle: float
    reached: bool

    def to_json(self) -> dict[str, Any]:
        return {"waited_s": round(self.waited_s, 1), "idle": round(self.idle, 3), "reached": self.reached}


async def wait_for_quiet(*, idle: float = 0.9, seconds: int = 3, timeout: float = 120.0, window: float = 1.0) -> Quiet:
    """Wait until the CPUs have been at least ``idle`` idle for ``seconds`` windows in a row (at most
    ``timeout``): what ran before a measurement (a screening of a million residents, a PostgreSQL cluster writing
    out what it was given, a platform stopping) is not measured with it. The 1-minute load average says little
    here: it still shows a load that ended a minute ago."""
    started = time.monotonic()
    calm = 0
    share = 0.0
    idle_before, total_before = cpu_times()
    while True:
        await asyncio.sleep(window)
        idle_now, total_now = cpu_times()
        share = (idle_now - idle_before) / max(total_now - total_before, 1.0)
        idle_before, total_before = idle_now, total_now
        calm = calm + 1 if share >= idle else 0
        waited = time.monotonic() - started
        if calm >= seconds:
            return Quiet(waited, share, True)
        if waited >= timeout:
            return Quiet(waited, share, False)
