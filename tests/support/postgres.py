"""A throwaway PostgreSQL server for the suite: the runner's local PostgreSQL (onestop/postgres.py, Debian's
binaries) in a temporary directory, on a free port, with fsync off.

Not under pytest's temporary directory: that is private to root, and as root the server runs as postgres."""

from __future__ import annotations

import shutil
import signal
import tempfile
import uuid
from pathlib import Path

from onestop.postgres import LocalPostgres
from onestop.runner import unused_port


class PostgresServer(LocalPostgres):
    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="onestop-pg-")), port=unused_port(), fsync=False)

    def start(self) -> PostgresServer:  # type: ignore[override]
        with open(self.directory / "pg.log", "ab") as log:
            super().start(log)
        return self

    def stop(self) -> None:  # type: ignore[override]
        # Immediate shutdown: the cluster is thrown away, so the shutdown checkpoint of every test's database (the
        # suite makes hundreds) would be written for nothing.
        super().stop(signal.SIGQUIT)
        shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty (or template-copied) database; returns its SQLAlchemy URL. A fresh name: one psql, not the
        existence check first (the suite makes hundreds)."""
        return self.create_database_named(f"t_{uuid.uuid4().hex[:16]}", template=template)
