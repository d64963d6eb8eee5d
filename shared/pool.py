"""A connection pool that hands its connections out in order of asking.

SQLAlchemy's asyncio pool keeps its idle connections in an ``asyncio.Queue``, which is not fair: a connection given
back is put in the queue and the longest waiter woken, but whoever asks before that waiter runs again takes it, and
the waiter, finding the queue empty, goes to the back of the line. Under load a few requests lost that race time after
time: 16 connections of ``POST /v1/applications`` to intake alone (``bench/post_cpu.py --connections 16``, SQLite's
three write connections) had a median of 45-50 ms and a p99 of 0.55-1.0 s. Here a connection given back goes straight
to the longest waiter, and one who asks while others wait gets in line behind them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

T = TypeVar("T")


class FairQueue(AsyncAdaptedQueue[T]):
    """``AsyncAdaptedQueue`` whose items go to its waiters first come, first served. Items wait in the queue only
    while nobody waits for one, so a ``get`` that finds an item takes it without jumping anyone."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: collections.deque[asyncio.Future[T]] = collections.deque()

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one that timed out or was cancelled is skipped
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        # The pool gives connections back without blocking (a full queue closes the overflow connection instead).
        self.put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        try:
            return self.get_nowait()
        except Empty:
            if not block:
                raise
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_(asyncio.wait_for(waiter, timeout))
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed a connection as it gave up: it goes to the next in line
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise Empty() from exc
            raise


class FairQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` with a :class:`FairQueue` of idle connections: the engines' pool."""

    _queue_class: type[FairQueue[ConnectionPoolEntry]] = FairQueue
