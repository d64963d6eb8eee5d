"""The models and the migrations agree; the seed is idempotent, and a changed YAML adds versions instead of editing
one in force. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from services.eligibility.main import MIGRATIONS
from services.eligibility.models import CatalogueStateRow, MedianIncomeRow, ProgramRow, RuleVersionRow
from services.eligibility.seed import seed
from services.eligibility.settings import CATALOGUE_DIR, EligibilitySettings
from shared.db import Database
from shared.migrations import upgrade
from tests.services.eligibility.support import today


async def _state(db: Database) -> dict[str, Any]:
    async with db.session() as session:
        versions = (await session.scalars(select(RuleVersionRow).order_by(RuleVersionRow.id))).all()
        return {
            "programs": await session.scalar(select(func.count()).select_from(ProgramRow)),
            "medians": await session.scalar(select(func.count()).select_from(MedianIncomeRow)),
            "versions": [
                (v.program_code, v.version, v.effective_from, v.content_hash, v.superseded_at) for v in versions
            ],
            "revision": await session.scalar(select(CatalogueStateRow.revision)),
        }


async def test_seeding_twice_changes_nothing_and_a_changed_yaml_adds_versions(
    database_url: str, tmp_path: Path
) -> None:
    catalogue_dir = tmp_path / "catalogue"
    shutil.copytree(CATALOGUE_DIR, catalogue_dir)
    settings = EligibilitySettings(database_url=database_url, catalogue_dir=catalogue_dir)
    await upgrade(database_url, MIGRATIONS)
    first_line = await seed(settings)
    assert first_line.startswith("41 programs (41 new")
    db = Database(database_url)
    try:
        first = await _state(db)
        assert first["programs"] == 41
        assert first["medians"] == 12

        assert "0 rule versions added" in await seed(settings)
        assert await _state(db) == first, "a second seed must change nothing"

        # Edit the version in force in place (the 2026 basic pension) and add a future version to another program.
        path = catalogue_dir / "programs" / "welfare.yaml"
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        pension = next(p for p in document["programs"] if p["code"] == "basic_pension")
        pension["versions"][1]["definitions"]["threshold"] = "has_spouse ? 3952001 : 2470001"
        allowance = next(p for p in document["programs"] if p["code"] == "parent_benefit")
        future = dict(allowance["versions"][-1], effective_from=dt.date(2099, 1, 1), source="a future change")
        allowance["versions"].append(future)
        allowance["sla_days"] = 20
        path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")

        line = await seed(settings)
        assert "2 rule versions added (1 moved to tomorrow" in line
        after = await _state(db)
        assert after["versions"][: len(first["versions"])] == first["versions"], "no existing version was edited"
        added = {code: (number, start) for code, number, start, _h, _s in after["versions"][len(first["versions"]) :]}
        tomorrow = today() + dt.timedelta(days=1)
        assert added == {"basic_pension": (3, tomorrow), "parent_benefit": (3, dt.date(2099, 1, 1))}
        assert after["revision"] == first["revision"] + 1
        async with db.session() as session:
            program = await session.get(ProgramRow, "parent_benefit")
            assert program is not None
            assert program.attributes["sla_days"] == 20
        assert "0 rule versions added" in await seed(settings), "the moved version is recognised next time"
    finally:
        await db.dispose()
