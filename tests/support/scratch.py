"""Where the suite keeps its scratch files: in memory when the machine has room there.

Every test makes databases (a SQLite file, a PostgreSQL database copied from a template), a JetStream store and
the platform's var directory, then throws them away. On a disk each of those waits for writes nobody will read
back: a PostgreSQL ``CREATE DATABASE`` took 150 ms there against 55 ms in memory (2026-12-02, this machine). The
tests assert the same behaviour either way; what a disk adds (fsync) is nothing the suite can observe, as its kills
are of processes, not of machines.

Loaded as a pytest plugin (``-p tests.support.scratch`` in pyproject.toml's addopts), so that the choice is made
before any conftest is imported and works out where its temporary files go, and only for the suite: a benchmark
that borrows the suite's helpers measures the disk the platform runs on."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MEMORY = Path("/dev/shm")
# Room the suite needs there: two workers' PostgreSQL clusters (their WAL bounded, each test's database dropped
# after it), their JetStream stores and pytest's last three runs, with a margin.
NEEDED_BYTES = 4 * 2**30


def keep_scratch_in_memory() -> Path | None:
    """Point ``TMPDIR`` (this process's, and so its children's: workers, servers, browsers) at memory, unless it is
    set already or memory lacks the room; returns the directory chosen, if any."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        free = shutil.disk_usage(MEMORY).free
    except OSError:
        return None
    if free < NEEDED_BYTES or not os.access(MEMORY, os.W_OK | os.X_OK):
        return None
    os.environ["TMPDIR"] = str(MEMORY)
    tempfile.tempdir = None  # read TMPDIR again
    return MEMORY


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    keep_scratch_in_memory()
