"""Events in, ``eligibility.determined`` out, over the real bus (NATS JetStream) and a real database."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from services.eligibility.context import EligibilityContext
from services.eligibility.models import DepartmentFactRow, DeterminationRow, EvaluationRoundRow, platform
from services.eligibility.repository import Repository
from shared.bus import MSG_ID_HEADER
from shared.events import (
    ApplicationInfoProvided,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    CloudEvent,
    ConsentChanged,
    FactsReported,
    HouseholdMember,
    ReportedFact,
    ResidentContext,
    ResidentErasureRequested,
    ResidentUpdated,
    new_event,
    subject_for,
)
from tests.services.eligibility.support import case_routed, today
from tests.support.events import EventLog, event_log
from tests.support.nats import NatsServer
from tests.support.round_trips import one_batch
from tests.support.services import RunningService
from tests.support.waiting import wait_until

CONTEXT = ResidentContext(district_code="11440", preferred_language="ko", vulnerability=[])


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def registry(resident_id: uuid.UUID, version: int = 1, *, older_child: bool = True) -> ResidentUpdated:
    household = [HouseholdMember(relation="spouse", birth_date=dt.date(1991, 1, 1), monthly_income=1_000_000)]
    if older_child:
        household.append(HouseholdMember(relation="child", birth_date=dt.date(2021, 4, 10), monthly_income=0))
    return ResidentUpdated(
        resident_id=resident_id,
        version=version,
        birth_date=dt.date(1990, 3, 2),
        district_code="11440",
        household=household,
        updated_at=now(),
    )


def consents(resident_id: uuid.UUID, version: int, **purposes: bool) -> ConsentChanged:
    given = {k.replace("__", ":"): v for k, v in purposes.items()}
    return ConsentChanged(
        resident_id=resident_id, version=version, consents=given, changed=list(given), changed_at=now()
    )


def birth(resident_id: uuid.UUID, *, day: dt.date | None = None, **answers: Any) -> ApplicationSubmitted:
    day = day or today()
    return ApplicationSubmitted(
        application_id=uuid.uuid4(),
        resident_id=resident_id,
        life_event="birth",
        answers={
            "child_birth_date": (day - dt.timedelta(days=10)).isoformat(),
            "birth_order": 2,
            "newborns": 1,
            "birth_registered": True,
            "korean_national": True,
            **answers,
        },
        channel="web",
        application_date=day,
        submitted_at=now(),
        resident=CONTEXT,
    )


def report(resident_id: uuid.UUID, department: str, **facts: Any) -> FactsReported:
    return FactsReported(
        report_id=uuid.uuid4(),
        source=department,
        department=department,
        resident_id=resident_id,
        facts=[ReportedFact(name=k, value=v, observed_at=now() - dt.timedelta(minutes=5)) for k, v in facts.items()],
        reported_at=now(),
    )


def for_app(application_id: uuid.UUID) -> Any:
    return lambda e: e.data["application_id"] == str(application_id)


def programs(event: CloudEvent) -> dict[str, dict[str, Any]]:
    return {p["program_code"]: p for p in event.data["programs"]}


async def determined(log: EventLog, application_id: uuid.UUID, round_: int) -> CloudEvent:
    events = await log.wait_for(
        "eligibility.determined", lambda e: for_app(application_id)(e) and e.data["round"] == round_
    )
    return events[0]


async def settle(service: RunningService) -> None:
    await wait_until(lambda: service.settled("events"), timeout=20)


async def test_an_application_reaches_every_department_and_follows_facts_and_consent(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    resident = uuid.uuid4()
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(registry(resident))
        await eligibility.publish(consents(resident, 1, department_data__welfare=True))
        submitted = birth(resident, earned_income=2_000_000, business_income=0)
        app = submitted.application_id
        submitted_event = await eligibility.publish(submitted)

        first = await determined(log, app, 1)
        data = first.data
        assert data["trigger"] == "submitted"
        assert data["resident"] == CONTEXT.model_dump(mode="json")
        assert data["application_date"] == today().isoformat()
        by_code = programs(first)
        assert {p["department"] for p in by_code.values()} == {"welfare", "health", "housing", "tax",
                                                               "civil_registry", "labour"}  # fmt: skip
        voucher = by_code["first_meeting_voucher"]
        assert (voucher["outcome"], voucher["amount"], voucher["amount_period"]) == ("eligible", 3_000_000, "once")
        assert voucher["automatic"] is True
        assert voucher["sla_days"] == 14
        assert voucher["overflow_allowed"] is True
        # The registry's older child and the declared newborn are both counted, and the explanation says so.
        allowance = by_code["child_allowance"]
        assert allowance["outcome"] == "eligible"
        assert allowance["amount"] == 200_000
        counted = next(c for c in allowance["criteria"] if c["id"].startswith("child_under"))
        assert set(counted["sources"].values()) == {"derived:declared+registry"}
        # The household's income is derived: the members' from the registry, the wages declared; the one income
        # neither holds (a public pension) is what is asked, never an income total.
        care = by_code["maternal_newborn_care"]
        assert care["outcome"] == "needs_information"
        assert [m["name"] for m in care["missing"]] == ["public_pension_income"]
        assert care["case_weight"] == 0.8
        assert care["automatic"] is False

        # A department reports the pension (the resident consented to welfare data): a new round.
        await eligibility.publish(report(resident, "welfare", public_pension_income=0), source="/partners/ssis")
        second = await determined(log, app, 2)
        assert second.data["trigger"] == "facts_reported"
        care = programs(second)["maternal_newborn_care"]
        assert care["outcome"] == "eligible"
        income = next(c for c in care["criteria"] if c["id"] == "income_within_150_percent")
        assert income["values"]["household_income"] == 3_000_000
        assert income["sources"]["household_income"] == "derived:declared+department:welfare+registry"
        lines = {line["item"]: line for line in income["workings"]["household_income"]}
        assert (lines["public_pension_income"]["amount"], lines["public_pension_income"]["source"]) == (
            0, "department:welfare"
        )  # fmt: skip
        assert (lines["spouse_income"]["amount"], lines["spouse_income"]["source"]) == (1_000_000, "registry")
        assert (lines["earned_income"]["amount"], lines["earned_income"]["source"]) == (2_000_000, "declared")

        # Consent withdrawn: the department's fact is no longer used.
        await eligibility.publish(consents(resident, 2, department_data__welfare=False))
        third = await determined(log, app, 3)
        assert third.data["trigger"] == "consent_changed"
        assert programs(third)["maternal_newborn_care"]["outcome"] == "needs_information"

        # A fact from a department the resident did not consent to changes nothing: no new round.
        await eligibility.publish(report(resident, "tax", annual_household_income=40_000_000))
        await wait_until(lambda: _facts_stored(eligibility, 2))
        await settle(eligibility)
        assert await eligibility.count(EvaluationRoundRow, EvaluationRoundRow.application_id == app) == 3

        # The resident answers: a new round, whatever changed.
        await eligibility.publish(
            ApplicationInfoProvided(
                application_id=app, resident_id=resident, answers={"public_pension_income": 6_000_000},
                provided_at=now(),
            ),
        )  # fmt: skip
        fourth = await determined(log, app, 4)
        assert fourth.data["trigger"] == "info_provided"
        care = programs(fourth)["maternal_newborn_care"]
        assert care["outcome"] == "ineligible"
        assert care["criteria"][1]["values"]["household_income"] == 9_000_000
        pension = next(
            x for x in care["criteria"][1]["workings"]["household_income"] if x["item"] == "public_pension_income"
        )
        assert pension["source"] == "declared"

        # The registry changes (the older child no longer lives with the resident): an outcome changes, a round.
        await eligibility.publish(registry(resident, 2, older_child=False))
        fifth = await determined(log, app, 5)
        assert fifth.data["trigger"] == "registry_updated"
        assert programs(fifth)["child_allowance"]["amount"] == 100_000, "only the newborn is counted now"
        # An older registry version arriving late changes nothing.
        await eligibility.publish(registry(resident, 1))

        # Redelivery: the same event again (JetStream's de-duplication bypassed), and the same application
        # submitted again under a new event id. Neither makes a round.
        await eligibility.runtime.bus.js.publish(
            subject_for(bus_prefix, "application.submitted"),
            submitted_event.to_json(),
            headers={MSG_ID_HEADER: f"{submitted_event.id}-again"},
        )
        await eligibility.publish(submitted)
        # Withdrawn: later facts no longer re-evaluate it.
        await eligibility.publish(ApplicationWithdrawn(application_id=app, resident_id=resident, withdrawn_at=now()))
        await eligibility.publish(consents(resident, 3, department_data__welfare=True))
        await settle(eligibility)
        mine = [e for e in log.of_type("eligibility.determined") if for_app(app)(e)]
        assert sorted(e.data["round"] for e in mine) == [1, 2, 3, 4, 5]
        assert len({e.id for e in mine}) == 5
        assert await eligibility.count(EvaluationRoundRow, EvaluationRoundRow.application_id == app) == 5
        programs_per_round = len(data["programs"])
        assert (
            await eligibility.count(DeterminationRow, DeterminationRow.application_id == app) == 5 * programs_per_round
        )

    # What was decided can be read back: by the resident, by staff (audited), not by another resident.
    path = f"/v1/applications/{app}/determinations"
    own = await eligibility.client.get(path, headers=eligibility.auth("resident", resident_id=resident))
    assert own.status_code == 200
    body = own.json()
    assert (body["status"], body["round"], body["trigger"]) == ("withdrawn", 5, "registry_updated")
    assert [r["round"] for r in body["rounds"]] == [1, 2, 3, 4, 5]
    assert str(body["determination_id"]) == fifth.data["determination_id"]
    earlier = await eligibility.client.get(
        path, params={"round": 2}, headers=eligibility.auth("resident", resident_id=resident)
    )
    assert {p["program_code"]: p["outcome"] for p in earlier.json()["programs"]}["maternal_newborn_care"] == "eligible"
    other = await eligibility.client.get(path, headers=eligibility.auth("resident", resident_id=uuid.uuid4()))
    assert other.status_code == 404
    # Staff of the office a case of it is in (routing says where, over the bus): audited.
    caseworker = eligibility.auth("caseworker", offices=["MAPO-CSC"])
    assert (await eligibility.client.get(path, headers=caseworker)).status_code == 404
    assert await eligibility.count(platform.audit_log, platform.audit_log.c.record_id == str(app)) == 0
    await eligibility.publish(case_routed(app, resident, "MAPO-CSC"), source="/onestop/routing")
    await wait_until(lambda: eligibility.settled("case-offices"))
    staff = await eligibility.client.get(path, headers=caseworker)
    assert staff.status_code == 200
    assert await eligibility.count(platform.audit_log, platform.audit_log.c.record_id == str(app)) == 1


async def _facts_stored(service: RunningService, n: int) -> bool:
    return await service.count(DepartmentFactRow) >= n


async def test_rule_versions_by_application_date_failing_rules_and_reordered_events(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    admin = eligibility.auth("admin")
    start = today() + dt.timedelta(days=20)
    parent = (await eligibility.client.get("/v1/programs/parent_benefit", headers=admin)).json()
    current = parent["versions"][-1]
    raised = {**current, "effective_from": start.isoformat(), "amount": {**current["amount"], "expr":
              "child_age_months < 12 ? 1200000 : 600000"}}  # fmt: skip
    for key in ("version", "status", "origin", "created_at", "effective_to"):
        raised.pop(key, None)
    body = {k: parent[k] for k in ("name", "department", "life_events", "automatic", "sla_days", "overflow_allowed",
                                    "case_weight", "proactive")}  # fmt: skip
    assert (await eligibility.client.put("/v1/programs/parent_benefit", json={**body, "version": raised},
                                         headers=admin)).status_code == 200  # fmt: skip
    voucher = (await eligibility.client.get("/v1/programs/first_meeting_voucher", headers=admin)).json()
    broken_rule = {"id": "divides", "label": {"ko": "x", "en": "x"}, "expr": "100 / (birth_order - birth_order) > 0"}
    broken = {"effective_from": start.isoformat(), "source": "a mistaken rule", "rule": broken_rule}
    body = {k: voucher[k] for k in ("name", "department", "life_events", "automatic", "sla_days", "overflow_allowed",
                                     "case_weight", "proactive")}  # fmt: skip
    put = await eligibility.client.put("/v1/programs/first_meeting_voucher", json={**body, "version": broken},
                                       headers=admin)  # fmt: skip
    assert put.status_code == 200, put.text

    resident = uuid.uuid4()
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(registry(resident))
        before, after = birth(resident), birth(resident, day=start)
        await eligibility.publish(before)
        await eligibility.publish(after)
        old = programs(await determined(log, before.application_id, 1))
        new = programs(await determined(log, after.application_id, 1))
        assert (old["parent_benefit"]["rule_version"], old["parent_benefit"]["amount"]) == (parent["current_version"],
                                                                                           1_000_000)  # fmt: skip
        assert (new["parent_benefit"]["rule_version"], new["parent_benefit"]["amount"]) == (
            parent["versions"][-1]["version"] + 1, 1_200_000,
        )  # fmt: skip
        assert old["first_meeting_voucher"]["outcome"] == "eligible"
        failed = new["first_meeting_voucher"]
        assert failed["outcome"] == "needs_review"
        assert "division by zero" in failed["error"]
        assert new["child_allowance"]["outcome"] == "eligible", "the other programs are still judged"

        # Reordered: the resident's answer arrives before the submission it belongs to; a withdrawal before its.
        early = birth(resident, birth_order=1)
        await eligibility.publish(
            ApplicationInfoProvided(application_id=early.application_id, resident_id=resident,
                                    answers={"birth_order": 3}, provided_at=now() + dt.timedelta(seconds=1)),
        )  # fmt: skip
        gone = birth(resident)
        await eligibility.publish(
            ApplicationWithdrawn(application_id=gone.application_id, resident_id=resident, withdrawn_at=now()),
        )
        await eligibility.publish(early)
        await eligibility.publish(gone)
        merged = await determined(log, early.application_id, 1)
        assert merged.data["trigger"] == "submitted"
        assert programs(merged)["first_meeting_voucher"]["amount"] == 3_000_000, "the later answer (3rd child) won"
        await settle(eligibility)
        assert not [e for e in log.of_type("eligibility.determined") if for_app(gone.application_id)(e)]
        assert (
            await eligibility.count(EvaluationRoundRow, EvaluationRoundRow.application_id == gone.application_id) == 0
        )
    dead = await eligibility.client.get("/v1/admin/dead-letters", headers=admin)
    assert dead.json() == [], "nothing failed for good"


async def test_rules_run_ahead_of_the_transaction_count_only_while_what_they_read_still_holds(
    eligibility: RunningService,
) -> None:
    """The consumer runs the rules for a batch before its write transaction (outside the writer lock); a result
    whose inputs changed in between must not be what is stored."""
    service = eligibility.context(EligibilityContext).eligibility
    db = eligibility.runtime.db
    resident = uuid.uuid4()
    await eligibility.publish(registry(resident))
    await eligibility.publish(consents(resident, 1, department_data__welfare=True))
    await settle(eligibility)

    async def ahead(*submissions: ApplicationSubmitted) -> None:
        async with db.read_session() as session:
            await service.prepare(
                Repository(session), [new_event(s, source="/onestop/intake") for s in submissions], now()
            )

    async def applied(submitted: ApplicationSubmitted) -> str:
        async with db.session() as session:
            await service.on_submitted(Repository(session), submitted, now())
        async with db.read_session() as session:
            row = (
                await session.execute(
                    select(DeterminationRow).where(
                        DeterminationRow.application_id == submitted.application_id,
                        DeterminationRow.program_code == "maternal_newborn_care",
                    )
                )
            ).scalar_one()
        return str(row.outcome)

    # Evaluated ahead while the household's pension is unknown; then the welfare department reports it before the
    # submission's transaction: the stored round judges with the pension.
    first = birth(resident, earned_income=2_000_000, business_income=0)
    await ahead(first)
    async with db.session() as session:
        await service.on_facts_reported(
            Repository(session), report(resident, "welfare", public_pension_income=0), now()
        )
    assert await applied(first) == "eligible"

    # Nothing changed in between: the result worked out ahead is the one stored, the same as evaluating in place.
    second, third = (birth(resident, earned_income=2_000_000, business_income=0) for _ in range(2))
    await ahead(second)
    assert await applied(second) == await applied(third) == "eligible"

    # An application filed by accepting an offer judges the offered program alone: worked out ahead beside one of
    # the life event's with the same answers, each is stored with its own programs.
    plain = birth(resident, earned_income=2_000_000, business_income=0)
    offered = plain.model_copy(update={"application_id": uuid.uuid4(), "program_codes": ["maternal_newborn_care"]})
    await ahead(plain, offered)
    assert await applied(offered) == await applied(plain) == "eligible"

    async def determined_programs(submitted: ApplicationSubmitted) -> set[str]:
        async with db.read_session() as session:
            query = select(DeterminationRow.program_code).where(
                DeterminationRow.application_id == submitted.application_id
            )
            return set((await session.execute(query)).scalars())

    assert await determined_programs(offered) == {"maternal_newborn_care"}
    assert len(await determined_programs(plain)) > 1, "the life event's programs"


# The writer lock is SQLite's (PostgreSQL serialises nothing of the kind): this runs on SQLite only.
@pytest.mark.parametrize("database_backend", ["sqlite"])
async def test_a_report_a_consent_or_a_registry_change_re_evaluates_with_rules_run_ahead_of_the_transaction(
    eligibility: RunningService,
    nats_server: NatsServer,
    bus_prefix: str,
    database_backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only submissions: the re-evaluations a department's report, a consent or a registry change makes are
    worked out ahead too, each event's effect played forward in memory — the rules never run while the consumer
    holds the writer lock, and what is stored is what evaluating in place gives."""
    from sqlalchemy.engine import make_url

    from services.eligibility import determinations
    from shared import sqlite

    writer = sqlite.writer_for(str(make_url(eligibility.runtime.db.url).database))
    assert writer is not None
    holding: list[bool] = []
    run_rules = determinations._run_rules

    def running(*args: Any) -> Any:
        holding.append(writer.owner is asyncio.current_task())
        return run_rules(*args)

    monkeypatch.setattr(determinations, "_run_rules", running)
    resident = uuid.uuid4()
    await eligibility.publish(registry(resident))
    await eligibility.publish(consents(resident, 1, department_data__welfare=True))
    submitted = birth(resident, earned_income=2_000_000, business_income=0)
    async with event_log(nats_server.url, bus_prefix) as log:
        await eligibility.publish(submitted)
        first = programs(await determined(log, submitted.application_id, 1))
        assert first["maternal_newborn_care"]["outcome"] != "eligible", "the household's pension is not known yet"
        # The welfare department reports the pension; the resident then changes a consent and moves house.
        await eligibility.publish(report(resident, "welfare", public_pension_income=0))
        await eligibility.publish(consents(resident, 2, department_data__welfare=True, proactive_screening=True))
        moved = registry(resident, version=2).model_copy(update={"district_code": "11110"})
        await eligibility.publish(moved)
        await settle(eligibility)
        second = programs(await determined(log, submitted.application_id, 2))
    assert second["maternal_newborn_care"]["outcome"] == "eligible"
    async with eligibility.runtime.db.read_session() as session:
        query = select(EvaluationRoundRow.trigger).where(EvaluationRoundRow.application_id == submitted.application_id)
        rounds = (await session.scalars(query.order_by(EvaluationRoundRow.round))).all()
    assert rounds == ["submitted", "facts_reported"], "a round only where an outcome changed"
    # The submission, the report, the consent and the move each evaluated the application once, all ahead.
    assert len(holding) >= 4
    assert not any(holding), f"{holding.count(True)} of {len(holding)} evaluations ran inside the write transaction"


