"""Another process writing to a SQLite file, for tests of the writer lock between processes:
``python -m tests.support.sqlite_writer_process <database file>``.

SQLite's busy handler is off (a BEGIN IMMEDIATE that found the lock taken would fail at once). It begins a write
transaction, inserts a row into ``items`` (name "other", size 1), prints ``holding`` and waits for a line on stdin;
then prints how many requests wait for the lock (``waiting <n>``, the figure a consumer's batch ends early for),
commits and prints ``committed``."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import text

import shared.db
from shared.db import Database, background


async def main(path: str) -> None:
    shared.db.SQLITE_BUSY_TIMEOUT_MS = 0
    db = Database(f"sqlite+aiosqlite:///{path}")
    background()  # as a consumer's batch
    try:
        async with db.session() as session:
            await session.execute(text("INSERT INTO items (name, size) VALUES ('other', 1)"))
            print("holding", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            print(f"waiting {db.writers_waiting()}", flush=True)
        print("committed", flush=True)
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
