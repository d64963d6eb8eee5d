"""The HTTP benchmark's report: the floors of issue 14 judged against one run, the JSON and the PNG chart written
under ``var/bench/``, and the table printed."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Issue 14's floors, on this 2-core machine, `make run`'s default set-up, in the same run.
POST_SHARE_OF_BASELINE = 0.10  # POST /v1/applications >= 10 % of the hello-world POST rate ...
POST_P99_MS = 100.0  # ... with p99 <= 100 ms at 16 connections while the pipeline is busy
GET_P99_MS = 50.0  # GET of a status and of a queue, p99, under the same load
END_TO_END_PER_S = 50.0  # applications settled per second, each complete
LOOP_STALL_MS = 50.0  # no event-loop stall over this
RSS_MB = 150.0  # per service under load

STATUS, QUEUE = "GET /v1/applications/{id}", "GET /v1/queues/{office}"
HELLO_GET, HELLO_POST = "GET /hello", "POST /v1/applications"


@dataclass(frozen=True)
class Floor:
    backend: str
    what: str
    value: str
    limit: str
    # None: not measured (the services do not report it), neither passed nor missed.
    passed: bool | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mark(self) -> str:
        return {True: "pass", False: "MISS", None: "n/a"}[self.passed]


def post_label(backend: dict[str, Any]) -> str:
    """The POST load at the full number of connections (the one the floors are about)."""
    return next(str(k) for k in backend["endpoints"] if k.startswith("POST") and not k.endswith(" c1"))


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.1f} ms"


def _within(value: float | None, limit: float) -> bool:
    """A latency within its limit; no latency at all (nothing completed) is not."""
    return value is not None and not math.isnan(value) and value <= limit


def floors(data: dict[str, Any]) -> list[Floor]:
    out: list[Floor] = []
    hello_rate = data["baseline"][HELLO_POST]["rate"]
    for name, b in data["backends"].items():
        post = b["endpoints"][post_label(b)]
        need = POST_SHARE_OF_BASELINE * hello_rate
        out.append(
            Floor(
                name,
                f"{post_label(b)} rate",
                f"{post['rate']:,.0f} req/s",
                f">= {need:,.0f} (10 % of hello-world {hello_rate:,.0f})",
                post["rate"] >= need,
            )
        )
        out.append(
            Floor(
                name,
                f"{post_label(b)} p99",
                _ms(post["latency_ms"]["p99"]),
                f"<= {POST_P99_MS:g} ms",
                _within(post["latency_ms"]["p99"], POST_P99_MS),
            )
        )
        failed = sum(sum(r["errors"].values()) for k, r in b["endpoints"].items())
        out.append(Floor(name, "every request answered 2xx", f"{failed:,} failed", "0", failed == 0))
        for label in (STATUS, QUEUE):
            p99 = b["endpoints"][label]["latency_ms"]["p99"]
            out.append(
                Floor(name, f"{label} p99 under load", _ms(p99), f"<= {GET_P99_MS:g} ms", _within(p99, GET_P99_MS))
            )
        e2e = b["end_to_end"]
        sample = e2e["sample"]
        complete = e2e["settled"] and sample["checked"] > 0 and sample["complete"] == sample["checked"]
        dead = sum(e2e["dead_letters"].values())
        out.append(
            Floor(
                name,
                "end to end, applications settled",
                f"{e2e['per_second']:,.1f} /s ({e2e['applications']:,} in {e2e['seconds']:,.1f} s)",
                f">= {END_TO_END_PER_S:g} /s",
                e2e["settled"] and e2e["per_second"] >= END_TO_END_PER_S,
            )
        )
        out.append(
            Floor(
                name,
                "sampled applications complete",
                f"{sample['complete']}/{sample['checked']}, {dead} dead letters",
                "all, 0",
                complete and dead == 0,
            )
        )
        for service, s in b["services"].items():
            if service == "nats-server":
                continue
            stall = s.get("loop_stall")
            if stall is None:
                out.append(
                    Floor(
                        name,
                        f"{service} longest event-loop stall",
                        "n/a (not reported)",
                        f"<= {LOOP_STALL_MS:g} ms",
                        None,
                    )
                )
            else:
                shown = ("<= " if stall["kind"] == "bound" else "") + _ms(stall["ms"])
                out.append(
                    Floor(
                        name,
                        f"{service} longest event-loop stall",
                        shown,
                        f"<= {LOOP_STALL_MS:g} ms",
                        stall["ms"] <= LOOP_STALL_MS,
                    )
                )
            out.append(
                Floor(
                    name,
                    f"{service} RSS under load",
                    f"{s['rss_peak_mb']:,.0f} MB",
                    f"<= {RSS_MB:g} MB",
                    s["rss_peak_mb"] <= RSS_MB,
                )
            )
    return out


# ---------------------------------------------------------------------------------------------- files


def write(data: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``api.json``, ``api.png`` and ``api.md`` (the figures as the README shows them) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "api.json", directory / "api.png"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_finite) + "\n")
    chart(data, png_path)
    (directory / "api.md").write_text(markdown(data))
    return json_path, png_path


def set_up(data: dict[str, Any]) -> str:
    """How the services ran: ``make run``'s way, or split as ``onestop run --workers`` splits them."""
    if data.get("options", {}).get("workers"):
        return "each service an api process and a worker running its consumers at a lower CPU priority (--workers)"
    return "one process per service"


