"""The engines' pool hands connections out in order of asking (shared.pool)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from shared.db import Database
from shared.pool import FairQueue, FairQueuePool


async def test_an_item_given_back_goes_to_the_longest_waiter_not_to_whoever_asks_first() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    first = asyncio.ensure_future(greenlet_spawn(queue.get))
    second = asyncio.ensure_future(greenlet_spawn(queue.get))
    await asyncio.sleep(0.01)
    queue.put_nowait("a")
    # asyncio.Queue would hold "a" until the first waiter ran again, and this would take it.
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, False)
    queue.put_nowait("b")
    assert await first == "a"
    assert await second == "b"
    assert queue.empty()


async def test_a_waiter_that_times_out_leaves_the_line_and_what_comes_later_waits_in_the_queue() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.05)
    queue.put_nowait("a")  # nobody waits for it now: it waits in the queue
    assert not queue.empty()
    assert await greenlet_spawn(queue.get) == "a"


async def test_an_item_handed_to_a_waiter_cancelled_before_it_ran_goes_to_the_next() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    first = asyncio.ensure_future(greenlet_spawn(queue.get))
    second = asyncio.ensure_future(greenlet_spawn(queue.get))
    await asyncio.sleep(0.01)
    queue.put_nowait("a")  # handed to the first ...
    first.cancel()  # ... which is cancelled before it takes it
    assert await second == "a"
    assert first.cancelled()
    assert queue.empty()


async def test_a_session_that_waited_for_the_connection_gets_it_before_one_asked_for_as_it_came_back(
    tmp_path: Path,
) -> None:
    """One connection, held; one session waits for it; another asks for it in the very turn of the loop it comes
    back, ahead of the waiter's own turn (asyncio.Queue's pool gave it to that one)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1)
    assert isinstance(db.engine.sync_engine.pool, FairQueuePool)
    order: list[str] = []
    coming_back = asyncio.Event()

    @event.listens_for(db.engine.sync_engine.pool, "checkin")
    def _checkin(*_: object) -> None:
        coming_back.set()  # the latecomer's turn is queued before the waiter is handed the connection

    async def use(name: str) -> None:
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
            order.append(name)
            if name == "holder":
                await asyncio.sleep(0.05)  # the waiter asks meanwhile

    async def latecomer() -> None:
        await coming_back.wait()
        await use("latecomer")

    try:
        holder = asyncio.ensure_future(use("holder"))
        await asyncio.sleep(0.01)
        await asyncio.gather(holder, use("waiter"), latecomer())
    finally:
        await db.dispose()
    assert order == ["holder", "waiter", "latecomer"]
