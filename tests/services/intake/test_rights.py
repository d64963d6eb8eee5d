"""A resident's rights over their data, at intake: a copy of everything (gathered from intake and, over real HTTP, the
real eligibility service), who may ask for it or for erasure (the role x object matrix), bad input that writes
nothing, and the erasure: intake's part at once, the others' answers, the result, and the destruction of what was
kept once its period ends."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from onestop.runner import unused_port
from services.intake import erasure
from services.intake.context import IntakeContext
from services.intake.models import (
    Consent,
    DataExport,
    ErasureRequest,
    Feedback,
    RegistryHousehold,
    Representation,
    Resident,
)
from shared.auth import TokenIssuer
from shared.events import (
    CaseDecided,
    CaseRouted,
    Decision,
    EligibilityDetermined,
    KeptRecords,
    Localized,
    Outcome,
    ResidentErased,
)
from tests.services.intake.support import (
    MAPO_CSC,
    YONGSAN_CSC,
    Downstream,
    birth_application,
    file_application,
    problem_fields,
    program,
    register_self,
    resident_body,
    view_when,
)
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service
from tests.support.waiting import wait_until

JSON = dict[str, Any]
MAPO_NAME = Localized(ko="서교동 주민센터", en="Seogyo-dong Community Service Centre")


@pytest.fixture
async def intake(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    eligibility_url: str,
    intake_token: str,
) -> AsyncIterator[RunningService]:
    """Intake with one other service holding residents' data: the real eligibility, over HTTP."""
    async with running_service(
        "intake",
        database_url=database_url,
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        eligibility_url=eligibility_url,
        service_token=intake_token,
        resident_data_services=["eligibility"],
        export_interval_seconds=0.2,
    ) as service:
        yield service


async def _ready(service: RunningService, location: str, headers: dict[str, str]) -> JSON:
    seen: JSON = {}

    async def ready() -> bool:
        nonlocal seen
        response = await service.client.get(location, headers=headers)
        assert response.status_code == 200, response.text
        seen = response.json()
        return bool(seen["status"] != "pending")

    await wait_until(ready, timeout=20)
    return seen


async def _completed_application(service: RunningService, headers: dict[str, str], resident_id: uuid.UUID) -> JSON:
    """An application a department decided (approved): determined, routed, decided."""
    application = await file_application(service, headers, birth_application(resident_id))
    d = Downstream(service, application)
    case_id = uuid.uuid4()
    determined = EligibilityDetermined(
        determination_id=uuid.uuid4(), application_id=d.application_id, resident_id=d.resident_id, round=1,
        trigger="submitted", application_date=dt.date.today(), evaluated_at=d.clock, resident=d.context,
        programs=[program("parent_benefit", "부모급여", "Parent benefit", Outcome.ELIGIBLE, amount=1_000_000)],
    )  # fmt: skip
    routed = CaseRouted(**d.case_fields(case_id, "parent_benefit"), office_name=MAPO_NAME, status="open",
                        priority=3, automatic=False, reason="district 11440", routed_at=d.clock)  # fmt: skip
    decided = CaseDecided(**d.case_fields(case_id, "parent_benefit"), decision=Decision.APPROVED, automatic=False,
                          reason_code="criteria_met", amount=1_000_000, decided_at=d.clock)  # fmt: skip
    await d.publish(
        d.event(determined, "/onestop/eligibility"), d.event(routed, "/onestop/routing"),
        d.event(decided, "/onestop/routing"),
    )  # fmt: skip
    return await view_when(service, headers, application["id"], lambda v: v["status"] == "completed")


# ---------------------------------------------------------------------------------------------- a copy of everything


