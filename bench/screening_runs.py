"""Screening that runs by itself, measured (not a test): ``.venv/bin/python bench/screening_runs.py``.

On a SQLite database with a consenting population (ages, districts, households with children of every age): the
full run the scheduler makes when the rules change, then an incremental run with ``--changed`` (default 1 %) of the
residents queued (their facts changed), then the next day's daily run (the residents whose dates crossed a boundary
that day). Each run goes through ``scheduler.ScreeningScheduler.tick`` as in the service: page by page, its
opportunities, questions and their outbox events written, its progress committed. Prints each run's time, residents
per second, what it found, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DAY = dt.date(2026, 3, 10)
DISTRICTS = ["11110", "11140", "11170", "11440", "26110", "46890"]


def residents(size: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(size):
        age_days = rng.randint(18 * 365, 95 * 365)
        born = DAY - dt.timedelta(days=age_days)
        household: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            household.append({"relation": "spouse", "birth_date": (born + dt.timedelta(days=rng.randint(-2000, 2000)))
                              .isoformat()})  # fmt: skip
        if age_days < 50 * 365 and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                child = DAY - dt.timedelta(days=rng.randint(0, 17 * 365))
                household.append({"relation": "child", "birth_date": child.isoformat()})
        rows.append(
            {
                "resident_id": uuid.uuid4(), "registry_version": 1, "birth_date": born,
                "district_code": rng.choice(DISTRICTS), "household": household,
                "vulnerability": ["disability"] if rng.random() < 0.05 else [], "preferred_language": "ko",
                "consent_version": 1, "consents": {"proactive_screening": True}, "proactive_screening": True,
            }
        )  # fmt: skip
    return rows


async def measure(size: int, changed: float, batch: int) -> None:
    from sqlalchemy import insert

    from services.eligibility.determinations import Eligibility
    from services.eligibility.main import MIGRATIONS
    from services.eligibility.models import ResidentRow, ScreeningQueueRow, platform
    from services.eligibility.scheduler import ScreeningScheduler
    from services.eligibility.seed import seed
    from services.eligibility.settings import EligibilitySettings
    from shared.db import Database
    from shared.migrations import upgrade
    from shared.outbox import Outbox

    with tempfile.TemporaryDirectory() as scratch:
        settings = EligibilitySettings(
            database_url=f"sqlite+aiosqlite:///{scratch}/bench.db", today=DAY, screening_batch_size=batch
        )
        await upgrade(settings.database_url, MIGRATIONS)
        await seed(settings)
        db = Database(settings.database_url)
        try:
            population = residents(size, seed=15)
            async with db.session() as session:
                for start in range(0, size, 5000):
                    await session.execute(insert(ResidentRow), population[start : start + 5000])
            service = Eligibility(settings, Outbox(platform, prefix="bench", source="/onestop/eligibility"))
            scheduler = ScreeningScheduler(db, service)

            async def run(label: str) -> None:
                started = time.perf_counter()
                row = await scheduler.tick()
                seconds = time.perf_counter() - started
                assert row is not None, f"no {label} run was due"
                rate = row.residents_screened / seconds if seconds else 0.0
                print(
                    f"{label:<12} {row.kind:<12} {row.residents_screened:>9,} residents in {seconds:7.2f} s "
                    f"({rate:>9,.0f}/s): {row.opportunities:,} opportunities, {row.questions:,} questions"
                )

            await run("full")
            chosen = random.Random(3).sample(population, max(1, int(size * changed)))
            now = dt.datetime.now(dt.UTC)
            async with db.session() as session:
                await session.execute(
                    insert(ScreeningQueueRow),
                    [
                        {"resident_id": r["resident_id"], "reasons": ["facts_reported"], "queued_at": now}
                        for r in chosen
                    ],
                )
            await run(f"{changed:.0%} changed")
            service.store.clock.fixed_today = DAY + dt.timedelta(days=1)
            await run("next day")
        finally:
            await db.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of residents queued for the incremental run")
    parser.add_argument("--batch", type=int, default=2000, help="residents per page")
    args = parser.parse_args()
    asyncio.run(measure(args.residents, args.changed, args.batch))


if __name__ == "__main__":
    main()
