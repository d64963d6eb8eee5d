"""Sharing the event loop. Work made of many small steps that need not wait (a consumer's batch whose handlers find
what they need already loaded, the outbox relay queueing its publishes, SQLite statements run on the loop's thread:
shared.sqlite) would hold the loop from its first step to its last; every request and event that arrived meanwhile
waits that long.

Whether it is time to let others run is a property of the loop, not of one piece of work: a consumer's batch whose
statements each finish without waiting never gives the loop back, and neither the batch's own count nor the
statements' can tell how long the loop has been held by the two together. :func:`turn_due` asks the loop: one
callback kept scheduled on it (:class:`_LoopClock`) notes when the loop last ran its ready callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref

# How long such work runs before it lets the loop run whatever else is ready: a request's every step may wait this
# long behind it. A consumer's batch holds SQLite's writer lock all the while, and each turn of the loop it gives away
# (requests parsed, validated, answered) is time the lock is held and nothing written. Yielding after every event, a
# batch held intake's lock 5-20 ms an event under 16 connections of POSTs (bench/api.py); every 5 ms, ~3 ms an event,
# but a lone POST's steps could each wait that long: 2 ms is a compromise, not measured apart.
YIELD_EVERY = 0.002


class _LoopClock:
    """When one event loop last ran its ready callbacks.

    A callback scheduled with ``call_soon`` runs at the loop's next turn; it notes the time and schedules itself
    again, so there is always one waiting. While some work holds the loop (runs without awaiting anything that
    waits) the callback cannot run, and the time since it last did is how long the loop has been held. It costs
    one callback per turn of the loop, and only while someone asks (:meth:`held_for`): it stops rescheduling after
    a turn in which nobody asked, so an idle loop is not kept spinning."""

    __slots__ = ("__weakref__", "_asked", "_loop", "_scheduled", "ran_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.ran_at = time.perf_counter()
        self._scheduled = False
        self._asked = False

    def _tick(self) -> None:
        self.ran_at = time.perf_counter()
        if self._asked and not self._loop.is_closed():
            self._asked = False
            self._loop.call_soon(self._tick)
        else:
            self._scheduled = False

    def held_for(self) -> float:
        """Seconds since the loop last ran its ready callbacks (0 when nobody asked before this turn)."""
        now = time.perf_counter()
        self._asked = True
        if not self._scheduled:
            # Nobody asked since the loop's last turn: the clock was stopped. Start it from now.
            self._scheduled = True
            self.ran_at = now
            self._loop.call_soon(self._tick)
        return now - self.ran_at


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClock] = weakref.WeakKeyDictionary()


def held_for() -> float:
    """How long the running loop has been held by the work running now (see :class:`_LoopClock`)."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = _LoopClock(loop)
    return clock.held_for()


def turn_due(every: float = YIELD_EVERY) -> bool:
    """Whether the work running has held the loop ``every`` seconds or more: time to ``await asyncio.sleep(0)``."""
    return held_for() >= every


class Turns:
    """Between two steps: once the loop has been held ``every`` seconds (by this work and any other that ran without
    a break with it, such as SQLite statements on the loop's thread), it lets the loop run what is ready (a request
    that arrived meanwhile gets the loop)."""

    def __init__(self, every: float = YIELD_EVERY) -> None:
        self.every = every

    async def let_others_run(self) -> None:
        if turn_due(self.every):
            await asyncio.sleep(0)


class Foreground:
    """The requests a process is serving, which its background work (consumers' batches) gives way to.

    A consumer's batch shares the event loop with the process's requests; yielding every 2 ms (:class:`Turns`) only
    lets a request take its next step after each of the batch's slices, so a request of ten steps waited for ten
    slices, and under a steady load of requests the consumers took their share of the process's CPU while the
    requests queued behind them. Here background work waits, before each transaction, while any request is being
    served: for the last one to end, or ``patience`` seconds at most, so that consumers still go on under a load that
    never lets up.

    Counted by the service's request middleware (:meth:`enter`, :meth:`leave`); one per app, used on its loop only."""

    __slots__ = ("_waiters", "patience", "requests")

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.requests = 0
        self._waiters: list[asyncio.Future[None]] = []

    def enter(self) -> None:
        self.requests += 1

    def leave(self) -> None:
        self.requests -= 1
        if self.requests == 0 and self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def give_way(self) -> None:
        """Let the loop run what is ready; then, while requests are being served, wait for them to end, ``patience``
        seconds at most."""
        await asyncio.sleep(0)
        if self.requests == 0 or self.patience <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.patience):
                await waiter
        except TimeoutError:
            pass
        finally:
            # A wait that ended on the last request's end was taken off the list then; one that timed out (or was
            # cancelled) is still on it, and under a load that never lets up nothing else would take it off.
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