async def test_a_copy_of_everything_is_gathered_from_every_service_and_each_access_is_in_the_access_log(
    intake: RunningService,
) -> None:
    resident_id, headers = await register_self(intake)
    await intake.client.put(f"/v1/residents/{resident_id}/consents", headers=headers,
                            json={"consents": {"proactive_screening": True}})  # fmt: skip
    application = await file_application(intake, headers, birth_application(resident_id))

    first = await intake.client.post(
        f"/v1/residents/{resident_id}/data-exports", headers={**headers, "Idempotency-Key": "export-1"}
    )
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "pending"
    assert first.json()["parts"] == {"intake": {"status": "waiting", "error": None},
                                     "eligibility": {"status": "waiting", "error": None}}  # fmt: skip
    again = await intake.client.post(
        f"/v1/residents/{resident_id}/data-exports", headers={**headers, "Idempotency-Key": "export-1"}
    )
    assert again.json()["id"] == first.json()["id"], "a retry is the same export"

    export = await _ready(intake, first.headers["location"], headers)
    assert export["status"] == "ready"
    assert export["parts"] == {"intake": {"status": "gathered", "error": None},
                               "eligibility": {"status": "gathered", "error": None}}  # fmt: skip
    assert export["expires_at"] is not None
    document = export["document"]
    assert (document["format"], document["resident_id"]) == ("onestop-resident-data/1", str(resident_id))
    assert set(document["services"]) == {"intake", "eligibility"}
    mine = document["services"]["intake"]
    assert mine["records"]["resident"][0]["name"] == "김지은"
    assert mine["records"]["resident"][0]["household"][1]["relation"] == "child"
    assert [c["purpose"] for c in mine["records"]["consents"]] == ["proactive_screening"]
    assert [h["purpose"] for h in mine["records"]["consent_history"]] == ["proactive_screening"]
    assert [a["id"] for a in mine["records"]["applications"]] == [application["id"]]
    assert mine["records"]["applications"][0]["answers"]["earned_income"] == 4_200_000
    assert [e["action"] for e in mine["records"]["access_log"]] == ["request export"]
    assert {r["record_type"] for r in mine["retention"]} >= {"resident", "decision_files", "access_log"}
    assert mine["erasure"] is None
    # Eligibility's part came over HTTP with intake's service token: a real, empty part (this shared eligibility
    # never heard of the resident).
    theirs = document["services"]["eligibility"]
    assert (theirs["service"], theirs["resident_id"]) == ("eligibility", str(resident_id))
    assert theirs["records"]["applications"] == []

    log = (await intake.client.get(f"/v1/residents/{resident_id}/access-log", headers=headers)).json()["items"]
    assert [(e["action"], e["actor"]) for e in log] == [
        ("read export", f"resident:{resident_id}"),
        ("request export", f"resident:{resident_id}"),
    ], "the resident's own copies are in their log too: all their data left the platform"


async def test_an_export_a_service_cannot_give_is_retried_then_fails_naming_it(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer,
    eligibility_url: str, intake_token: str,
) -> None:  # fmt: skip
    async with running_service(
        "intake", database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir,
        issuer=issuer, eligibility_url=eligibility_url, service_token=intake_token,
        resident_data_services=["eligibility", "routing"], routing_url=f"http://127.0.0.1:{unused_port()}",
        export_interval_seconds=0.1, export_retry_seconds=0.1, export_max_attempts=2, export_timeout_seconds=2,
    ) as service:  # fmt: skip
        resident_id, headers = await register_self(service)
        created = await service.client.post(f"/v1/residents/{resident_id}/data-exports", headers=headers)
        export = await _ready(service, created.headers["location"], headers)
        assert export["status"] == "failed"
        assert export["attempts"] == 2
        assert export["parts"]["routing"]["status"] == "unavailable"
        assert export["parts"]["eligibility"]["status"] == "gathered"
        assert export["error"] == "not reachable: routing"
        assert export["document"] is None


# ---------------------------------------------------------------------------------------------- who may


