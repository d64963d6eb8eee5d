"""A flag the processes of one service raise together, through a file: each holds a shared ``flock`` on it while its
flag is up. Any of them can ask whether a flag is up anywhere (one non-blocking call) and wait until none is, in a
thread blocked in the kernel, which wakes it the moment the last one comes down: no polling.

What it tells (shared.sqlite): that a process's request waits for a SQLite file's writer lock, so that another
process sharing the file (a replica) gives way to it as it would to a request of its own."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import weakref


class SharedFlag:
    """One process's side of a flag kept in ``path`` (made if missing). Used from one event loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Two descriptors: a flock belongs to the open file, so asking on the one held shared would convert that lock.
        self._mine = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._probe = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._closing = weakref.finalize(self, _close, self._mine, self._probe)
        self.up = False  # this process's flag
        self._down: asyncio.Future[None] | None = None  # settled by the one thread waiting for every flag to come down

    def hoist(self) -> None:
        if not self.up:
            # Waits only while another process asks (up_anywhere holds the file exclusively for two system calls).
            fcntl.flock(self._mine, fcntl.LOCK_SH)
            self.up = True

    def lower(self) -> None:
        if self.up:
            self.up = False
            fcntl.flock(self._mine, fcntl.LOCK_UN)

    def up_anywhere(self) -> bool:
        """Whether a flag is up, this process's included."""
        try:
            fcntl.flock(self._probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe, fcntl.LOCK_UN)
        return False

    async def until_down(self, timeout: float) -> bool:
        """Wait until no flag is up anywhere, ``timeout`` seconds at most; whether they all came down. One thread
        waits at a time, whoever asks: under a load that never lets up, waits that timed out leave no threads
        behind."""
        if self._down is None or self._down.done():
            loop = asyncio.get_running_loop()
            self._down = loop.create_future()
            threading.Thread(
                target=_when_down, args=(self.path, loop, self._down), name="flag-down", daemon=True
            ).start()
        try:
            await asyncio.wait_for(asyncio.shield(self._down), timeout)
        except TimeoutError:
            return False
        return True


def _when_down(path: str, loop: asyncio.AbstractEventLoop, down: asyncio.Future[None]) -> None:
    """On a thread: wait until nobody holds ``path`` shared (on a descriptor of its own), then settle ``down``."""
    descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    finally:
        os.close(descriptor)  # the lock goes with it
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
        loop.call_soon_threadsafe(settle, down)


def settle(future: asyncio.Future[None]) -> None:
    """Settle a future a thread waited for, from the loop (``call_soon_threadsafe``), unless it is already done."""
    if not future.done():
        future.set_result(None)


def _close(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)
