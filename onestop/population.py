"""``onestop registry generate`` and ``onestop registry load``: a synthetic registry written to Parquet, and loaded
into eligibility's registry projection (services/eligibility/synthetic.py and registry_load.py do the work)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path


def generate_registry(residents: int, seed: int, as_of: dt.date | None, out: Path) -> int:
    from services.eligibility import synthetic
    from services.eligibility.catalogue import load_files
    from services.eligibility.settings import EligibilitySettings
    from shared.clock import Clock

    if residents < 1:
        print("onestop registry generate: --residents must be at least 1", file=sys.stderr)
        return 2
    day = as_of or Clock.from_settings(EligibilitySettings()).today()
    generated = synthetic.generate(load_files().catalogue(), residents, seed, day)
    data, manifest = synthetic.write(generated, out)
    planted = generated.manifest["planted"]
    print(
        f"wrote {generated.frame.height:,} residents in {generated.manifest['households']:,} households to {data} "
        f"(as of {day.isoformat()}, seed {seed}); {len(planted)} planted eligible non-applicants in {manifest}"
    )
    return 0


def load_registry(source: Path, database_url: str | None, *, replace: bool) -> int:
    from services.eligibility.registry_load import RegistryNotEmpty
    from services.eligibility.registry_load import load_registry as load
    from services.eligibility.settings import EligibilitySettings
    from shared.db import Database

    path = source / "residents.parquet" if source.is_dir() else source
    if not path.exists():
        print(f"onestop registry load: no {path} (run onestop registry generate first)", file=sys.stderr)
        return 2
    url = database_url or EligibilitySettings().database_url

    async def run() -> int:
        db = Database(url)
        try:
            async with db.session() as session:
                loaded = await load(session, path, now=dt.datetime.now(dt.UTC), replace=replace)
        except RegistryNotEmpty as exc:
            print(f"onestop registry load: {exc}; --replace empties it first", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        print(f"loaded {loaded.residents:,} residents and {loaded.facts:,} department facts in {loaded.seconds:.1f} s")
        return 0

    return asyncio.run(run())
