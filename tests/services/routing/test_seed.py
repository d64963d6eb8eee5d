"""The seed runs any number of times and keeps an administrator's changes."""

from __future__ import annotations

from sqlalchemy import select

from onestop.registry import BY_NAME
from services.routing.models import Office
from services.routing.offices import load_seed_file
from services.routing.seed import seed
from services.routing.settings import RoutingSettings
from shared.db import Database
from shared.migrations import upgrade


async def test_the_seed_adds_the_city_once_and_keeps_an_admins_changes(database_url: str) -> None:
    await upgrade(database_url, BY_NAME["routing"].migrations)
    settings = RoutingSettings(database_url=database_url)
    expected = load_seed_file(settings.offices_file)
    assert await seed(settings) == f"offices: {len(expected)} added, 0 already present"

    db = Database(database_url)
    try:
        async with db.session() as session:
            office = await session.get(Office, "JONGNO-CSC")
            assert office is not None
            office.active_case_ceiling = 3  # an administrator's change
        assert await seed(settings) == f"offices: 0 added, {len(expected)} already present"
        async with db.session() as session:
            offices = (await session.execute(select(Office))).scalars().all()
            assert sorted(o.code for o in offices) == sorted(o.code for o in expected)
            assert next(o for o in offices if o.code == "JONGNO-CSC").active_case_ceiling == 3
            # The city: four districts, each with a community service centre and a health centre of its own; some
            # offices serve several districts; the fallback serves every department.
            districts = {"11110", "11140", "11170", "11440"}
            for district in districts:
                kinds = {o.kind for o in offices if district in o.districts}
                assert {"community_service_centre", "health_centre"} <= kinds
            assert any(len(o.districts) > 1 for o in offices)
            fallback = [o for o in offices if o.fallback]
            assert len(fallback) == 1
            assert set(fallback[0].departments) == {"welfare", "health", "housing", "tax", "civil_registry", "labour"}
    finally:
        await db.dispose()
