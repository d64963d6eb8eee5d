"""``onestop screen``: ask the eligibility service for a proactive screening of every consenting resident, run in the
background, and follow it with a progress bar until it ends (``GET /v1/screenings/{id}``), then print its counts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ENDED = frozenset({"completed", "failed", "interrupted"})


@dataclass
class ScreenRequest:
    url: str
    token: str
    programs: list[str] | None = None
    as_of: str | None = None
    wait: bool = True
    interval: float = 0.5
    timeout: float = 24 * 3600.0


def screen(request: ScreenRequest, console: Console) -> int:
    body: dict[str, Any] = {"background": True}
    if request.programs:
        body["programs"] = request.programs
    if request.as_of:
        body["as_of"] = request.as_of
    headers = {"Authorization": f"Bearer {request.token}"}
    with httpx.Client(base_url=request.url, headers=headers, timeout=30) as client:
        try:
            response = client.post("/v1/screenings", json=body)
        except httpx.HTTPError as exc:
            console.print(f"[red]onestop screen: eligibility at {request.url} is unreachable ({type(exc).__name__})")
            return 1
        if response.status_code != 202:
            console.print(f"[red]onestop screen: {response.status_code} {_problem(response)}")
            return 1
        run = response.json()
        console.print(f"screening [bold]{run['screening_id']}[/bold] queued ({len(run['programs'])} programs)")
        if not request.wait:
            return 0
        run = _follow(client, run, request, console)
    _summary(run, console)
    return 0 if run["status"] == "completed" else 1


def _follow(client: httpx.Client, run: dict[str, Any], request: ScreenRequest, console: Console) -> dict[str, Any]:
    deadline = time.monotonic() + request.timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("residents"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(run["status"], total=None)
        while run["status"] not in ENDED and time.monotonic() < deadline:
            time.sleep(request.interval)
            response = client.get(f"/v1/screenings/{run['screening_id']}")
            if response.status_code != 200:
                console.print(f"[yellow]{response.status_code} {_problem(response)}; trying again")
                continue
            run = response.json()
            progress.update(
                task,
                description=run["status"],
                total=run.get("residents_total"),
                completed=run["residents_screened"],
            )
    return run


def _summary(run: dict[str, Any], console: Console) -> None:
    table = Table(title=f"screening {run['screening_id']}: {run['status']}", show_header=False)
    for label, key in (
        ("residents screened", "residents_screened"),
        ("eligible found", "eligible_found"),
        ("already applied", "already_applied"),
        ("already offered", "already_notified"),
        ("new opportunities", "opportunities"),
        ("questions asked (near misses)", "questions"),
        ("duration (ms)", "duration_ms"),
    ):
        table.add_row(label, str(run.get(key)))
    if run.get("error"):
        table.add_row("error", str(run["error"]))
    console.print(table)


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") or body)[:300]
