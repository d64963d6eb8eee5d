"""Keep what ``onestop run`` started running: a process that dies is restarted with backoff and logged while the
others keep serving; only a process that keeps crashing stops the platform, with the reason.

A crashed service loses nothing (its state change and its events commit together, consumers acknowledge after
commit), so restarting it is always safe; what must not happen is a crash loop that hides a real fault, hence the
limit: ``max_crashes`` exits within ``window`` seconds and the supervisor gives up, naming the process, how it
ended and the end of its log.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class RestartPolicy:
    # The first restart comes after first_delay seconds; each crash within the window doubles it, up to max_delay.
    first_delay: float = 0.5
    max_delay: float = 30.0
    # This many exits within window seconds: the process keeps crashing and the platform stops.
    max_crashes: int = 5
    window: float = 120.0

    def delay(self, recent_crashes: int) -> float:
        return float(min(self.first_delay * 2 ** max(recent_crashes - 1, 0), self.max_delay))


Spawn = Callable[[IO[bytes] | None], "subprocess.Popen[bytes]"]


@dataclass
class ManagedProcess:
    """One process the runner started: how to (re)start it, where it logs, and its crash history."""

    name: str
    spawn: Spawn
    log_path: Path | None
    # How it is asked to stop (PostgreSQL's fast shutdown is SIGINT; everything else SIGTERM).
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)
    restarts: int = 0
    restart_at: float | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._close_log()
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.popen = self.spawn(self._log)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, sig: int | None = None, timeout: float = 15.0) -> None:
        if self.popen is not None:
            terminate(self.popen, self.stop_signal if sig is None else sig, timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 12) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(handle.tell() - 16_384, 0))
            text = handle.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class GaveUp(RuntimeError):
    """A process kept crashing; the message says which, how and where to look."""


class Supervisor:
    """Checks the processes; restarts the ones that died. ``check`` is called every fraction of a second by
    ``onestop run`` (or by a thread, in tests); it raises :class:`GaveUp` when a process keeps crashing."""

    def __init__(
        self,
        processes: Callable[[], Iterable[ManagedProcess]],
        *,
        policy: RestartPolicy,
        report: Callable[[str], None],
        lock: threading.RLock | None = None,
    ) -> None:
        self.processes = processes
        self.policy = policy
        self.report = report
        self.lock = lock or threading.RLock()

    def check(self, now: float | None = None) -> None:
        with self.lock:
            for process in list(self.processes()):
                self._check(process, time.monotonic() if now is None else now)

    def _check(self, process: ManagedProcess, now: float) -> None:
        if process.restart_at is None:
            code = process.exit_code()
            if code is None:
                return
            self._crashed(process, describe_exit(code), now)
            return
        if now < process.restart_at:
            return
        process.restart_at = None
        process.restarts += 1
        try:
            process.start()
        except Exception as exc:  # e.g. the binary vanished: counts as another crash
            self._crashed(process, f"could not start: {exc}", now)
            return
        self.report(f"{process.name} restarted (pid {process.pid}, restart {process.restarts})")

    def _crashed(self, process: ManagedProcess, how: str, now: float) -> None:
        policy = self.policy
        process.crashes = [t for t in process.crashes if now - t < policy.window] + [now]
        recent = len(process.crashes)
        if recent >= policy.max_crashes:
            tail = process.log_tail()
            where = f"; the end of {process.log_path}:\n{_indent(tail)}" if tail else ""
            raise GaveUp(
                f"{process.name} keeps crashing: it ended {recent} times within {policy.window:.0f}s, "
                f"the last time {how}{where}"
            )
        delay = policy.delay(recent)
        process.restart_at = now + delay
        self.report(
            f"{process.name} {how}; restarting in {delay:.1f}s "
            f"({recent} of {policy.max_crashes} crashes allowed within {policy.window:.0f}s)"
        )


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def terminate(process: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