async def test_a_batch_of_case_events_asks_once_whether_the_resident_was_erased_and_writes_its_offices_together(
    eligibility: RunningService,
) -> None:
    """Where each case is (the projection that scopes staff reads), from a batch of routing's events in one
    transaction: whether the resident was erased, and where its cases are, is asked once, not for every event; the
    rows are written together at the end (a case routed and transferred in the same batch is found among the new
    rows, not flushed to be found); and each case ends in the office of its newest event."""

    from services.eligibility.models import CaseOfficeRow
    from tests.services.eligibility.support import case_transferred

    application_id, resident_id = uuid.uuid4(), uuid.uuid4()
    start = dt.datetime.now(dt.UTC)
    lead = case_routed(application_id, resident_id, "MAPO-CSC", at=start)
    first = case_routed(application_id, resident_id, "MAPO-CSC", at=start)
    second = case_routed(application_id, resident_id, "JONGNO-CSC", at=start)
    moved = case_transferred(first, "YONGSAN-CSC", at=start + dt.timedelta(seconds=1))
    earlier = case_routed(application_id, resident_id, "JONGNO-CSC", at=start)
    await eligibility.publish(earlier)  # where this case is, is in the database before the batch
    await wait_until(lambda: eligibility.settled("case-offices"), timeout=20)
    back = case_transferred(earlier, "MAPO-CSC", at=start + dt.timedelta(seconds=1))
    work = await one_batch(eligibility, "case-offices", (lead, first, second, moved, back))
    statements, commits = work.statements, work.commits

    erasure_reads = [s for s in statements if "FROM resident_erasures" in s]
    office_writes = [s for s in statements if s.startswith("INSERT INTO case_offices")]
    office_reads = [s for s in statements if s.startswith("SELECT") and "FROM case_offices" in s]
    assert len(erasure_reads) <= commits < 4, statements
    assert len(office_reads) <= commits, "where the batch's cases are is read once per transaction"
    assert len(office_writes) <= commits, statements
    async with eligibility.runtime.db.session() as session:
        rows = (
            await session.scalars(select(CaseOfficeRow).where(CaseOfficeRow.application_id == application_id))
        ).all()
    assert {r.case_id: r.office_code for r in rows} == {
        lead.case_id: "MAPO-CSC",
        first.case_id: "YONGSAN-CSC",
        second.case_id: "JONGNO-CSC",
        earlier.case_id: "MAPO-CSC",
    }


