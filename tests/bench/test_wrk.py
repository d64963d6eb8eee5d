"""The benchmark's wrk scripts, run by the real wrk against a recording HTTP server: what is sent (a fresh
Idempotency-Key per request, each caller's token and body byte for byte) and how wrk's figures are read. Nothing
here measures speed."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench.wrk import REPORT_MARK, Load, Request, WrkError, parse, script


@dataclass
class Recorder:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": body.decode(),
                    }
                )
            status = 422 if self.path == "/refused" else 201
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()


def run(recorder: Recorder, lua: str, tmp_path: Path, connections: int = 2) -> Any:
    async def go() -> Any:
        load = await Load.start(recorder.url, lua, directory=tmp_path, label="t", connections=connections, seconds=1)
        return await load.result()

    return asyncio.run(go())


def test_each_post_carries_a_fresh_idempotency_key_and_its_callers_token_and_body(
    recorder: Recorder, tmp_path: Path
) -> None:
    # Bodies that a naive Lua quoting would break: long-bracket closers, quotes, Hangul, a leading newline.
    bodies = ['{"note": "a]]b ]=] c"}', '{"name": "\\"김민준\\""}', '\n{"x": 1}']
    requests = [
        Request(
            "POST", "/v1/applications", {"Authorization": f"Bearer token-{i}", "Content-Type": "application/json"}, body
        )
        for i, body in enumerate(bodies)
    ]
    result = run(recorder, script(requests, idempotency_prefix="run1"), tmp_path, connections=2)

    seen = recorder.seen
    assert result.requests > 0
    assert result.failed == 0
    assert len(seen) >= result.requests  # wrk counts what completed before it stopped
    keys = [r["headers"].get("Idempotency-Key") for r in seen]
    assert all(k and k.startswith("run1-") for k in keys)
    assert len(set(keys)) == len(keys), "every request has its own key, across threads and connections"
    sent = {(r["headers"]["Authorization"], r["body"]) for r in seen}
    assert sent == {(f"Bearer token-{i}", body) for i, body in enumerate(bodies)}
    assert {r["method"] for r in seen} == {"POST"}
    assert {r["path"] for r in seen} == {"/v1/applications"}


def test_keys_stay_unique_with_several_threads(recorder: Recorder, tmp_path: Path) -> None:
    lua = script([Request("POST", "/v1/applications", {}, "{}")], idempotency_prefix="run2")
    path = tmp_path / "two.lua"
    path.write_text(lua)

    async def go() -> Any:
        load = await Load.start(recorder.url, lua, directory=tmp_path, label="two", connections=4, seconds=1, threads=2)
        return await load.result()

    result = asyncio.run(go())
    keys = [r["headers"]["Idempotency-Key"] for r in recorder.seen]
    assert result.requests > 0
    assert len(set(keys)) == len(keys)
    assert {k.split("-")[1] for k in keys} == {"1", "2"}, "each thread numbers its own keys"


def test_a_get_without_a_prefix_sends_no_idempotency_key(recorder: Recorder, tmp_path: Path) -> None:
    result = run(recorder, script([Request("GET", "/v1/queues/X", {"Authorization": "Bearer s"})]), tmp_path)
    assert result.requests > 0
    assert all("Idempotency-Key" not in r["headers"] for r in recorder.seen)
    assert {(r["method"], r["path"], r["headers"]["Authorization"]) for r in recorder.seen} == {
        ("GET", "/v1/queues/X", "Bearer s")
    }


def test_answers_of_400_and_more_are_counted_as_failed(recorder: Recorder, tmp_path: Path) -> None:
    result = run(recorder, script([Request("GET", "/refused")]), tmp_path)
    assert result.requests > 0
    assert result.errors["status"] == result.requests
    assert result.failed == result.requests


def test_the_report_line_is_read_and_a_missing_one_is_an_error() -> None:
    line = REPORT_MARK + json.dumps(
        {
            "duration_us": 2_000_000,
            "requests": 500,
            "errors": {"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0},
            "latency_ms": {"p50": 1.5, "p90": 3.0, "p99": 9.25, "p99.9": 12.0, "mean": 2.0, "max": 20.0},
        }
    )
    result = parse(f"Running 2s test\n{line}\n", connections=16)
    assert (result.requests, result.seconds, result.rate, result.failed) == (500, 2.0, 250.0, 3)
    assert result.p("p99") == 9.25
    assert result.to_json()["connections"] == 16

    with pytest.raises(WrkError, match="no report line"):
        # What wrk prints when the script fails to load: it falls back to plain GETs of "/" and reports those.
        parse("script.lua:3: '}' expected near ']'\nRequests/sec: 3677.56\n", connections=16)


def test_a_load_that_completed_nothing_has_no_latencies() -> None:
    line = REPORT_MARK + json.dumps(
        {
            "duration_us": 1_000_000,
            "requests": 0,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 2},
            "latency_ms": {"p50": 0, "p90": 0, "p99": 0, "p99.9": 0, "mean": 0, "max": 0},
        }
    )
    result = parse(line, connections=2)
    assert math.isnan(result.p("p99"))
    assert result.to_json()["latency_ms"]["p99"] is None
