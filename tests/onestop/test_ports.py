"""The ports the runner picks for tests and benchmarks: two processes picking at once never get the same one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from onestop.runner import PORT_RESERVED_SECONDS

ROOT = Path(__file__).resolve().parents[2]

# Each process draws the same random sequence, so without the notes they would pick the same ports. Every port counts
# as free to bind: a port of the sequence that a server of another test listens on at that moment would otherwise be
# passed by for that reason, not for its note (it was, once, in a run on a loaded machine).
PICK = """
import json, random, sys
from onestop import runner
runner.port_is_free = lambda host, port: True
random.seed(7)
print(json.dumps([runner.unused_port() for _ in range(int(sys.argv[1]))]))
"""


def _picks(tmp: Path, n: int) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", PICK, str(n)], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    picked: list[int] = json.loads(out.stdout)
    return picked


def test_a_port_one_process_picked_is_passed_by_in_another(tmp_path: Path) -> None:
    first = _picks(tmp_path, 50)
    second = _picks(tmp_path, 50)
    assert len(set(first)) == 50
    assert set(first).isdisjoint(second)
    assert {p.name for p in (tmp_path / "onestop-ports").iterdir() if p.name.isdigit()} == {
        str(p) for p in first + second
    }


def test_a_pick_older_than_the_reservation_is_free_again_and_a_younger_one_is_not(tmp_path: Path) -> None:
    first = _picks(tmp_path, 20)
    now = time.time()
    notes = tmp_path / "onestop-ports"
    for port in first[:10]:
        os.utime(notes / str(port), (now, now - PORT_RESERVED_SECONDS - 5))
    for port in first[10:]:
        os.utime(notes / str(port), (now, now - PORT_RESERVED_SECONDS + 30))
    again = _picks(tmp_path, 15)
    assert again[:10] == first[:10]
    assert set(again[10:]).isdisjoint(first), "the ones picked 9 minutes 30 seconds ago are passed by"
    assert all(time.time() - (notes / str(p)).stat().st_mtime < 60 for p in again), "renewed when picked again"
