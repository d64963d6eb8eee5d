"""Seed data: the YAML program catalogue and the median income table (``onestop seed``, ``make run``).

Idempotent: a second run changes nothing, and a changed YAML adds rule versions rather than editing one in force."""

from __future__ import annotations

from typing import cast

from services.eligibility.catalogue import load_files
from services.eligibility.catalogue_admin import seed_catalogue
from services.eligibility.repository import Repository
from services.eligibility.settings import EligibilitySettings
from shared.clock import Clock
from shared.db import Database
from shared.settings import ServiceSettings


async def seed(settings: ServiceSettings) -> str:
    config = cast(EligibilitySettings, settings)
    files = load_files(config.catalogue_dir)
    files.catalogue()  # compile every version first: a broken catalogue fails here, before anything is written
    clock = Clock.from_settings(config)
    now, today = clock.now(), clock.today()
    db = Database(config.database_url)
    try:
        async with db.session() as session:
            summary = await seed_catalogue(Repository(session), files, today=today, now=now)
    finally:
        await db.dispose()
    return summary.line()