async def test_in_one_batch_an_erasure_stops_the_residents_events_after_it(eligibility: RunningService) -> None:
    """Whether a resident was erased is remembered for the rest of a transaction, until an erasure of theirs is
    written in it: the registry's news of the resident after the request, in the same batch, is not stored."""
    from services.eligibility.models import ResidentRow

    resident_id = uuid.uuid4()
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=resident_id, requested_at=now(), decision_files=[]
    )
    await one_batch(
        eligibility,
        "events",
        (registry(uuid.uuid4()), registry(resident_id), request, registry(resident_id, version=2)),
        timeout=30,
    )
    async with eligibility.runtime.db.session() as session:
        stored = await session.get(ResidentRow, resident_id)
    assert stored is None, "nothing about the resident is stored after their erasure"


async def test_a_batch_of_submissions_looks_up_what_its_events_name_once_and_writes_together(
    eligibility: RunningService,
) -> None:
    """A batch of submissions in one transaction: the applications, residents, their erasures, answers and
    department facts the events name, and the catalogue's revision, are each read once for the transaction (a query
    per kind at its start, Subscription.load), not once per event; the new applications are written together at its
    end, each with its first round (not inserted, then updated); and every application is determined."""
    residents = [uuid.uuid4() for _ in range(9)]
    submissions = [birth(r) for r in residents]
    work = await one_batch(eligibility, "events", submissions)

    for statements in work.transactions():
        for table in ("applications", "residents", "resident_erasures", "resident_answers", "department_facts"):
            reads = [s for s in statements if s.startswith("SELECT") and f" FROM {table} " in f"{s} "]
            assert len(reads) <= 1, f"{table} read {len(reads)} times in one transaction: {statements}"
        assert len([s for s in statements if "FROM catalogue_state" in s]) <= 1, statements
        assert len([s for s in statements if s.startswith("INSERT INTO applications")]) <= 1, statements
    assert not work.count("UPDATE applications"), "each application is written once, with its round"
    assert work.count("INSERT INTO applications") < len(submissions), "a batch's applications in one statement"
    async with eligibility.runtime.db.read_session() as session:
        query = select(EvaluationRoundRow.application_id).where(
            EvaluationRoundRow.application_id.in_([s.application_id for s in submissions])
        )
        assert set((await session.scalars(query)).all()) == {s.application_id for s in submissions}