def markdown(data: dict[str, Any]) -> str:
    """The run's figures as Markdown tables, for the README."""
    hello_post = data["baseline"][HELLO_POST]["rate"]
    lines = [
        f"Set-up: {set_up(data)}.",
        "",
        "| endpoint | backend | connections | req/s | of hello POST | p50 | p99 | failed |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for endpoint, backend, r in rows(data):
        latency = r["latency_ms"]
        lines.append(
            f"| `{endpoint}` | {backend} | {r['connections']} | {r['rate']:,.0f} | {r['rate'] / hello_post:.1%} | "
            f"{_ms(latency['p50'])} | {_ms(latency['p99'])} | {sum(r['errors'].values()):,} |"
        )
    lines += [
        "",
        "| backend | applications | settled in | per second | sample complete | drained last | RSS peak per service "
        "| longest loop stall | loop waiting for a CPU (CPUs in use) |",
        "|---|--:|--:|--:|--:|---|---|---|---|",
    ]
    for name, b in data["backends"].items():
        e2e = b["end_to_end"]
        services = {k: v for k, v in b["services"].items() if k != "nats-server"}
        rss = ", ".join(f"{k} {v['rss_peak_mb']:,.0f} MB" for k, v in services.items())
        stalls = ", ".join(
            f"{k} {'n/a' if v.get('loop_stall') is None else _ms(v['loop_stall']['ms'])}" for k, v in services.items()
        )
        waiting = ", ".join(
            f"{k} {v['loop_waiting_for_cpu_percent']:,.0f} %"
            for k, v in services.items()
            if v.get("loop_waiting_for_cpu_percent") is not None
        )
        if waiting and "machine_busy_percent_under_load" in b:
            waiting += f" ({b['machine_busy_percent_under_load']:,.1f} %)"
        last = next(iter(e2e.get("last_busy_s") or {}), "-")
        settled = f"{e2e['seconds']:,.1f} s" + ("" if e2e["settled"] else " (not settled)")
        lines.append(
            f"| {name} | {e2e['applications']:,} | {settled} | {e2e['per_second']:,.1f} | "
            f"{e2e['sample']['complete']}/{e2e['sample']['checked']} | {last} | {rss} | {stalls} | {waiting or '-'} |"
        )
    lines += ["", "| floor | backend | measured | limit | |", "|---|---|--:|---|---|"]
    for f in data["floors"]:
        mark = {True: "pass", False: "**miss**", None: "n/a"}[f["passed"]]
        lines.append(f"| {f['what']} | {f['backend']} | {f['value']} | {f['limit']} | {mark} |")
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    raise TypeError(f"not JSON: {value!r}")


def rows(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(endpoint, backend, wrk result) for every load, the baseline first (its endpoints named "hello ...")."""
    out = [(f"hello {label}", "hello-world", r) for label, r in data["baseline"].items()]
    for name, b in data["backends"].items():
        out += [(label, name, r) for label, r in b["endpoints"].items()]
    return out


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(data["backends"])
    series = ["hello-world", *backends]
    colours = {"hello-world": "#9e9e9e", "sqlite": "#1f77b4", "postgresql": "#2ca02c"}
    loads = rows(data)
    labels = list(dict.fromkeys(endpoint for endpoint, _, _ in loads))
    index = {(endpoint, backend): r for endpoint, backend, r in loads}
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(12, 13))
    width = 0.8 / len(series)
    for j, backend in enumerate(series):
        offset = (j - (len(series) - 1) / 2) * width
        present = [(i + offset, index[(label, backend)]) for i, label in enumerate(labels) if (label, backend) in index]
        if not present:
            continue
        xs = [x for x, _ in present]
        p50 = [_nan0(r["latency_ms"]["p50"]) for _, r in present]
        p99 = [_nan0(r["latency_ms"]["p99"]) for _, r in present]
        colour = colours.get(backend)
        top.bar(xs, [r["rate"] for _, r in present], width, label=backend, color=colour)
        middle.bar(xs, p50, width, color=colour, label=f"{backend} p50")
        middle.bar(
            xs,
            [b - a for a, b in zip(p50, p99, strict=True)],
            width,
            bottom=p50,
            color=colour,
            alpha=0.35,
            label=f"{backend} p99",
        )
    need = POST_SHARE_OF_BASELINE * data["baseline"][HELLO_POST]["rate"]
    top.axhline(need, color="red", linestyle="--", linewidth=1, label=f"POST floor: 10 % of hello POST ({need:,.0f}/s)")
    top.set_yscale("log")
    top.set_ylabel("requests per second")
    top.set_title("Throughput per endpoint (the GET probes run at a few connections beside the POST load)")
    middle.set_yscale("log")
    middle.axhline(POST_P99_MS, color="red", linestyle="--", linewidth=1, label=f"POST p99 floor {POST_P99_MS:g} ms")
    middle.axhline(GET_P99_MS, color="orange", linestyle="--", linewidth=1, label=f"GET p99 floor {GET_P99_MS:g} ms")
    middle.set_ylabel("latency, ms (p50 solid, p99 pale)")
    middle.set_title("Latency per endpoint")
    for axis in (top, middle):
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels([t.replace(" /", "\n/", 1).replace(" (", "\n(") for t in labels], fontsize=8)
        axis.legend(fontsize=7, ncol=2)
        axis.grid(axis="y", alpha=0.3)
    for backend in backends:
        e2e = data["backends"][backend]["end_to_end"]
        timeline = e2e.get("backlog_timeline") or []
        bottom.plot(
            [p["t"] for p in timeline],
            [p["consumers"] + p["outboxes"] + p.get("notify", 0) for p in timeline],
            color=colours.get(backend),
            label=f"{backend}: {e2e['applications']:,} applications, {e2e['per_second']:,.1f}/s end to end",
        )
    bottom.set_xlabel("seconds since the first submit")
    bottom.set_ylabel("pending (consumers, outboxes, notify)")
    bottom.set_title(f"Pipeline backlog until settled (floor: {END_TO_END_PER_S:g} applications/s end to end)")
    if backends:
        bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.suptitle(f"OneStop HTTP benchmark, {data['generated_at']}, {data['machine']['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _nan0(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


# ---------------------------------------------------------------------------------------------- the table


def _show_writer_lock(console: Any, data: dict[str, Any]) -> None:
    """Intake's SQLite writer lock during each POST load: how long each kind of work waited for it and held it
    (present when the services time it, shared.settings.database_time_writer_lock)."""
    from rich.table import Table

    for name, b in data["backends"].items():
        for load, services in (b.get("writer_lock") or {}).items():
            figures = services.get("intake")
            if not figures:
                continue
            table = Table(title=f"intake's writer lock on {name}, {load}", title_justify="left")
            columns = (
                "work",
                "transactions",
                "events each",
                "wait p50",
                "wait p99",
                "hold p50",
                "hold p99",
                "held in all",
            )
            for column in columns:
                table.add_column(column, justify="left" if column == "work" else "right")
            for work, hold in figures["hold"].items():
                wait = figures["wait"].get(work, {})
                each = hold.get("events_per_transaction")
                table.add_row(
                    work,
                    f"{hold['count']:,}",
                    "" if each is None else f"{each:,.1f}",
                    _ms(wait.get("p50_ms")),
                    _ms(wait.get("p99_ms")),
                    _ms(hold["p50_ms"]),
                    _ms(hold["p99_ms"]),
                    f"{hold['total_ms'] / 1000:,.2f} s",
                )
            console.print(table)


def show(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    hello_post = data["baseline"][HELLO_POST]["rate"]
    table = Table(title=f"HTTP path (wrk); {set_up(data)}", title_justify="left")
    for column in ("endpoint", "backend", "conns", "req/s", "vs hello POST", "p50", "p99", "max", "failed"):
        table.add_column(column, justify="left" if column in ("endpoint", "backend") else "right")
    for endpoint, backend, r in rows(data):
        table.add_row(
            endpoint,
            backend,
            str(r["connections"]),
            f"{r['rate']:,.0f}",
            f"{r['rate'] / hello_post:.1%}",
            _ms(r["latency_ms"]["p50"]),
            _ms(r["latency_ms"]["p99"]),
            _ms(r["latency_ms"]["max"]),
            f"{sum(r['errors'].values()):,}",
        )
    console.print(table)

    table = Table(title="End to end and per service", title_justify="left")
    for column in (
        "backend",
        "applications",
        "settled in",
        "per second",
        "sample",
        "service",
        "RSS peak",
        "CPU under load",
        "loop waiting for a CPU",
        "longest loop stall",
    ):
        table.add_column(column, justify="left" if column in ("backend", "service") else "right")
    for name, b in data["backends"].items():
        e2e = b["end_to_end"]
        first = True
        for service, s in b["services"].items():
            stall = s.get("loop_stall")
            table.add_row(
                name if first else "",
                f"{e2e['applications']:,}" if first else "",
                (f"{e2e['seconds']:,.1f} s" + ("" if e2e["settled"] else " (not settled)")) if first else "",
                f"{e2e['per_second']:,.1f}" if first else "",
                f"{e2e['sample']['complete']}/{e2e['sample']['checked']}" if first else "",
                service,
                f"{s['rss_peak_mb']:,.0f} MB",
                f"{s['cpu_percent_under_load']:,.0f} %",
                "n/a" if (waiting := s.get("loop_waiting_for_cpu_percent")) is None else f"{waiting:,.0f} %",
                "n/a" if stall is None else ("<= " if stall["kind"] == "bound" else "") + _ms(stall["ms"]),
            )
            first = False
    console.print(table)
    in_use = [(n, b["machine_busy_percent_under_load"]) for n, b in data["backends"].items()
              if "machine_busy_percent_under_load" in b]  # fmt: skip
    if in_use:
        # Beside each service's time waiting for a CPU: whether the CPUs had any to give.
        console.print("  the CPUs were in use during the load: " + ", ".join(f"{n} {p:,.1f} %" for n, p in in_use))
    for name, b in data["backends"].items():
        last = list((b["end_to_end"].get("last_busy_s") or {}).items())[:3]
        if last:
            console.print(f"  {name}, last to drain: " + ", ".join(f"{part} ({t:,.0f} s)" for part, t in last))
    _show_writer_lock(console, data)
    problems = [(n, p) for n, b in data["backends"].items() for p in b["end_to_end"]["sample"]["problems"]]
    for name, problem in problems:
        console.print(f"  [red]{name}: {problem}[/red]")

    # Load on the machine from anything else makes every figure lower than the machine can do: each part waits for
    # the machine to go quiet first (bench.probes.wait_for_quiet); say how long, and say so when it never did. A run
    # recorded before that wait was measured is judged by the load average alone.
    cpus = data["machine"]["cpus"] or 1
    parts = [("baseline", data["machine"]), *data["backends"].items()]
    waits = [(n, p["quiet_before"]) for n, p in parts if p.get("quiet_before")]
    if waits:
        console.print(
            "  waited for the machine to go quiet (90 % idle for 3 s) before: "
            + ", ".join(f"{n} {q['waited_s']:,.0f} s" for n, q in waits)
        )
    loads = [(n, p.get("load_average_before", [0.0])[0]) for n, p in parts]
    busy = (
        any(not q["reached"] for _, q in waits) if len(waits) == len(parts) else any(load > cpus for _, load in loads)
    )
    if busy:
        shown = ", ".join(f"{n} {load:.1f}" for n, load in loads)
        console.print(
            f"  [yellow]the machine was busy with other work (1-minute load average before: {shown}; {cpus} cores): "
            "the figures are lower than on a quiet machine[/yellow]"
        )
    console.print("\nFloors (issue 14):")
    for f in data["floors"]:
        mark = {True: "[green]pass[/green]", False: "[red]MISS[/red]", None: "[yellow]n/a [/yellow]"}[f["passed"]]
        console.print(f"  {mark}  {f['backend']:<11} {f['what']:<44} {f['value']:>26}  {f['limit']}")
