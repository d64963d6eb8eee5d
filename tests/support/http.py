"""Real HTTP in tests: serve an app with uvicorn on a free port inside the test's event loop (schemathesis runs
against one in tests/support/schemathesis.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` (with its lifespan) on 127.0.0.1 (on ``port``, or on one the kernel picks); yields the base URL.

    Without a port the socket is bound here, before uvicorn is handed it: a port found free and bound later could be
    taken in between by the other test worker (it was, once: uvicorn then exits the process, and the worker with it).
    """
    listening: list[socket.socket] | None = None
    if port is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        listening = [sock]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def run() -> None:
        try:
            await server.serve(sockets=listening)
        except SystemExit as exc:  # uvicorn's answer to a failed start; not to end the test process
            raise RuntimeError(f"uvicorn could not start on port {port} (exit {exc.code})") from None

    task = asyncio.create_task(run())
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
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=30)
        finally:
            for sock in listening or []:
                sock.close()
