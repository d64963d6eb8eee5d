"""SQLite through aiosqlite with one thread hop per statement.

aiosqlite runs each sqlite3 call in its own thread and hands the result back to the event loop. SQLAlchemy's adapter
makes four such calls per statement (open a cursor, execute, fetch the rows, close the cursor), and on a small VM a
hop between threads costs a few hundred microseconds, far more than SQLite's own work: a one-row INSERT took over a
millisecond, which capped a consumer at about a thousand events a second. This cursor does the whole statement (execute,
fetch every row, read the description, row count and last row id, close) in one function run in aiosqlite's thread,
so a statement costs one hop. Every sqlite3 call still happens in that thread, as aiosqlite requires.

Only the cursor differs from SQLAlchemy's aiosqlite dialect; the engine is made with ``module=dbapi()``.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

# What one statement returns from aiosqlite's thread: description, rows, row count, last row id.
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose results are buffered in one hop; it holds no aiosqlite cursor at all."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1
        super().__init__(adapt_connection)

    def _make_new_cursor(self, connection: Any) -> Any:
        return None

    def _aenter_cursor(self, cursor: Any) -> Any:
        return None

    async def _async_soft_close(self) -> None:
        return None  # the rows are already buffered and there is no driver cursor to close

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _hop(self, operation: Any, parameters: Any, many: bool) -> None:
        driver: Any = self._adapt_connection._connection  # an aiosqlite.Connection
        async with self._adapt_connection._execute_mutex:
            # aiosqlite's own queue: the function runs in the connection's thread (the private name is the one
            # SQLAlchemy's adapter uses too; the lock file pins aiosqlite).
            outcome: _Outcome = await driver._execute(_run, driver._conn, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._hop(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._hop(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def nextset(self) -> None:
        return None


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy does: a forgotten connection never blocks exit
        return OneHopConnection(self, cast(Any, await_(connection)))


def dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
