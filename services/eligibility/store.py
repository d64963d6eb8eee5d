"""The catalogue each process serves from: loaded from the database, reloaded when its revision changes (another
process or request changed it), with every rule version compiled once."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

from services.eligibility.catalogue import (
    Catalogue,
    CompileCache,
    load_departments,
    load_district_tiers,
    load_life_events,
)
from services.eligibility.facts import FactCatalogue, MedianIncomeTable
from services.eligibility.repository import Repository
from services.eligibility.settings import EligibilitySettings
from shared.clock import Clock


class CatalogueStore:
    def __init__(self, settings: EligibilitySettings) -> None:
        directory = settings.catalogue_dir
        self.facts = FactCatalogue.load(directory / "facts.yaml")
        self.life_events = load_life_events(directory)
        self.departments = load_departments(directory)
        self.districts = load_district_tiers(directory)
        # What this process read from files (the same on every replica of one release), as a version tag.
        files = ("facts.yaml", "life_events.yaml", "departments.yaml", "district_tiers.yaml")
        self.files_version = hashlib.sha256(b"".join((directory / f).read_bytes() for f in files)).hexdigest()[:16]
        self.clock = Clock.from_settings(settings)
        self._cache = CompileCache()
        self._current: Catalogue | None = None
        self._lock = asyncio.Lock()

    def today(self) -> dt.date:
        return self.clock.today()

    @property
    def loaded(self) -> Catalogue | None:
        """The catalogue compiled last, without asking the database whether it is still current."""
        return self._current

    def version(self, catalogue: Catalogue) -> str:
        """What the catalogue as served today depends on: its revision in the database, the day (which versions are
        in force), the files. A client holding a copy of this version has what it would fetch again."""
        return f"{catalogue.revision}.{self.today().isoformat()}.{self.files_version}"

    async def get(self, repo: Repository) -> Catalogue:
        """The catalogue as of the session's view of the database (one small query to check the revision). Call it
        before changing the catalogue in the same transaction, never after: an uncommitted revision must not be
        cached."""
        revision = await repo.catalogue_revision()
        current = self._current
        if current is not None and current.revision == revision:
            return current
        async with self._lock:
            current = self._current
            if current is not None and current.revision == revision:
                return current
            catalogue = Catalogue.build(
                facts=self.facts,
                medians=MedianIncomeTable(await repo.median_years()),
                programs=await repo.load_program_data(),
                life_events=self.life_events,
                departments=self.departments,
                cache=self._cache,
                revision=revision,
                strict=False,
                districts=self.districts,
            )
            self._current = catalogue
            return catalogue
