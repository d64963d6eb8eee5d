"""Real HTTP in tests: serve an app with uvicorn on a free port inside the test's event loop, and run schemathesis
(its command line, as a separate process) against a served app."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from onestop.runner import free_port


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` (with its lifespan) on 127.0.0.1; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if server.started:
                break
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


@dataclass
class SchemathesisResult:
    returncode: int
    output: str


async def run_schemathesis(
    base_url: str,
    *,
    headers: Mapping[str, str],
    max_examples: int = 25,
    checks: str = "not_a_server_error",
    extra_args: tuple[str, ...] = (),
    report_dir: Path | None = None,
    config_file: Path | None = None,
) -> SchemathesisResult:
    """Run ``st run`` against ``<base_url>/openapi.json`` (no server error allowed, by default). A schemathesis
    config file (e.g. with real ids for path parameters) goes before the ``run`` command, where the CLI wants it."""
    st = str(Path(sys.executable).parent / "st")
    config = ["--config-file", str(config_file)] if config_file is not None else []
    args = [
        st, *config, "run", f"{base_url}/openapi.json", "--checks", checks, "--max-examples", str(max_examples),
        "--workers", "1", "--phases", "examples,coverage,fuzzing", "--no-color", "--seed", "1",
        "--request-timeout", "10", "--suppress-health-check", "all",
    ]  # fmt: skip
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if report_dir is not None:
        args += ["--report-dir", str(report_dir)]
    args += list(extra_args)
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return SchemathesisResult(process.returncode or 0, out.decode(errors="replace"))
