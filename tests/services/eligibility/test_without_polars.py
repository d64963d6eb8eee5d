"""The eligibility service evaluates applications without Polars: the columns screening judges in (about 37 MB of a
process's memory once imported) are loaded when a screening has someone to screen, not when the service starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.nats import NatsServer

ROOT = Path(__file__).resolve().parents[3]

# Run in a process of its own: this one has imported every test module, Polars with them.
SCRIPT = """
import asyncio, datetime as dt, json, sys, uuid
from pathlib import Path

from services.eligibility.context import EligibilityContext
from services.eligibility.models import EvaluationRoundRow
from shared.auth import TokenIssuer
from shared.events import ApplicationSubmitted, ConsentChanged, ResidentContext, ResidentUpdated
from tests.services.eligibility.support import eligibility_service, today
from tests.support.waiting import wait_until


async def main(nats_url: str, prefix: str, database_url: str, keys: str) -> None:
    seen = {"imported": "polars" in sys.modules}
    now = dt.datetime.now(dt.UTC)
    keys_dir = Path(keys)
    async with eligibility_service(
        database_url=database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir,
        issuer=TokenIssuer.from_directory(keys_dir),
    ) as service:
        seen["started"] = "polars" in sys.modules
        resident = uuid.uuid4()
        await service.publish(ResidentUpdated(resident_id=resident, version=1, birth_date=dt.date(1990, 3, 2),
                                              district_code="11440", household=[], updated_at=now))
        submitted = ApplicationSubmitted(
            application_id=uuid.uuid4(), resident_id=resident, life_event="birth", channel="web",
            answers={"child_birth_date": (today() - dt.timedelta(days=10)).isoformat(), "birth_order": 1,
                     "newborns": 1, "birth_registered": True, "korean_national": True},
            application_date=today(), submitted_at=now,
            resident=ResidentContext(district_code="11440", preferred_language="ko", vulnerability=[]),
        )
        await service.publish(submitted)
        await wait_until(lambda: service.settled("events"), timeout=20)
        seen["rounds"] = await service.count(
            EvaluationRoundRow, EvaluationRoundRow.application_id == submitted.application_id
        )
        # The scheduler's first pass: a full run (a catalogue it never screened for), and nobody consented.
        scheduler = service.context(EligibilityContext).scheduler
        run = await scheduler.tick()
        seen["first_run"] = run and [run.kind, run.status, run.residents_total]
        seen["evaluated"] = "polars" in sys.modules
        # Someone to screen: the resident consents, is queued, and the next pass screens them in columns.
        await service.publish(ConsentChanged(resident_id=resident, version=1, consents={"proactive_screening": True},
                                             changed=["proactive_screening"], changed_at=now))
        await wait_until(lambda: service.settled("events"), timeout=20)
        run = await scheduler.tick()
        seen["second_run"] = run and [run.kind, run.status, run.residents_total]
        seen["screened"] = "polars" in sys.modules
    print(json.dumps(seen))


asyncio.run(main(*sys.argv[1:]))
"""


def test_the_service_starts_and_evaluates_an_application_without_polars_until_it_screens_someone(
    nats_server: NatsServer, bus_prefix: str, tmp_path: Path, keys_dir: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'eligibility.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, nats_server.url, bus_prefix, database_url, str(keys_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["rounds"] == 1
    assert seen["first_run"] == ["full", "completed", 0]
    assert (seen["imported"], seen["started"], seen["evaluated"]) == (False, False, False), seen
    # The same probe sees Polars once a run has someone to screen: the runs still load it when they need it.
    assert seen["second_run"] == ["incremental", "completed", 1]
    assert seen["screened"] is True
