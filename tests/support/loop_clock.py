"""shared.turns' clock, moved by the test (the ``loop_clock`` fixture): how long a step held the event loop is then
what the test says, whatever else the machine runs meanwhile (a busy CI machine took the process off the CPU between
two steps of 3 ms)."""

from __future__ import annotations


class LoopClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def hold(self, seconds: float) -> None:
        """A step that holds the loop this long."""
        self.now += seconds
