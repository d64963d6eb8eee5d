"""A throwaway PostgreSQL server for the suite: Debian's binaries, a cluster in a temporary directory, a free port.

PostgreSQL refuses to run as root, so as root the cluster is created and run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from onestop.runner import free_port


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found; `make test` installs Debian's postgresql package")


class PostgresServer:
    def __init__(self) -> None:
        # Not under pytest's temporary directory: that is private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="onestop-pg-"))
        self.port = free_port()
        self.bindir = _bindir()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def start(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.directory / "pg.log"),
                  "-w", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new empty (or template-copied) database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        self.psql(sql)
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> None:
        psql = self.bindir / "psql"
        subprocess.run(
            [str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-v",
             "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True,
            capture_output=True,
        )  # fmt: skip
