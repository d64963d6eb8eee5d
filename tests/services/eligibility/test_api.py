"""The HTTP API of the real service (migrated, seeded, on the real bus), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select

from services.eligibility.context import EligibilityContext
from services.eligibility.models import (
    CatalogueStateRow,
    DepartmentFactRow,
    DeterminationRow,
    ProgramRow,
    RuleVersionRow,
)
from services.eligibility.models import platform as tables
from shared.events import ApplicationSubmitted, EventData, ResidentContext
from tests.services.eligibility.support import case_routed, case_transferred, today
from tests.support.services import RunningService
from tests.support.waiting import wait_until

PROBLEM = "application/problem+json"


def later(days: int) -> str:
    return (today() + dt.timedelta(days=days)).isoformat()


def new_version(**overrides: Any) -> dict[str, Any]:
    """A PUT body for a new basic pension version (its attributes as they are)."""
    body: dict[str, Any] = {
        "name": {"ko": "기초연금", "en": "Basic pension"},
        "department": "welfare",
        "life_events": ["turning_65"],
        "automatic": False,
        "sla_days": 30,
        "case_weight": 1.5,
        "version": {
            "effective_from": later(30),
            "source": "기초연금법 제3조 (test)",
            "definitions": {"threshold": "has_spouse ? 4000000 : 2500000"},
            "rule": {
                "all": [
                    {"id": "age_65", "label": {"ko": "65세", "en": "65"}, "expr": "age_years >= 65"},
                    {"id": "income", "label": {"ko": "소득", "en": "income"},
                     "expr": "pension_recognised_income <= threshold"},
                ]
            },
        },
    }  # fmt: skip
    body["version"].update(overrides.pop("version", {}))
    body.update(overrides)
    return body


async def test_the_catalogue_is_compiled_before_the_service_serves(eligibility: RunningService) -> None:
    """Compiled on first use, the catalogue held the event loop while the first requests and events waited: the
    service compiles it as it starts, and the first request finds it current (nothing compiled again)."""
    store = eligibility.context(EligibilityContext).eligibility.store
    compiled = store.loaded
    assert compiled is not None, "the catalogue is compiled at start-up"
    assert compiled.programs, compiled
    answer = await eligibility.client.get(
        "/v1/programs", headers=eligibility.auth("resident", resident_id=uuid.uuid4())
    )
    assert answer.status_code == 200, answer.text
    assert store.loaded is compiled, "the first request used the catalogue compiled at start-up"


async def test_the_catalogue_can_be_read_by_anyone_authenticated(eligibility: RunningService) -> None:
    client = eligibility.client
    resident = eligibility.auth("resident", resident_id=uuid.uuid4())
    assert (await client.get("/v1/programs")).status_code == 401

    programs = (await client.get("/v1/programs", headers=resident)).json()
    assert len(programs) >= 30
    assert {p["department"] for p in programs} == {"welfare", "health", "housing", "tax", "civil_registry", "labour"}
    pension = next(p for p in programs if p["code"] == "basic_pension")
    assert pension["current_version"] == (2 if today() >= dt.date(2026, 1, 1) else 1)
    tax = (await client.get("/v1/programs", params={"department": "tax"}, headers=resident)).json()
    assert tax
    assert {p["department"] for p in tax} == {"tax"}
    births = (await client.get("/v1/programs", params={"life_event": "birth"}, headers=resident)).json()
    assert "first_meeting_voucher" in {p["code"] for p in births}

    detail = (await client.get("/v1/programs/basic_pension", headers=resident)).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["versions"][0]["effective_from"] == "2025-01-01"
    assert detail["versions"][0]["rule"]["all"][0]["expr"] == "calendar_age_months >= 779"
    assert "기초연금법" in detail["versions"][0]["source"]
    missing = await client.get("/v1/programs/no_such_program", headers=resident)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM

    events = (await client.get("/v1/life-events", headers=resident)).json()
    assert {e["code"] for e in events} == {
        "birth", "moving_in", "job_loss", "death_in_family", "turning_65", "starting_business",
    }  # fmt: skip
    birth = next(e for e in events if e["code"] == "birth")
    assert set(birth["name"]) == {"ko", "en"}
    assert {"code", "name", "department"} <= set(birth["programs"][0])
    assert "child_allowance" in {p["code"] for p in birth["programs"]}

    facts = {f["name"]: f for f in (await client.get("/v1/fact-types", headers=resident)).json()}
    assert {"name", "type", "question", "asked_of", "enum"} <= set(facts["employment_status"])
    assert facts["employment_status"]["enum"] == ["employed", "unemployed", "self_employed", "not_in_labour_force"]
    assert facts["insured_days_18m"]["asked_of"] == "staff"
    assert facts["age_years"]["derived"]
    assert facts["age_years"]["inputs"] == ["birth_date"]
    assert {f["type"] for f in facts.values()} <= {"integer", "number", "boolean", "string", "date", "list"}


async def test_put_adds_a_future_version_and_refuses_bad_ones_without_writing(eligibility: RunningService) -> None:
    client = eligibility.client
    admin = eligibility.auth("admin")
    before = {
        "versions": await eligibility.count(RuleVersionRow),
        "programs": await eligibility.count(ProgramRow),
        "outbox": await eligibility.count(tables.outbox),
        "revision": await eligibility.count(CatalogueStateRow),
    }
    leaf = {"id": "x", "label": {"ko": "x", "en": "x"}}
    refused = [
        (new_version(version={"effective_from": today().isoformat()}), "version.effective_from"),
        (new_version(version={"effective_from": "2020-01-01"}), "version.effective_from"),
        (new_version(version={"rule": {**leaf, "expr": "salary > 1"}}), "version.rule.expr"),
        (new_version(version={"rule": {**leaf, "expr": "birth_date > 65"}}), "version.rule.expr"),
        (new_version(version={"rule": {**leaf, "expr": "tenure == 'castle'"}}), "version.rule.expr"),
        (new_version(version={"rule": {"all": [{**leaf, "expr": "true"}, {**leaf, "expr": "false"}]}}),
         "version.rule.all[1].id"),
        (new_version(version={"rule": {"expr": "true"}}), "version.rule"),
        (new_version(version={"definitions": {"a": "b", "b": "a"}, "rule": {**leaf, "expr": "a"}}),
         "version.definitions.a"),
        (new_version(version={"amount": {"expr": "age_years * 0.5", "period": "monthly"}}), "version.amount.expr"),
        (new_version(version={"rule": {**leaf, "program": "senior_job_program"}}), "version.rule"),  # a cycle
        (new_version(department="police"), "department"),
        (new_version(sla_days=0), "sla_days"),
    ]  # fmt: skip
    for body, field in refused:
        response = await client.put("/v1/programs/basic_pension", json=body, headers=admin)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert field in {e["field"] for e in response.json()["errors"]}, (field, response.json())
    assert (await client.put("/v1/programs/Bad-Code", json=new_version(), headers=admin)).status_code == 422
    for role, claims in (("caseworker", {"offices": ["mapo"]}), ("supervisor", {"offices": ["mapo"]}),
                         ("resident", {"resident_id": uuid.uuid4()}), ("partner", {"partner_id": "nts"})):  # fmt: skip
        response = await client.put(
            "/v1/programs/basic_pension", json=new_version(), headers=eligibility.auth(role, **claims)
        )
        assert response.status_code == 403, role
    after = {
        "versions": await eligibility.count(RuleVersionRow),
        "programs": await eligibility.count(ProgramRow),
        "outbox": await eligibility.count(tables.outbox),
        "revision": await eligibility.count(CatalogueStateRow),
    }
    assert after == before, "a refused version must leave nothing behind"

    # A valid version from a later date: added, scheduled, the one in force untouched.
    detail_before = (await client.get("/v1/programs/basic_pension", headers=admin)).json()
    response = await client.put("/v1/programs/basic_pension", json=new_version(), headers=admin)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["current_version"] == detail_before["current_version"]
    assert detail["versions"][:-1] == detail_before["versions"]
    assert detail["versions"][-1] | {"created_at": None} == detail["versions"][-1] | {
        "version": 3, "status": "scheduled", "origin": "api", "effective_from": later(30), "created_at": None,
    }  # fmt: skip
    # A second PUT from an earlier (still future) date supersedes the scheduled one it overtakes.
    earlier = await client.put(
        "/v1/programs/basic_pension", json=new_version(version={"effective_from": later(10)}), headers=admin
    )
    statuses = {v["version"]: v["status"] for v in earlier.json()["versions"]}
    assert statuses[3] == "superseded"
    assert statuses[4] == "scheduled"

    # The screener judges by the version in force on the date asked about.
    facts = {
        "birth_date": "1950-01-01",
        "korean_national": True,
        "household_size": 1,
        "has_spouse": False,
        "district_code": "11440",
        "earned_income": 0,
        "business_income": 0,
        "public_pension_income": 2_490_000,
        **dict.fromkeys(("residence_value", "other_property_value", "financial_assets", "vehicle_value", "debts"), 0),
    }
    now = await client.post("/v1/evaluate", json={"facts": facts, "programs": ["basic_pension"]}, headers=admin)
    then = await client.post(
        "/v1/evaluate",
        json={"facts": facts, "programs": ["basic_pension"], "application_date": later(10)},
        headers=admin,
    )
    assert now.json()["programs"][0]["rule_version"] == detail_before["current_version"]
    assert then.json()["programs"][0] | {"criteria": []} == then.json()["programs"][0] | {
        "rule_version": 4, "outcome": "eligible", "criteria": [],
    }  # fmt: skip

    # A new program.
    created = await client.put(
        "/v1/programs/city_newborn_gift",
        json=new_version(
            name={"ko": "출산 축하 선물", "en": "Newborn gift"},
            life_events=["birth"],
            automatic=True,
            version={"definitions": {}, "rule": {**leaf, "expr": "child_age_months < 12"}},
        ),
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["current_version"] is None
    assert created.json()["versions"][0]["status"] == "scheduled"


async def test_the_screener_judges_facts_and_stores_nothing(eligibility: RunningService) -> None:
    client = eligibility.client
    resident = eligibility.auth("resident", resident_id=uuid.uuid4())
    facts = {
        "korean_national": True,
        "children_birth_dates": [],
        "child_birth_date": "2025-03-01",
        "birth_registered": True,
        "birth_order": 2,
        "newborns": 1,
        "district_code": "11440",
    }
    response = await client.post(
        "/v1/evaluate", json={"facts": facts, "life_event": "birth", "application_date": "2025-03-10"}, headers=resident
    )
    assert response.status_code == 200, response.text
    body = response.json()
    by_code = {p["program_code"]: p for p in body["programs"]}
    assert by_code["first_meeting_voucher"]["outcome"] == "eligible"
    assert by_code["first_meeting_voucher"]["amount"] == 3_000_000
    assert by_code["parent_benefit"]["amount"] == 1_000_000
    assert by_code["child_allowance"]["amount"] == 100_000
    assert by_code["birth_registration"]["department"] == "civil_registry"
    assert by_code["maternal_newborn_care"]["outcome"] == "needs_information"
    asked = {m["name"] for m in body["missing"]}
    assert {"household_size", "has_spouse", "earned_income"} <= asked, "what a person can answer, not an income total"
    assert "household_income" not in asked
    assert len(asked) == len(body["missing"]), "each missing fact once"

    bad = [
        ({"facts": {"household_size": "three"}}, "facts.household_size"),
        ({"facts": {"salary": 1}}, "facts.salary"),
        ({"facts": {"age_years": 70}}, "facts.age_years"),  # derived: give birth_date
        ({"facts": {"tenure": "castle"}}, "facts.tenure"),
        ({"facts": {"children_birth_dates": ["not a date"]}}, "facts.children_birth_dates[0]"),
        ({"facts": {}, "programs": ["nothing_like_this"]}, "programs[0]"),
        ({"facts": {}, "programs": ["livelihood_benefit"], "application_date": "2020-01-01"}, "programs[0]"),
        ({"facts": {}, "life_event": "wedding"}, "life_event"),
    ]
    for request, field in bad:
        response = await client.post("/v1/evaluate", json=request, headers=resident)
        assert response.status_code == 422, (field, response.text)
        assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    assert await eligibility.count(DeterminationRow) == 0
    assert await eligibility.count(tables.outbox) == 0


async def test_departments_report_facts_within_their_authority(eligibility: RunningService) -> None:
    client = eligibility.client
    resident_id = uuid.uuid4()
    observed = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    income = {"name": "financial_assets", "value": 700_000, "observed_at": observed}
    body = {"resident_id": str(resident_id), "facts": [income]}
    welfare = eligibility.auth("partner", partner_id="ssis")

    refused = [
        (eligibility.auth("partner", partner_id="unknown-bank"), body, 403, None),
        (welfare, {**body, "department": "tax"}, 403, None),
        (eligibility.auth("resident", resident_id=resident_id), body, 403, None),
        (eligibility.auth("caseworker", offices=["mapo"]), body, 403, None),
        (eligibility.auth("admin"), body, 422, "department"),
        (welfare, {**body, "facts": [{**income, "name": "birth_date", "value": "1990-01-01"}]}, 422, "facts[0].name"),
        (welfare, {**body, "facts": [{**income, "name": "age_years", "value": 3}]}, 422, "facts[0].name"),
        (welfare, {**body, "facts": [{**income, "value": "lots"}]}, 422, "facts[0].value"),
        (welfare, {**body, "facts": [income, {**income, "name": "salary"}]}, 422, "facts[1].name"),
        (welfare, {**body, "facts": [{**income, "valid_until": observed}]}, 422, "facts[0].valid_until"),
        (welfare, {**body, "facts": []}, 422, "facts"),
    ]
    for headers, request, status, field in refused:
        response = await client.post("/v1/facts", json=request, headers=headers)
        assert response.status_code == status, (request, response.text)
        assert response.headers["content-type"] == PROBLEM
        if field:
            assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    assert await eligibility.count(DepartmentFactRow) == 0

    keyed = {**welfare, "Idempotency-Key": "report-1"}
    first = await client.post("/v1/facts", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert first.json() | {"report_id": None} == {
        "report_id": None, "resident_id": str(resident_id), "department": "welfare", "source": "ssis", "accepted": 1,
        "reevaluated_applications": 0, "new_rounds": 0,
    }  # fmt: skip
    again = await client.post("/v1/facts", json=body, headers=keyed)
    assert again.status_code == 201
    assert again.json() == first.json(), "a retry gets the original answer"
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/facts", json={**body, "facts": [{**income, "value": 1}]}, headers=keyed)
    assert other.status_code == 422
    # An integer beyond 64 bits cannot be carried as JSON by the platform: refused with the request, also when its
    # key was used before (the key's fingerprint is never taken of it).
    huge = {**body, "facts": [{**income, "value": {"nested": [-(10**19)]}}]}
    for headers in (welfare, keyed):
        refused_huge = await client.post("/v1/facts", json=huge, headers=headers)
        assert refused_huge.status_code == 422, refused_huge.text
        assert [e["field"] for e in refused_huge.json()["errors"]] == ["facts[0].value"]
    assert await eligibility.count(DepartmentFactRow) == 1

    report_id = str(uuid.uuid4())
    admin = eligibility.auth("admin")
    by_admin = {**body, "department": "tax", "source": "nts-batch", "report_id": report_id}
    assert (await client.post("/v1/facts", json=by_admin, headers=admin)).status_code == 201
    assert (await client.post("/v1/facts", json=by_admin, headers=admin)).status_code == 409
    assert await eligibility.count(DepartmentFactRow) == 2


async def _application(service: RunningService, resident_id: uuid.UUID, *routing: EventData) -> uuid.UUID:
    """A submitted application (evaluated: round 1), and what routing then did with its case, all over the bus."""
    app = uuid.uuid4()
    await service.publish(
        ApplicationSubmitted(
            application_id=app, resident_id=resident_id, life_event="birth", answers={}, channel="web",
            application_date=today(), submitted_at=dt.datetime.now(dt.UTC),
            resident=ResidentContext(district_code="11440"),
        ),
    )  # fmt: skip
    for data in routing:
        await service.publish(data.model_copy(update={"application_id": app}), source="/onestop/routing")
    return app


async def test_who_may_do_what(eligibility: RunningService) -> None:
    """The authorization matrix: each endpoint against each role (and no token at all). An application's
    determinations: its resident, an administrator, and office staff only while a case of it is in their office."""
    client = eligibility.client
    resident_id = uuid.uuid4()
    roles = {
        "anonymous": {},
        "resident": eligibility.auth("resident", resident_id=resident_id),
        "caseworker": eligibility.auth("caseworker", offices=["MAPO-CSC"]),
        "supervisor": eligibility.auth("supervisor", offices=["MAPO-CSC", "MAPO-HC"]),
        "admin": eligibility.auth("admin"),
        "partner": eligibility.auth("partner", partner_id="ssis"),
        "service": eligibility.auth("service", service="intake"),
    }
    nobody = uuid.uuid4()  # a placeholder: _application sets each event's application
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # The resident's own application, with a case in MAPO-CSC.
    own = await _application(eligibility, resident_id, case_routed(nobody, resident_id, "MAPO-CSC"))
    # Another resident's, with a case elsewhere (and one in MAPO-HC, the supervisor's only).
    other = uuid.uuid4()
    elsewhere = await _application(eligibility, other, case_routed(nobody, other, "JONGNO-CSC"),
                                   case_routed(nobody, other, "MAPO-HC"))  # fmt: skip
    # Routed to MAPO-CSC, then transferred away; the routing redelivered late (a new event, the older time) moves
    # nothing back.
    routed = case_routed(nobody, other, "MAPO-CSC", at=earlier)
    moved = await _application(eligibility, other, routed, case_transferred(routed, "JONGNO-CSC"), routed)
    # Not routed (yet).
    unrouted = await _application(eligibility, other)
    await wait_until(lambda: eligibility.settled("events"))
    await wait_until(lambda: eligibility.settled("case-offices"))

    fact = {"name": "financial_assets", "value": 1, "observed_at": dt.datetime.now(dt.UTC).isoformat()}
    screening = {"programs": ["senior_transport_card"]}
    staff_only = {"partner": 403, "resident": 404, "service": 404}
    endpoints: list[tuple[str, str, Any, dict[str, int]]] = [
        ("GET", "/v1/programs", None, {}),
        ("GET", "/v1/programs/basic_pension", None, {}),
        ("GET", "/v1/life-events", None, {}),
        ("GET", "/v1/fact-types", None, {}),
        ("POST", "/v1/evaluate", {"facts": {}}, {}),
        ("PUT", "/v1/programs/basic_pension", new_version(),
         {"resident": 403, "caseworker": 403, "supervisor": 403, "partner": 403, "service": 403}),
        ("POST", "/v1/facts", {"resident_id": str(resident_id), "facts": [fact]},
         {"resident": 403, "caseworker": 403, "supervisor": 403, "service": 403, "admin": 422}),
        ("POST", "/v1/screenings", screening, {"resident": 403, "caseworker": 403, "partner": 403, "service": 403}),
        ("GET", f"/v1/screenings/{uuid.uuid4()}", None,
         {"resident": 403, "caseworker": 403, "partner": 403, "service": 403, "supervisor": 404, "admin": 404}),
        ("GET", f"/v1/applications/{uuid.uuid4()}/determinations", None, {"partner": 403, "_": 404}),
        ("GET", f"/v1/applications/{own}/determinations", None, {"partner": 403, "service": 404}),
        ("GET", f"/v1/applications/{elsewhere}/determinations", None, {**staff_only, "caseworker": 404}),
        ("GET", f"/v1/applications/{moved}/determinations", None, {**staff_only, "caseworker": 404, "supervisor": 404}),
        ("GET", f"/v1/applications/{unrouted}/determinations", None,
         {**staff_only, "caseworker": 404, "supervisor": 404}),
        ("GET", "/v1/admin/dead-letters", None,
         {"resident": 403, "caseworker": 403, "supervisor": 403, "partner": 403, "service": 403}),
        # A resident's whole part of their export: the resident, and intake gathering it (any resident's).
        ("GET", f"/v1/residents/{resident_id}/data", None, {"caseworker": 404, "supervisor": 404, "admin": 404,
                                                           "partner": 404}),
        ("GET", f"/v1/residents/{other}/data", None, {"resident": 404, "caseworker": 404, "supervisor": 404,
                                                     "admin": 404, "partner": 404}),
    ]  # fmt: skip
    read: list[tuple[str, str]] = []
    for method, path, body, exceptions in endpoints:
        for role, headers in roles.items():
            response = await client.request(method, path, json=body, headers=headers)
            if role == "anonymous":
                expected = 401
            else:
                expected = exceptions.get(role, exceptions.get("_", 201 if method in ("POST", "PUT") else 200))
                if method == "PUT" and expected == 201:
                    expected = 200  # the program exists
                if path == "/v1/evaluate" and expected == 201:
                    expected = 200
            assert response.status_code == expected, (method, path, role, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == PROBLEM
            if path.endswith("/determinations") and response.status_code == 200:
                assert response.json()["round"] == 1
                if role != "resident":
                    read.append((role, path.split("/")[3]))
            if path.endswith("/data") and response.status_code == 200:
                assert response.json()["service"] == "eligibility"
                if role != "resident":
                    read.append((role, path.split("/")[3]))
    assert sorted(read) == sorted(
        [("admin", str(own)), ("caseworker", str(own)), ("supervisor", str(own)), ("supervisor", str(elsewhere)),
         ("admin", str(elsewhere)), ("admin", str(moved)), ("admin", str(unrouted)),
         ("service", str(resident_id)), ("service", str(other))]
    )  # fmt: skip
    async with eligibility.runtime.db.session() as session:
        audited = (await session.execute(select(tables.audit_log.c.actor_role, tables.audit_log.c.record_id))).all()
    assert sorted(audited) == sorted(read), "each staff (or intake) read is audited, and nothing else"