async def test_a_report_in_the_same_batch_as_the_submission_re_evaluates_with_its_facts(
    eligibility: RunningService,
) -> None:
    """What a transaction loaded of a resident at its start (their department facts) is not what the evaluation
    after a report in the same batch uses: the facts the report wrote are, and the outcome they change is a new
    round."""
    resident = uuid.uuid4()
    submitted = birth(resident, earned_income=2_000_000, business_income=0)
    lead = birth(uuid.uuid4())
    events = (lead, registry(resident), consents(resident, 1, department_data__welfare=True), submitted)
    await one_batch(eligibility, "events", (*events, report(resident, "welfare", public_pension_income=0)))
    async with eligibility.runtime.db.read_session() as session:
        query = select(EvaluationRoundRow.trigger).where(EvaluationRoundRow.application_id == submitted.application_id)
        rounds = (await session.scalars(query.order_by(EvaluationRoundRow.round))).all()
        latest = (
            await session.scalars(
                select(DeterminationRow).where(
                    DeterminationRow.application_id == submitted.application_id,
                    DeterminationRow.round == len(rounds),
                    DeterminationRow.program_code == "maternal_newborn_care",
                )
            )
        ).one()
    assert rounds == ["submitted", "facts_reported"]
    assert latest.outcome == "eligible", "the pension the report told of is known"


