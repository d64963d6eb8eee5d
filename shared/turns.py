"""Sharing the event loop. Work made of many small steps that need not wait (a consumer's batch whose handlers find
what they need already loaded, the outbox relay queueing its publishes) would hold the loop from its first step to
its last; every request and event that arrived meanwhile waits that long."""

from __future__ import annotations

import asyncio
import time

# How long such work runs before it lets the loop run whatever else is ready: a request's every step may wait this
# long behind it. A consumer's batch holds SQLite's writer lock all the while, and each turn of the loop it gives away
# (requests parsed, validated, answered) is time the lock is held and nothing written. Yielding after every event, a
# batch held intake's lock 5-20 ms an event under 16 connections of POSTs (bench/api.py); every 5 ms, ~3 ms an event,
# but a lone POST's steps could each wait that long: 2 ms is a compromise, not measured apart.
YIELD_EVERY = 0.002


class Turns:
    """Between two steps: once the work has run ``every`` seconds since the loop last ran anything else, it lets the
    loop run what is ready (a request that arrived meanwhile gets the loop)."""

    def __init__(self, every: float = YIELD_EVERY) -> None:
        self.every = every
        self.since = time.perf_counter()

    async def let_others_run(self) -> None:
        if time.perf_counter() - self.since >= self.every:
            await asyncio.sleep(0)
            self.since = time.perf_counter()
