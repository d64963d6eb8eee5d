"""Seed data: the offices of ``offices.yaml``. Safe to repeat: offices already in the database are left as they are
(an administrator may have changed their capacity)."""

from __future__ import annotations

import datetime as dt

from services.routing.offices import load_seed_file, seed_offices
from services.routing.repository import Repository
from services.routing.settings import RoutingSettings
from shared.db import Database
from shared.settings import ServiceSettings


async def seed(settings: ServiceSettings) -> str:
    routing = (
        settings if isinstance(settings, RoutingSettings) else RoutingSettings.model_validate(settings.model_dump())
    )
    offices = load_seed_file(routing.offices_file)
    db = Database(routing.database_url)
    try:
        async with db.session() as session:
            added, present = await seed_offices(Repository(session), offices, dt.datetime.now(dt.UTC))
    finally:
        await db.dispose()
    return f"offices: {added} added, {present} already present"
