"""A flag processes raise together through a file (shared.flock): each side sees the other's, and a wait for every
flag to come down ends when the last one does, or at its timeout, with one waiting thread however many wait. Two
SharedFlag objects on one path stand for two processes: flock belongs to the open file, not to the process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from shared.flock import SharedFlag


def test_a_flag_raised_on_one_side_is_seen_on_the_other_until_lowered(tmp_path: Path) -> None:
    here, there = SharedFlag(str(tmp_path / "flag")), SharedFlag(str(tmp_path / "flag"))
    assert not here.up_anywhere()
    there.hoist()
    there.hoist()  # raised once, however often hoisted
    assert here.up_anywhere()
    assert not here.up
    here.hoist()
    there.lower()
    assert there.up_anywhere(), "this side's flag is still up"
    here.lower()
    assert not there.up_anywhere()


async def test_a_wait_for_the_flags_to_come_down_ends_when_the_last_one_does(tmp_path: Path) -> None:
    here, there, third = (SharedFlag(str(tmp_path / "flag")) for _ in range(3))
    there.hoist()
    third.hoist()
    threads_before = threading.active_count()
    waits = [asyncio.create_task(here.until_down(30)) for _ in range(5)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waits)
    assert threading.active_count() == threads_before + 1, "one thread waits for all five"
    there.lower()
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waits), "another flag is still up"
    third.lower()
    assert await asyncio.wait_for(asyncio.gather(*waits), 5) == [True] * 5


async def test_a_wait_ends_at_its_timeout_while_a_flag_stays_up(tmp_path: Path) -> None:
    here, there = SharedFlag(str(tmp_path / "flag")), SharedFlag(str(tmp_path / "flag"))
    there.hoist()
    assert await here.until_down(0.05) is False
    assert await here.until_down(0.05) is False, "the same waiting thread, again timed out"
    there.lower()
    assert await asyncio.wait_for(here.until_down(30), 5) is True
