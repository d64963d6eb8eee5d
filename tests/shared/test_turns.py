"""The loop clock tells how long the loop has been held by work that runs without a break, whoever's steps they are,
and work sharing the loop gives it a turn once that is YIELD_EVERY. Background work gives way to the requests being
served (Foreground): until the last one ends, its patience at most."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.turns import Foreground, Turns, held_for, turn_due
from tests.support.loop_clock import LoopClock


def _hold(seconds: float) -> None:
    """Run without giving the loop back (what a run of statements on the loop's thread does)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_holding_the_loop_makes_a_turn_due_and_a_turn_resets_it(loop_clock: LoopClock) -> None:
    held_for()  # the clock starts with the first question
    loop_clock.hold(0.005)
    assert held_for() == pytest.approx(0.005)
    assert turn_due(0.004)
    assert not turn_due(0.010)
    await asyncio.sleep(0)  # the loop runs its ready callbacks, the clock's among them
    assert held_for() == 0
    assert not turn_due(0.004)


async def test_time_held_by_several_pieces_of_work_adds_up(loop_clock: LoopClock) -> None:
    """Two steps of different work that run without a break between them (a batch's handler, then a statement) hold
    the loop together: the second sees the time the first held it."""
    first, second = Turns(every=0.004), Turns(every=0.004)
    await asyncio.sleep(0)
    held_for()
    loop_clock.hold(0.003)
    await first.let_others_run()  # 3 ms: not yet
    assert held_for() == pytest.approx(0.003)
    loop_clock.hold(0.003)
    await second.let_others_run()  # 6 ms since the loop last turned, though this one's own step took 3
    assert held_for() == 0, "the second gave the loop a turn"


async def test_work_that_lets_others_run_shares_the_loop_with_a_task_that_never_holds_it() -> None:
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    turns = Turns(every=0.002)
    for _ in range(50):
        _hold(0.001)
        await turns.let_others_run()
    running = False
    await task
    # 50 ms of work, a turn every 2 ms or so: the ticker ran in those turns (none without them).
    assert ticks >= 10


async def test_an_idle_loop_is_not_kept_turning_by_the_clock() -> None:
    """After a turn in which nobody asked, the clock schedules nothing more."""
    held_for()
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the clock's turn after one nobody asked in: it stops
    loop = asyncio.get_running_loop()
    ready = len(getattr(loop, "_ready", ()))
    assert ready == 0


async def test_background_work_goes_on_at_once_when_no_request_is_being_served() -> None:
    foreground = Foreground(patience=10)
    foreground.enter()
    foreground.leave()
    await asyncio.wait_for(foreground.give_way(), 1)  # 10 s of patience, none of it used


async def test_background_work_waits_for_the_last_request_being_served_to_end() -> None:
    foreground = Foreground(patience=10)
    foreground.enter()
    foreground.enter()
    waiting = asyncio.create_task(foreground.give_way())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "two requests are being served"
    foreground.leave()
    await asyncio.sleep(0.05)
    assert not waiting.done(), "one still is"
    foreground.leave()
    await asyncio.wait_for(waiting, 1)  # the last one ended: it goes on at once, not after its patience


async def test_background_work_waits_no_longer_than_its_patience_under_requests_that_never_let_up() -> None:
    foreground = Foreground(patience=0.05)
    foreground.enter()
    started = time.perf_counter()
    for _ in range(3):
        await foreground.give_way()
    waited = time.perf_counter() - started
    assert 0.15 <= waited < 1.0
    assert foreground._waiters == [], "a wait that ran out leaves nothing behind"
    foreground.leave()


async def test_a_patience_of_zero_never_waits() -> None:
    foreground = Foreground(patience=0)
    foreground.enter()
    await asyncio.wait_for(foreground.give_way(), 0.5)
