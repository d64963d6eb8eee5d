"""The synthetic registry (``onestop registry generate`` / ``load``) and proactive screening over it: the population
is loaded into eligibility's projection (SQLite and PostgreSQL), screened through the API, and every planted eligible
non-applicant is found; every opportunity is one the per-record engine agrees with, resident by resident."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import delete, inspect, select

from onestop.cli import main
from services.eligibility import synthetic
from services.eligibility.catalogue import load_files
from services.eligibility.context import EligibilityContext
from services.eligibility.determinations import Eligibility
from services.eligibility.models import DepartmentFactRow, OpportunityRow, ResidentRow
from services.eligibility.registry_load import RegistryNotEmpty, load_registry
from services.eligibility.repository import Repository
from services.eligibility.screening import run_screening
from shared.events import Outcome
from tests.support.services import RunningService

AS_OF = dt.date(2026, 3, 2)
CATALOGUE = load_files().catalogue()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("registry")
    assert main(["registry", "generate", "--residents", "1500", "--seed", "5", "--as-of", AS_OF.isoformat(),
                 "--out", str(out)]) == 0  # fmt: skip
    return out


def test_the_population_is_written_with_its_manifest(registry: Path) -> None:
    frame = pl.read_parquet(registry / "residents.parquet")
    manifest = json.loads((registry / "manifest.json").read_text(encoding="utf-8"))
    assert frame.height == manifest["residents"] >= 1500
    assert frame.get_column("resident_id").n_unique() == frame.height
    # Every member of a household lists the others, as the registry lists them from each one's side.
    sizes = frame.group_by("household_id").agg(pl.len().alias("n"), pl.col("household").list.len().max().alias("m"))
    assert sizes.filter(pl.col("m") != pl.col("n") - 1).height == 0
    assert set(manifest["household_types"]) == set(synthetic.HOUSEHOLD_TYPES)
    assert 0.6 < manifest["shares"]["proactive_screening"] < 0.8
    assert 0.02 < manifest["shares"]["disability"] < 0.09
    assert sum(manifest["age_pyramid"]["generated"].values()) == pytest.approx(1, abs=0.01)
    planted = manifest["planted"]
    assert {p["planted_for"] for p in planted} == set(synthetic.PLANTS)
    assert all(p["planted_for"] in p["eligible"] for p in planted)
    # The same seed gives the same population.
    again = synthetic.generate(CATALOGUE, 1500, 5, AS_OF)
    assert again.frame.equals(frame)


async def test_the_loaded_population_is_screened_and_the_planted_are_found(
    registry: Path, eligibility: RunningService
) -> None:
    db = eligibility.runtime.db
    async with db.session() as session:
        loaded = await load_registry(session, registry / "residents.parquet", now=dt.datetime.now(dt.UTC))
    frame = pl.read_parquet(registry / "residents.parquet")
    assert loaded.residents == frame.height
    assert await eligibility.count(ResidentRow) == frame.height
    assert await eligibility.count(DepartmentFactRow) == loaded.facts > frame.height
    # The department facts' indexes, dropped for the load and built after it, are there again.
    async with db.session() as session:
        indexes = await session.run_sync(
            lambda s: {i["name"] for i in inspect(s.connection()).get_indexes("department_facts")}
        )
    dialect = "postgresql" if "postgresql" in db.url else "sqlite"
    wanted = "ix_department_facts_resident_name" if dialect == "postgresql" else "ix_department_facts_resident_covering"
    assert wanted in indexes
    with pytest.raises(RegistryNotEmpty):
        async with db.session() as session:
            await load_registry(session, registry / "residents.parquet", now=dt.datetime.now(dt.UTC))

    # What the service projects of a loaded resident is what the generator wrote.
    first = frame.row(0, named=True)
    async with db.session() as session:
        layers = await Repository(session).layers_for(uuid.UUID(first["resident_id"]), {})
    expected = synthetic.layers_of_row(first)
    assert layers.registry["household_size"] == len(first["household"]) + 1
    assert dict(layers.registry) == {k: v for k, v in expected.registry.items()}

    admin = eligibility.auth("admin")
    response = await eligibility.client.post("/v1/screenings", json={"as_of": AS_OF.isoformat()}, headers=admin)
    assert response.status_code == 201, response.text
    screening = response.json()
    consenting = frame.filter(pl.col("proactive_screening")).height
    assert screening["residents_screened"] == consenting
    async with db.session() as session:
        found = {(r.resident_id, r.program_code): r.amount for r in (await session.scalars(select(OpportunityRow)))}
    assert screening["opportunities"] == len(found) > 0
    manifest = json.loads((registry / "manifest.json").read_text(encoding="utf-8"))
    for planted in manifest["planted"]:
        for code in planted["eligible"]:
            assert (uuid.UUID(planted["resident_id"]), code) in found, (planted["resident_id"], code)

    # A re-screen of a few residents (those whose facts changed) reads and judges those alone: told again once their
    # earlier findings are gone, and no one else.
    again = [uuid.UUID(p["resident_id"]) for p in manifest["planted"][:3]]
    async with db.session() as session:
        await session.execute(delete(OpportunityRow).where(OpportunityRow.resident_id.in_(again)))
    service = eligibility.context(EligibilityContext).eligibility
    async with db.session() as session:
        rescreen = await run_screening(
            Repository(session), service, codes=screening["programs"], as_of=AS_OF, actor="test",
            now=dt.datetime.now(dt.UTC), batch_size=100, max_residents=1_000_000, residents=again,
        )  # fmt: skip
        assert rescreen.residents_screened == len(again)
        assert rescreen.opportunities == sum(1 for (rid, _) in found if rid in again)

    # In pages of 200 the same is found: read ahead on connections of their own while the page before is judged and
    # written (a pipeline), and read one after the other on the writing session.
    paged = Eligibility(service.settings.model_copy(update={"screening_page_size": 200}), service.outbox)
    for reads in (db.reads(), None):
        async with db.session() as session:
            await session.execute(delete(OpportunityRow))
        async with db.session() as session:
            run = await run_screening(
                Repository(session), paged, codes=screening["programs"], as_of=AS_OF, actor="test",
                now=dt.datetime.now(dt.UTC), batch_size=100, max_residents=1_000_000, reads=reads,
            )  # fmt: skip
        assert run.residents_screened == consenting
        async with db.session() as session:
            pages = {(r.resident_id, r.program_code): r.amount for r in (await session.scalars(select(OpportunityRow)))}
        assert pages == found, "pipelined" if reads is not None else "one page after the other"

    # Resident by resident, the per-record engine agrees: with what was found, and that nothing else was.
    now = dt.datetime.now(dt.UTC)
    proactive = screening["programs"]
    for row in frame.filter(pl.col("proactive_screening")).iter_rows(named=True):
        layers = synthetic.layers_of_row(row)
        consented = "department_data:tax" in row["consents"]
        if not consented:
            layers.declared = {}
        env = CATALOGUE.environment(AS_OF, layers, now)
        rid = uuid.UUID(row["resident_id"])
        for result in CATALOGUE.evaluate(env, proactive, explain=False):
            eligible = result.outcome.outcome == Outcome.ELIGIBLE
            assert ((rid, result.program.code) in found) == eligible, (row["resident_id"], result.program.code)
            if eligible:
                assert found[(rid, result.program.code)] == result.outcome.amount