async def test_who_may_ask_for_a_copy_of_a_resident_s_data_or_its_erasure(intake: RunningService) -> None:
    client = intake.client
    a_id, a = await register_self(intake)
    b_id, b = await register_self(intake, name="박민수", email="minsu@example.kr")
    rep_id = uuid.uuid4()
    rep_with = intake.auth("resident", resident_id=rep_id)
    rep_without_id = uuid.uuid4()
    rep_without = intake.auth("resident", resident_id=rep_without_id)
    for representative, scopes in ((rep_id, ["data_rights"]), (rep_without_id, ["apply", "answer"])):
        named = await client.post(f"/v1/residents/{a_id}/representations", headers=a, json={
            "representative_id": str(representative), "representative_name": "김보호", "relation": "family",
            "scopes": scopes, "expires_on": (dt.date.today() + dt.timedelta(days=30)).isoformat()})  # fmt: skip
        assert named.status_code == 201, named.text
    application = await file_application(intake, a, birth_application(a_id))
    d = Downstream(intake, application)
    routed = CaseRouted(**d.case_fields(uuid.uuid4(), "parent_benefit"), office_name=MAPO_NAME, status="open",
                        priority=3, automatic=False, reason="district 11440", routed_at=d.clock)  # fmt: skip
    await d.publish(d.event(routed, "/onestop/routing"))
    await view_when(intake, a, application["id"], lambda v: v["status"] == "in_progress")

    callers: dict[str, dict[str, str]] = {
        "resident A": a,
        "resident B": b,
        "representative in scope": rep_with,
        "representative outside it": rep_without,
        "caseworker of the office": intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-park"),
        "caseworker of another office": intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-han"),
        "supervisor of the office": intake.auth("supervisor", offices=[MAPO_CSC], subject="sv-choi"),
        "admin": intake.auth("admin", subject="admin-kang"),
        "partner": intake.auth("partner", partner_id="saebom-ngo"),
        "notify": intake.auth("service", service="notify"),
        "no token": {},
    }

    def expect(allowed: set[str], ok: int, **special: int) -> dict[str, int]:
        out = {who: (ok if who in allowed else 404) for who in callers}
        out["no token"] = 401
        for who, status in special.items():
            out[who.replace("_", " ")] = status
        return out

    # Staff who see A's record (a case in their office) but hold no authority from A: 403; anyone else: 404.
    seeing_staff = {"caseworker_of_the_office": 403, "supervisor_of_the_office": 403, "admin": 403}
    exports: dict[str, str] = {}
    failures = []
    for who, status in expect({"resident A", "representative in scope"}, 202, **seeing_staff).items():
        response = await client.post(f"/v1/residents/{a_id}/data-exports", headers=callers[who])
        if response.status_code != status:
            failures.append(f"POST data-exports as {who}: {response.status_code}, expected {status}")
        elif status == 202:
            exports[who] = response.headers["location"]
        elif status >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
    location = exports["resident A"]
    for who, status in expect({"resident A", "representative in scope"}, 200, **seeing_staff).items():
        response = await client.get(location, headers=callers[who])
        if response.status_code != status:
            failures.append(f"GET {location} as {who}: {response.status_code}, expected {status}")
    assert (await client.get(f"/v1/residents/{a_id}/data-exports/{uuid.uuid4()}", headers=a)).status_code == 404
    assert (await client.get(location.replace(str(a_id), str(b_id)), headers=b)).status_code == 404, "B's? no"

    # The resident authorises the office's counter: its staff may ask for them now.
    authority = await client.post(f"/v1/residents/{a_id}/authorities", headers=callers["supervisor of the office"],
                                  json={"kind": "signed_form", "reference": "F-2026-0113"})  # fmt: skip
    assert authority.status_code == 201, authority.text
    counter = await client.post(f"/v1/residents/{a_id}/data-exports", headers=callers["caseworker of the office"])
    assert counter.status_code == 202, counter.text

    # Erasure: nobody but the resident, their representative in the scope, or the counter goes anywhere.
    body = {"confirm": True}
    refusals = expect(set(), 0, caseworker_of_the_office=SKIP, supervisor_of_the_office=SKIP, admin=403,
                      resident_A=SKIP, representative_in_scope=SKIP)  # fmt: skip
    for who, status in refusals.items():
        if status == SKIP:
            continue
        response = await client.post(f"/v1/residents/{a_id}/erasure-requests", headers=callers[who], json=body)
        if response.status_code != status:
            failures.append(f"POST erasure-requests as {who}: {response.status_code}, expected {status}")
    assert not failures, "\n".join(failures)
    assert await intake.count(ErasureRequest) == 0

    # A withdraws the application still being handled; their representative asks for the erasure, for them.
    withdrawn = await client.post(f"/v1/applications/{application['id']}/withdraw", headers=a, json={})
    assert withdrawn.status_code == 200, withdrawn.text
    created = await client.post(f"/v1/residents/{a_id}/erasure-requests", headers=rep_with, json=body)
    assert created.status_code == 201, created.text
    erasure_location = created.headers["location"]
    log = await _access_log_rows(intake, a_id)
    assert ("request erasure", f"resident:{rep_id}", "representative") in log

    # Afterwards only the resident sees it: the representation and the counter's authority ended with the erasure.
    after = {who: (200 if who == "resident A" else 404) for who in callers}
    after["no token"] = 401
    for who, status in after.items():
        response = await client.get(erasure_location, headers=callers[who])
        if response.status_code != status:
            failures.append(f"GET {erasure_location} as {who}: {response.status_code}, expected {status}")
    assert not failures, "\n".join(failures)


