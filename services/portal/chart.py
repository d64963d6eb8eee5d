"""Demand against capacity per office and program, drawn on the server as SVG (no script, no external library): one
row per office, its weighted load split by program, and a mark where the office is full (its active-case ceiling).
The same figures are in a table beside it, which is what a screen reader reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Colours with at least 3:1 contrast against the white background (WCAG 1.4.11), told apart by a legend too.
PALETTE = ("#1f4e9c", "#b3261e", "#1b6e3c", "#7a4bb3", "#8a5a00", "#00677f", "#a1306b", "#4d5b00", "#5c4033")
ROW_HEIGHT = 34
LABEL_WIDTH = 230
BAR_WIDTH = 440
WIDTH = LABEL_WIDTH + BAR_WIDTH + 90


@dataclass(frozen=True)
class Segment:
    program: str
    x: float
    width: float
    colour: str
    load: float


@dataclass(frozen=True)
class Row:
    office: str
    name: dict[str, str]
    y: float
    segments: list[Segment]
    load: float
    ceiling: float
    ceiling_x: float
    over: bool
    utilisation: float | None


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rows: list[Row]
    colours: dict[str, str]
    scale_max: float
    ticks: list[tuple[float, float]]


def capacity_chart(report: dict[str, Any]) -> Chart:
    offices = report["offices"]
    programs = sorted({p["program_code"] for o in offices for p in o["programs"]})
    colours = {code: PALETTE[i % len(PALETTE)] for i, code in enumerate(programs)}
    scale_max = max([1.0] + [max(o["weighted_load"], o["capacity"]["active_case_ceiling"]) for o in offices]) * 1.1
    per_unit = BAR_WIDTH / scale_max
    rows: list[Row] = []
    for index, office in enumerate(offices):
        y = 30 + index * ROW_HEIGHT
        x = float(LABEL_WIDTH)
        segments = []
        for program in sorted(office["programs"], key=lambda p: p["program_code"]):
            width = program["weighted_load"] * per_unit
            if width <= 0:
                continue
            segments.append(Segment(program["program_code"], x, width, colours[program["program_code"]],
                                    program["weighted_load"]))  # fmt: skip
            x += width
        ceiling = float(office["capacity"]["active_case_ceiling"])
        rows.append(
            Row(
                office=office["office_code"],
                name=office["name"],
                y=y,
                segments=segments,
                load=float(office["weighted_load"]),
                ceiling=ceiling,
                ceiling_x=LABEL_WIDTH + ceiling * per_unit,
                over=bool(office["over_capacity"]),
                utilisation=office["utilisation"],
            )
        )
    step = _nice_step(scale_max)
    ticks = [(LABEL_WIDTH + v * per_unit, v) for v in _range(0, scale_max, step)]
    return Chart(WIDTH, 50 + len(rows) * ROW_HEIGHT, rows, colours, scale_max, ticks)


def _nice_step(maximum: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if maximum / step <= 8:
            return float(step)
    return maximum / 8


def _range(start: float, stop: float, step: float) -> list[float]:
    values, value = [], start
    while value <= stop:
        values.append(value)
        value += step
    return values