async def test_a_re_evaluation_in_the_same_batch_as_the_submission_finds_its_first_round(
    eligibility: RunningService,
) -> None:
    """A transaction keeps its determinations aside to write them together: a re-evaluation later in the same batch
    (a consent that changes no outcome) still compares with the round the submission made, and adds none."""
    resident = uuid.uuid4()
    submitted = birth(resident, earned_income=2_000_000, business_income=0)
    events = (
        birth(uuid.uuid4()),
        registry(resident),
        consents(resident, 1, department_data__welfare=True),
        submitted,
        consents(resident, 2, department_data__welfare=True, proactive_screening=True),
    )
    await one_batch(eligibility, "events", events)
    async with eligibility.runtime.db.read_session() as session:
        query = select(EvaluationRoundRow.trigger).where(EvaluationRoundRow.application_id == submitted.application_id)
        rounds = (await session.scalars(query.order_by(EvaluationRoundRow.round))).all()
        programs = (
            await session.scalars(
                select(DeterminationRow.program_code).where(DeterminationRow.application_id == submitted.application_id)
            )
        ).all()
    assert rounds == ["submitted"], "the consent changed no outcome"
    assert len(programs) == len(set(programs)) > 1, "the first round's determinations, once each"


async def test_determinations_kept_aside_and_not_written_fail_the_commit(eligibility: RunningService) -> None:
    """No determination is lost: a transaction that keeps them aside and commits before writing them fails."""

    async def kept_unwritten() -> None:
        async with eligibility.runtime.db.session() as session:
            repo = Repository(session)
            repo.keep_determinations_aside()
            await repo.add_determinations([{"application_id": uuid.uuid4(), "program_code": "child_allowance"}])

    with pytest.raises(RuntimeError, match="determinations kept aside"):
        await kept_unwritten()
