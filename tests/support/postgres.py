"""A throwaway PostgreSQL server for the suite: the runner's local PostgreSQL (onestop/postgres.py, Debian's
binaries) in a temporary directory, on a free port, with fsync off.

Not under pytest's temporary directory: that is private to root, and as root the server runs as postgres."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

from sqlalchemy.engine import make_url

from onestop.postgres import LocalPostgres, PostgresError
from onestop.runner import unused_port
from tests.support.scratch import MEMORY

# PostgreSQL refuses to copy a database someone is connected to; a connection just closed may keep its backend a
# moment longer.
_BUSY = "being accessed by other users"


class PostgresServer(LocalPostgres):
    # The suite's running servers by port, so that a database URL leads back to the server that made it.
    _running: ClassVar[dict[int, PostgresServer]] = {}

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="onestop-pg-")), port=unused_port(), fsync=False)

    @classmethod
    def serving(cls, database_url: str) -> PostgresServer | None:
        """The suite's server that serves ``database_url``, if one does."""
        url = make_url(database_url)
        server = cls._running.get(url.port or 5432)
        return server if server is not None and url.host == server.host else None

    def command(self) -> list[str]:
        # In memory (tests/support/scratch.py), its WAL is kept small: every CREATE DATABASE writes its template's
        # pages there (~8 MB).
        if not self.directory.is_relative_to(MEMORY.resolve()):
            return super().command()
        return [*super().command(), "-c", "max_wal_size=128MB", "-c", "min_wal_size=32MB"]

    def start(self) -> PostgresServer:  # type: ignore[override]
        with open(self.directory / "pg.log", "ab") as log:
            super().start(log)
        PostgresServer._running[self.port] = self
        return self

    def stop(self) -> None:  # type: ignore[override]
        PostgresServer._running.pop(self.port, None)
        # Immediate shutdown: the cluster is thrown away, so the shutdown checkpoint of every test's database (the
        # suite makes hundreds) would be written for nothing.
        super().stop(signal.SIGQUIT)
        shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty (or template-copied) database; returns its SQLAlchemy URL. A fresh name: one psql, not the
        existence check first (the suite makes hundreds)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._create(name, template)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """The database of ``url`` gone, whoever is still connected to it."""
        self._drop(str(make_url(url).database))

    def is_empty(self, database: str) -> bool:
        """Nothing made in the database's public schema yet."""
        relations = (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        )
        return int(self.psql(relations, database).strip()) == 0

    def replace_with_copy(self, database: str, template: str) -> None:
        """``database`` dropped and made again as a copy of ``template``: what a template costs is a file copy."""
        self._drop(database)
        self._create(database, template)

    def _drop(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _create(self, name: str, template: str | None) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.create_database_named(name, template=template)
                return
            except PostgresError as exc:
                if template is None or _BUSY not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
