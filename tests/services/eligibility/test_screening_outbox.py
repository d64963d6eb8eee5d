"""A screening writes its opportunities and their ``eligibility.opportunity`` events in columns (one bulk write
each, the envelopes from one template per program and amount). Every event is, byte for byte, the envelope the
per-event path (one ``EligibilityOpportunity`` per finding through ``Outbox.emit_many``) makes of the same finding,
id and time; one event per opportunity, each under its own id — on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from services.eligibility import synthetic
from services.eligibility.catalogue import load_files
from services.eligibility.determinations import Eligibility
from services.eligibility.main import MIGRATIONS
from services.eligibility.models import OpportunityRow, ResidentRow, ScreeningQuestionRow, platform
from services.eligibility.registry_load import load_registry
from services.eligibility.repository import Repository
from services.eligibility.screening import run_screening
from services.eligibility.screening_records import proactive_codes
from services.eligibility.screenings import Everyone, execute, open_run
from services.eligibility.seed import seed
from services.eligibility.settings import EligibilitySettings
from shared.db import Database
from shared.events import (
    CloudEvent,
    EligibilityOpportunity,
    Localized,
    MissingFact,
    ScreeningQuestionAsked,
    new_event,
)
from shared.migrations import upgrade
from shared.outbox import Outbox

AS_OF = dt.date(2026, 3, 2)
SOURCE = "/onestop/eligibility"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("registry")
    synthetic.write(synthetic.generate(load_files().catalogue(), 400, 11, AS_OF), out)
    return out


async def test_screening_events_are_the_per_event_envelopes(registry: Path, database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    settings = EligibilitySettings(database_url=database_url)
    await seed(settings)
    service = Eligibility(settings, Outbox(platform, prefix="onestop", source=SOURCE))
    db = Database(database_url)
    try:
        now = dt.datetime(2026, 3, 2, 9, 30, 1, 250, tzinfo=dt.UTC)
        async with db.session() as session:
            await load_registry(session, registry / "residents.parquet", now=now)
        async with db.session() as session:
            catalogue = await service.store.get(Repository(session))
            codes = [c for c, p in catalogue.programs.items() if p.attributes.proactive and p.version_on(AS_OF)]
            # Small statements: the bulk writes are split, as a large population's are.
            screening = await run_screening(
                Repository(session), service, codes=codes, as_of=AS_OF, actor="test", now=now, batch_size=37,
                max_residents=1_000_000,
            )  # fmt: skip
            screening_id = screening.screening_id
        async with db.read_session() as session:
            found = (await session.scalars(select(OpportunityRow))).all()
            events = (await session.execute(select(platform.outbox).order_by(platform.outbox.c.id))).all()
    finally:
        await db.dispose()

    assert screening.opportunities == len(found) == len(events) > 37 * 2
    assert any(f.amount is None for f in found)
    assert any(f.amount is not None for f in found)
    assert len({e.event_id for e in events}) == len(events), "one Nats-Msg-Id per event"
    assert {e.subject for e in events} == {"onestop.eligibility.opportunity"}
    versions = catalogue.versions_on(AS_OF)
    by_pair = {(f.resident_id, f.program_code): f for f in found}
    told = set()
    for row in events:
        envelope = CloudEvent.from_json(row.payload)
        assert envelope.id == row.event_id
        finding = by_pair[(uuid.UUID(envelope.data["resident_id"]), envelope.data["program_code"])]
        assert finding.screening_id == screening_id
        assert finding.found_at == now
        assert finding.rule_version == versions[finding.program_code][1].version
        program, version = versions[finding.program_code]
        # What the per-event path made of this finding (screening.py before the columns), with this id and time.
        data = EligibilityOpportunity(
            screening_id=screening_id,
            resident_id=finding.resident_id,
            program_code=finding.program_code,
            program_name=Localized(**program.name),
            department=program.attributes.department,
            amount=finding.amount,
            amount_period=version.amount_period if finding.amount is not None else None,
            found_at=now,
        )
        expected = new_event(data, source=SOURCE, subject=str(finding.resident_id))
        expected = expected.model_copy(update={"id": row.event_id, "time": envelope.time})
        assert row.payload == expected.to_json().decode()
        told.add((finding.resident_id, finding.program_code))
    assert told == set(by_pair), "every opportunity told once"


async def test_runs_by_themselves_write_offers_and_questions_as_the_per_event_envelopes(database_url: str) -> None:
    """A run of the scheduler (``screening_runs.record_page``) writes its opportunities and its questions in columns
    too: each ``screening.question_asked`` is the envelope one ``ScreeningQuestionAsked`` per question makes, byte
    for byte, and says what its row in ``screening_questions`` says."""
    day = dt.date(2026, 3, 10)
    await upgrade(database_url, MIGRATIONS)
    settings = EligibilitySettings(database_url=database_url, today=day, screening_batch_size=50)
    await seed(settings)
    service = Eligibility(settings, Outbox(platform, prefix="onestop", source=SOURCE))
    rng = random.Random(4)
    people = []
    for _ in range(160):
        born = day - dt.timedelta(days=rng.randint(18 * 365, 90 * 365))
        children = [{"relation": "child", "birth_date": (day - dt.timedelta(days=rng.randint(0, 17 * 365))).isoformat()}
                    for _ in range(rng.choice([0, 0, 1, 2]))]  # fmt: skip
        people.append({
            "resident_id": uuid.uuid4(), "registry_version": 1, "birth_date": born, "district_code": "11440",
            "household": children, "vulnerability": ["disability"] if rng.random() < 0.1 else [],
            "preferred_language": "ko", "consent_version": 1, "consents": {"proactive_screening": True},
            "proactive_screening": True,
        })  # fmt: skip
    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(insert(ResidentRow), people)
        async with db.session() as session:
            repo = Repository(session)
            catalogue = await service.store.get(repo)
            run = await open_run(repo, kind="full", trigger="test", actor="test", as_of=day,
                                 codes=proactive_codes(catalogue, day), now=dt.datetime.now(dt.UTC))  # fmt: skip
        row = await execute(db, service, run.screening_id, Everyone())
        async with db.read_session() as session:
            asked = {q.question_id: q for q in (await session.scalars(select(ScreeningQuestionRow))).all()}
            offered = {(o.resident_id, o.program_code): o for o in (await session.scalars(select(OpportunityRow)))}
            events = (await session.execute(select(platform.outbox).order_by(platform.outbox.c.id))).all()
    finally:
        await db.dispose()

    assert row.questions == len(asked) > 0
    assert row.opportunities == len(offered) > 0
    questions = [e for e in events if e.subject == "onestop.screening.question_asked"]
    offers = [e for e in events if e.subject == "onestop.eligibility.opportunity"]
    assert len(questions) == len(asked)
    assert len(offers) == len(offered)
    assert len({e.event_id for e in events}) == len(events)
    for event in questions:
        envelope = CloudEvent.from_json(event.payload)
        data = ScreeningQuestionAsked.model_validate(envelope.data)
        question = asked[data.question_id]
        assert (question.resident_id, question.program_code, question.fact) == (
            data.resident_id, data.program_code, data.fact.name
        )  # fmt: skip
        assert question.screening_id == data.screening_id == run.screening_id
        assert question.status == "open"
        assert question.answered_at is None
        assert data.asked_at == question.asked_at
        assert data.fact == MissingFact(**catalogue.facts.missing_fact(question.fact))
        program = catalogue.programs[question.program_code]
        assert data.program_name == Localized(**program.name)
        assert data.why.en
        assert data.why.ko
        expected = new_event(data, source=SOURCE, subject=str(question.resident_id))
        expected = expected.model_copy(update={"id": event.event_id, "time": envelope.time})
        assert event.payload == expected.to_json().decode()
    versions = catalogue.versions_on(day)
    for event in offers:
        envelope = CloudEvent.from_json(event.payload)
        finding = offered[(uuid.UUID(envelope.data["resident_id"]), envelope.data["program_code"])]
        program, version = versions[finding.program_code]
        assert finding.rule_version == version.version
        offer = EligibilityOpportunity(
            screening_id=run.screening_id, resident_id=finding.resident_id, program_code=finding.program_code,
            program_name=Localized(**program.name), department=program.attributes.department, amount=finding.amount,
            amount_period=version.amount_period if finding.amount is not None else None, found_at=finding.found_at,
        )  # fmt: skip
        expected = new_event(offer, source=SOURCE, subject=str(finding.resident_id))
        expected = expected.model_copy(update={"id": event.event_id, "time": envelope.time})
        assert event.payload == expected.to_json().decode()
