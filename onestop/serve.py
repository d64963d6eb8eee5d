"""Serve one service (or the portal) on a listening socket the runner holds:
``python -m onestop.serve --factory services.intake.main:create_app --fd 7``.

Why not ``uvicorn --fd``: uvicorn wraps every inherited descriptor as a Unix socket (``socket.fromfd(fd, AF_UNIX,
...)``), so the event loop takes the connections it accepts for Unix ones and never sets ``TCP_NODELAY`` on them.
A response goes out in two writes (its head, then its body); with Nagle's algorithm on, the second waits for the
client's acknowledgement of the first, which Linux delays by up to 40 ms — every request on a kept-alive connection
took that long, whatever the service did (measured: ``GET /healthz`` at 350 requests/s, p50 44 ms). Here the socket
is taken for what it is."""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import types
from typing import Any

import uvicorn


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket behind ``fd``, with its real family, type and protocol (asyncio sets ``TCP_NODELAY`` on
    what a TCP socket accepts, and only then)."""
    return socket.socket(fileno=fd)


def server(factory: str, fd: int, **options: Any) -> tuple[uvicorn.Server, socket.socket]:
    """The uvicorn server for ``factory`` (``module:function`` returning the app) on the socket behind ``fd``, set up
    as the runner serves every process: no access log (each service logs its requests itself), 10 s to finish what
    is in flight on shutdown.

    The app is made here, and then everything alive is moved out of the garbage collector's sight (``gc.freeze``):
    the modules, the app and its settings — about 150,000 objects that live as long as the process. Otherwise every
    full collection walks them all again (170-200 ms here, the loop held meanwhile), and under load one comes every
    so often: the event-loop stalls of 125-206 ms every service reported (``onestop_event_loop_stall_max_seconds``)."""
    without_command_lines()
    config = uvicorn.Config(factory, factory=True, access_log=False, timeout_graceful_shutdown=10, **options)
    config.load()
    _freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
    return _Server(config), inherited_socket(fd)


# Libraries whose package imports its own command line and what that needs, none of which a service runs: httpx
# imports ``httpx._main`` when click and rich are installed (they are, for the onestop CLI and the benchmarks), and cel
# imports ``cel.cli`` (prompt_toolkit, typer, rich). Measured after importing this module and each service's app:
# intake 98.9 MB without this, 95.0 with it; notify 100.2 and 97.2; eligibility 105.5 and 94.4 (its idle RSS had
# reached the 120 MB ceiling of bench/bus.py); routing, which imports neither, 98.7 and 98.6.
COMMAND_LINES = ("httpx._main", "cel.cli")


def without_command_lines() -> None:
    """Keep the libraries' command lines out of a service process: each is left unimportable (``None`` in
    ``sys.modules``: httpx then defines a ``main`` that says its CLI cannot run), or, where the package would not
    import without it (cel), an empty module stands in. Only for modules not imported yet."""
    for name in COMMAND_LINES:
        if name in sys.modules:
            continue
        if name == "cel.cli":
            sys.modules[name] = types.ModuleType(name, "cel's command line, not loaded in a service (onestop.serve)")
        else:
            sys.modules[name] = None  # type: ignore[assignment]


# Container objects allocated (net) between two collections of the youngest generation; Python's default is 700. A
# consumer's batch makes hundreds of thousands (events decoded and validated, ORM rows, SQL compiled), nearly all freed
# by reference counting, yet at 700 the collector ran about 1,300 times and the full collection a dozen times in 300
# applications, each full pass 25-35 ms with the loop held: 4-6 % of each service's CPU (a ``gc.callbacks`` probe under
# bench/pipeline_cpu.py -n 300). At 20,000 it ran under 20 times, full passes twice (at start), and collection took
# about a third of the CPU it did. Objects in cycles wait a little longer to go: a few MB at most.
YOUNG_COLLECTION_EVERY = 20_000


def _freeze() -> None:
    gc.collect()  # what is already garbage goes first: frozen, it would never go
    gc.freeze()


class _Server(uvicorn.Server):
    """Freezes again once the app has started: what its start made (the database engine and pool, the bus and its
    subscriptions, a catalogue compiled, caches filled) lives as long as the process too. Frozen only at import,
    it stayed for every full collection to walk: 25,000-41,000 objects, 15-30 ms of CPU a pass under load (measured
    with a ``gc.callbacks`` probe, bench/pipeline_cpu.py)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            _freeze()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m onestop.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--factory", required=True, help="module:function returning the ASGI app")
    parser.add_argument("--fd", type=int, required=True, help="an inherited, listening TCP socket")
    args = parser.parse_args(argv)
    serving, sock = server(args.factory, args.fd)
    serving.run(sockets=[sock])


if __name__ == "__main__":
    main()
