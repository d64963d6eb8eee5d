"""Waiting on conditions, never on the clock: a loaded 2-core CI machine is slower than any sleep a test would pick."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# Long enough for a machine running the suite beside other work (a clean-clone run beside four benchmarking processes
# missed 30 s on printed letters): a condition that holds costs no more for it.
WAIT_SECONDS = 60.0


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout: float = WAIT_SECONDS, interval: float = 0.05
) -> None:
    """Poll a predicate (plain or async) until it holds; fail the test with a clear message when it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
