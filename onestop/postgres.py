"""A PostgreSQL server this machine runs for OneStop: Debian's binaries (``scripts/ensure-postgres.sh`` installs
them), a cluster in a directory of ours, one port, one database per service.

``onestop run --postgres`` keeps its cluster under ``<var>/postgres`` (it survives restarts); the test suite makes a
throwaway one (``tests/support/postgres.py``). Both run the server in the foreground as a child process, so the
runner supervises it like any other process. PostgreSQL refuses to run as root, so as root the cluster is created
and run as the ``postgres`` user (which must be able to reach the directory).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any


class PostgresError(RuntimeError):
    pass


def bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresError("PostgreSQL server binaries not found: run scripts/ensure-postgres.sh (make postgres)")


class LocalPostgres:
    def __init__(
        self,
        directory: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        fsync: bool = True,
        max_connections: int = 300,
    ) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.host = host
        # The suite turns fsync off (its clusters are thrown away); a cluster that keeps data keeps it on.
        self.fsync = fsync
        self.max_connections = max_connections
        self.bindir = bindir()
        self.as_root = os.geteuid() == 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _user(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres"} if self.as_root else {}

    def init(self) -> None:
        """Create the cluster unless it exists (trust authentication on loopback only: it is a local server)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        if self.initialised:
            return
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
             "-E", "UTF8"],
            capture_output=True,
            **self._user(),
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"initdb failed in {self.data}: {done.stderr.decode(errors='replace')[-2000:]}")

    def command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
            "-c", f"listen_addresses={self.host}", "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", f"max_connections={self.max_connections}",
        ]  # fmt: skip

    def spawn(self, log: IO[bytes] | int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start the server in the foreground (as a child of this process); see :meth:`wait_ready`."""
        self.init()
        # A server killed with SIGKILL leaves its pid file; PostgreSQL checks whether that pid is still a postmaster.
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._user()
        )
        return self.process

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresError(f"PostgreSQL exited with code {self.process.returncode} while starting")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-t", "1"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"PostgreSQL not accepting connections on {self.host}:{self.port} after {timeout}s")

    def start(self, log: IO[bytes] | int | None = subprocess.DEVNULL) -> LocalPostgres:
        self.spawn(log)
        self.wait_ready()
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is PostgreSQL's fast shutdown (clients disconnected, a clean checkpoint)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # ------------------------------------------------------------------------------------------ databases

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql],
            capture_output=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresError(f"psql failed: {done.stderr.decode(errors='replace').strip()[-2000:]}")
        return done.stdout.decode()

    def ensure_database(self, name: str, *, template: str | None = None) -> str:
        """The database ``name`` (created if missing); returns its SQLAlchemy URL."""
        # Names are ours (service names, test databases); _literal and _identifier refuse or escape quotes anyway.
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{_literal(name)}'").strip()  # noqa: S608
        if not exists:
            self.create_database_named(name, template=template)
        return self.url(name)

    def create_database_named(self, name: str, *, template: str | None = None) -> str:
        """A new database ``name``, an error if it exists; returns its SQLAlchemy URL."""
        copy = f' TEMPLATE "{_identifier(template)}"' if template else ""
        self.psql(f'CREATE DATABASE "{_identifier(name)}"{copy}')
        return self.url(name)

    def terminate_backends(self, database: str | None = None) -> int:
        """``pg_terminate_backend`` every client connection (of one database, or all): what a failover or an
        operator's intervention does to the services' pools. Returns how many were terminated."""
        where = "pid <> pg_backend_pid() AND backend_type = 'client backend'"
        if database is not None:
            where += f" AND datname = '{_literal(database)}'"
        out = self.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {where}")  # noqa: S608
        return int(out.strip() or 0)


def _identifier(name: str) -> str:
    if '"' in name or "\x00" in name:
        raise ValueError(f"not a database name: {name!r}")
    return name


def _literal(value: str) -> str:
    return value.replace("'", "''")
