"""The runner serves every process on a socket it holds (onestop/serve.py): connections accepted there must be TCP
connections with ``TCP_NODELAY`` set, or each response waits for the client's delayed acknowledgement."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from onestop.serve import inherited_socket, server

NODELAY: list[int] = []
STARTED: list[Started] = []


class RecordingProtocol(HttpToolsProtocol):
    """uvicorn's own HTTP protocol, noting whether each connection it is given has Nagle's algorithm off."""

    def connection_made(self, transport: Any) -> None:
        NODELAY.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        super().connection_made(transport)


class Started:
    """What an app's start makes and keeps for its life (its engine, its bus, its caches), in small."""

    def __init__(self) -> None:
        self.parts = [{"part": n} for n in range(100)]


def hello() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = Started()
        STARTED.append(app.state.started)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def answer() -> dict[str, str]:
        return {"hello": "world"}

    return app


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A listening socket bound as the runner binds one (onestop/runner.py, ``bind_sockets``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def test_an_inherited_descriptor_is_taken_for_the_tcp_socket_it_is(listening: socket.socket) -> None:
    sock = inherited_socket(listening.fileno())
    try:
        assert (sock.family, sock.type, sock.proto) == (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        assert sock.getsockname() == listening.getsockname()
    finally:
        sock.detach()  # the descriptor stays the fixture's


async def test_connections_have_nagle_s_algorithm_off_and_the_app_is_out_of_the_collector_s_sight(
    listening: socket.socket,
) -> None:
    NODELAY.clear()
    # The server's own copy of the descriptor, as a replica inherits one (uvicorn closes it on shutdown).
    descriptor = os.dup(listening.fileno())
    threshold = gc.get_threshold()
    serving, sock = server(f"{__name__}:hello", descriptor, http=RecordingProtocol, log_level="warning")
    task = asyncio.create_task(serving.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not serving.started:
                await asyncio.sleep(0.01)
        host, port = listening.getsockname()
        for _ in range(2):  # two connections, two requests on each (kept alive)
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
                for _ in range(2):
                    response = await client.get("/hello")
                    assert response.json() == {"hello": "world"}
        assert NODELAY == [1, 1]
        # What lives as long as the process (the modules, the app) is out of the collector's sight: a full
        # collection no longer walks it all while requests wait.
        assert gc.get_freeze_count() > 10_000
        # ...and so is what its start made: frozen objects are in no generation a collection walks.
        walked = {id(o) for o in gc.get_objects()}
        assert id(STARTED[-1]) not in walked
        assert id(STARTED[-1].parts[0]) not in walked
        # A batch's worth of short-lived objects (here 5,000 dicts alive at once) sets off no collection: at Python's
        # default of 700 it set off several.
        collections = gc.get_stats()[0]["collections"]
        burst = [{"n": n} for n in range(5_000)]
        assert gc.get_stats()[0]["collections"] == collections
        del burst
    finally:
        gc.unfreeze()  # this is the test's process, not a server's
        gc.set_threshold(*threshold)
        serving.should_exit = True
        await task


def test_a_service_process_loads_no_command_line_of_its_libraries() -> None:
    """What a service imports, with the command lines of httpx and cel kept out: neither they nor what only they need
    (click's terminal UI aside, which uvicorn needs) is loaded, and the libraries still work."""
    probe = """
import sys
from onestop.serve import without_command_lines
without_command_lines()
import services.eligibility.main, services.intake.main, services.notify.main
import cel, httpx
assert cel.compile("age >= 65").execute(cel.Context({"age": 70})) is True
assert httpx.URL("https://example.org/a").path == "/a"
print(sorted(m for m in ("prompt_toolkit", "rich", "typer", "pygments") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