SKIP = 0


async def _access_log_rows(service: RunningService, resident_id: uuid.UUID) -> list[tuple[str, str, str | None]]:
    table = service.runtime.tables.audit_log
    async with service.runtime.db.session() as session:
        rows = (await session.execute(select(table).where(table.c.resident_id == resident_id))).mappings().all()
    return [(r["action"], r["actor"], r["authority_kind"]) for r in rows]


# ---------------------------------------------------------------------------------------------- bad input


async def test_bad_input_is_a_problem_naming_the_field_and_writes_nothing(intake: RunningService) -> None:
    resident_id, headers = await register_self(intake)
    path = f"/v1/residents/{resident_id}/erasure-requests"
    cases: list[tuple[Any, str]] = [
        ({}, "confirm"),
        ({"confirm": False}, "confirm"),
        ({"confirm": "yes"}, "confirm"),
        ({"confirm": True, "reason": ""}, "reason"),
        ({"confirm": True, "reason": "x" * 501}, "reason"),
        ({"confirm": True, "erase": "everything"}, "erase"),
    ]
    for body, field in cases:
        response = await intake.client.post(path, headers=headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert any(field in f for f in problem_fields(response)), (body, response.json())
    not_json = await intake.client.post(path, headers={**headers, "content-type": "application/json"}, content=b"{")
    assert not_json.status_code == 422
    wrong_format = await intake.client.post(
        f"/v1/residents/{resident_id}/data-exports", headers=headers, json={"format": "xml"}
    )
    assert wrong_format.status_code == 422
    assert any("format" in f for f in problem_fields(wrong_format))
    not_a_uuid = await intake.client.get(f"/v1/residents/{resident_id}/erasure-requests/not-a-uuid", headers=headers)
    assert not_a_uuid.status_code == 422

    assert await intake.count(ErasureRequest) == 0
    assert await intake.count(DataExport) == 0
    record = await intake.client.get(f"/v1/residents/{resident_id}", headers=headers)
    assert record.status_code == 200
    assert record.json()["name"] == "김지은"


async def test_erasure_is_refused_while_an_application_is_being_handled_and_writes_nothing(
    intake: RunningService,
) -> None:
    resident_id, headers = await register_self(intake)
    application = await file_application(intake, headers, birth_application(resident_id))
    refused = await intake.client.post(
        f"/v1/residents/{resident_id}/erasure-requests", headers=headers, json={"confirm": True}
    )
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:onestop:problem:applications-open"
    assert refused.json()["applications"] == [application["id"]]
    assert await intake.count(ErasureRequest) == 0
    assert (await intake.client.get(f"/v1/residents/{resident_id}", headers=headers)).json()["name"] == "김지은"


# ---------------------------------------------------------------------------------------------- the erasure


async def test_erasure_erases_intake_s_part_at_once_keeps_what_the_law_keeps_and_destroys_it_when_due(
    intake: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    resident_id, headers = await register_self(intake)
    completed = await _completed_application(intake, headers, resident_id)
    feedback = await intake.client.post(f"/v1/applications/{completed['id']}/feedback", headers=headers,
                                        json={"score": 5, "comment": "빨랐어요"})  # fmt: skip
    assert feedback.status_code == 201, feedback.text
    withdrawn = await file_application(intake, headers, birth_application(resident_id))
    assert (await intake.client.post(f"/v1/applications/{withdrawn['id']}/withdraw", headers=headers,
                                     json={"reason": "이사"})).status_code == 200  # fmt: skip
    await intake.client.put(f"/v1/residents/{resident_id}/consents", headers=headers,
                            json={"consents": {"partner:saebom-ngo": True}})  # fmt: skip
    rep = uuid.uuid4()
    await intake.client.post(f"/v1/residents/{resident_id}/representations", headers=headers, json={
        "representative_id": str(rep), "representative_name": "김보호", "relation": "family", "scopes": ["apply"],
        "expires_on": (dt.date.today() + dt.timedelta(days=30)).isoformat()})  # fmt: skip

    async with event_log(nats_server.url, bus_prefix) as events:
        created = await intake.client.post(
            f"/v1/residents/{resident_id}/erasure-requests", headers=headers,
            json={"confirm": True, "reason": "해외 이주"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        view = created.json()
        assert view["status"] == "in_progress"
        assert [f["application_id"] for f in view["decision_files"]] == [completed["id"]]
        services = {s["service"]: s for s in view["services"]}
        assert services["eligibility"]["status"] == "pending"
        own = services["intake"]
        assert own["status"] == "erased"
        assert own["erased"]["applications_without_decision"] == 1
        assert own["erased"]["feedback"] == 1
        assert own["erased"]["consents"] >= 2
        kept = {k["record_type"]: k for k in own["kept"]}
        decided_year = dt.date.fromisoformat(view["decision_files"][0]["decided_on"]).year
        assert kept["decision_files"]["destroy_on"] == f"{decided_year + 6}-01-01"
        assert kept["representations"]["count"] == 1
        assert {"contact_for_notice", "access_log", "erasure_requests"} <= set(kept)

        requested = await events.wait_for("resident.erasure_requested")
        assert requested[0].data["decision_files"] == view["decision_files"]
        assert requested[0].data["resident_id"] == str(resident_id)

        # At once: the record is gone for everyone, what the law does not keep is gone from the database.
        assert (await intake.client.get(f"/v1/residents/{resident_id}", headers=headers)).status_code == 404
        assert (await intake.client.get(f"/v1/applications/{withdrawn['id']}", headers=headers)).status_code == 404
        kept_view = await intake.client.get(f"/v1/applications/{completed['id']}", headers=headers)
        assert kept_view.status_code == 200, "the decision file is the resident's to see"
        async with intake.runtime.db.session() as session:
            stub = await session.get(Resident, resident_id)
            assert stub is not None
            assert [getattr(stub, c) for c in ("name", "birth_date", "address", "household")] == [None] * 4
            assert stub.email == "jieun.kim@example.kr", "kept to tell the resident the result"
            assert (await session.scalars(select(Consent).where(Consent.resident_id == resident_id))).all() == []
            assert (await session.scalars(select(Feedback).where(Feedback.resident_id == resident_id))).all() == []
            representation = (
                await session.scalars(select(Representation).where(Representation.resident_id == resident_id))
            ).one()
            assert (representation.representative_name, representation.revoked_by) == ("", "erasure")
        again = await intake.client.post(
            f"/v1/residents/{resident_id}/erasure-requests", headers=headers, json={"confirm": True}
        )
        assert again.status_code == 409
        assert again.json()["erasure_id"] == view["id"]
        staff = intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-park")
        for who in (headers, staff):
            filed = await intake.client.post("/v1/applications", headers=who, json=birth_application(resident_id))
            assert filed.status_code == 422, "no one files for an erased resident"
            assert "resident_id" in problem_fields(filed)
        patched = await intake.client.patch(f"/v1/residents/{resident_id}", headers=headers, json={"name": "김"})
        assert patched.status_code == 404

        # Eligibility answers (published here as its outbox would); the request is completed and the resident told.
        answer = ResidentErased(
            erasure_id=uuid.UUID(view["id"]), resident_id=resident_id, service="eligibility",
            erased={"registry": 1}, erased_at=dt.datetime.now(dt.UTC),
            kept=[KeptRecords(record_type="decision_files", count=1, reason=Localized(ko="보존", en="Kept"),
                              legal_basis="공공기록물 관리에 관한 법률 시행령 제26조 (2025-01-01)",
                              destroy_on=dt.date(decided_year + 6, 1, 1))],
        )  # fmt: skip
        published = await intake.publish(answer, source="/onestop/eligibility")
        await intake.publish(published.model_copy(update={"id": str(uuid.uuid4())}))  # a second answer
        done = await _ready_erasure(intake, created.headers["location"], headers)
        eligibility = next(s for s in done["services"] if s["service"] == "eligibility")
        assert eligibility["erased"] == {"registry": 1}
        told = await events.wait_for("resident.erasure_completed")
        assert len(told) == 1
        assert {(k["service"], k["record_type"]) for k in told[0].data["kept"]} >= {
            ("intake", "decision_files"), ("eligibility", "decision_files")}  # fmt: skip

    # Notify may still ask where to tell the resident; a few days after completion the contact details go too.
    notify = intake.auth("service", service="notify")
    contact = await intake.client.get(f"/v1/residents/{resident_id}/contact", headers=notify)
    assert contact.json()["email"] == "jieun.kim@example.kr"
    ctx = intake.context(IntakeContext)
    now = dt.datetime.now(dt.UTC)
    assert (await erasure.purge(intake.runtime.db, ctx.settings, ctx.clock, now + dt.timedelta(days=6)))[
        "contacts"
    ] == 0
    assert (await erasure.purge(intake.runtime.db, ctx.settings, ctx.clock, now + dt.timedelta(days=8)))[
        "contacts"
    ] == 1
    assert (await intake.client.get(f"/v1/residents/{resident_id}/contact", headers=notify)).status_code == 404

    # Two years on, the representation and the access log go; the decision file stays until its day.
    purged = await erasure.purge(intake.runtime.db, ctx.settings, ctx.clock, now + dt.timedelta(days=2 * 366))
    assert purged["representations"] == 1
    assert purged["access_log"] >= 1
    assert purged["decision_files"] == 0
    assert (await intake.client.get(f"/v1/applications/{completed['id']}", headers=headers)).status_code == 200
    # After the decision file's day everything goes, the request's record and the resident's stub last.
    later = dt.datetime(decided_year + 6, 1, 2, tzinfo=dt.UTC)
    purged = await erasure.purge(intake.runtime.db, ctx.settings, ctx.clock, later)
    assert (purged["decision_files"], purged["erasure_requests"], purged["residents"]) == (1, 1, 1)
    assert await intake.count(Resident, Resident.id == resident_id) == 0
    assert await intake.count(ErasureRequest) == 0


async def _ready_erasure(service: RunningService, location: str, headers: dict[str, str]) -> JSON:
    seen: JSON = {}

    async def completed() -> bool:
        nonlocal seen
        seen = (await service.client.get(location, headers=headers)).json()
        return bool(seen["status"] == "completed")

    await wait_until(completed, timeout=20)
    return seen


async def test_a_registered_household_s_key_goes_with_the_last_of_its_residents(intake: RunningService) -> None:
    clerk = intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-lee")
    key = "1144012-000555"
    ids = []
    for name in ("김지은", "박서준"):
        created = await intake.client.post("/v1/residents", headers=clerk,
                                           json=resident_body(name=name, registry_household=key))  # fmt: skip
        assert created.status_code == 201, created.text
        ids.append(uuid.UUID(created.json()["id"]))

    async def registry_keys() -> list[str]:
        async with intake.runtime.db.session() as session:
            return list((await session.scalars(select(RegistryHousehold.registry_key))).all())

    for n, resident_id in enumerate(ids):
        own = intake.auth("resident", resident_id=resident_id)
        erased = await intake.client.post(f"/v1/residents/{resident_id}/erasure-requests", headers=own,
                                          json={"confirm": True})  # fmt: skip
        assert erased.status_code == 201, erased.text
        async with intake.runtime.db.session() as session:
            stub = await session.get(Resident, resident_id)
            assert stub is not None
            assert (stub.registry_household, stub.household_id) == (None, None)
        # The household stays while a resident registered in it does; the last one takes its key along.
        assert await registry_keys() == ([key] if n == 0 else [])
