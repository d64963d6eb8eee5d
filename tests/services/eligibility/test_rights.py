"""A resident's data in eligibility: their part of an export (everything held, over the API), their erasure
(``resident.erasure_requested`` over the real bus: the decision files kept, everything else gone, one answer), nothing
stored about them afterwards (late events, a department's report), and the decision files destroyed when due."""

from __future__ import annotations

import datetime as dt
import uuid

from services.eligibility import resident_data
from services.eligibility.context import EligibilityContext
from services.eligibility.models import (
    ApplicationRow,
    CaseOfficeRow,
    DepartmentFactRow,
    DeterminationRow,
    ResidentErasureRow,
    ResidentRow,
)
from shared.clock import Clock
from shared.events import (
    ApplicationSubmitted,
    ConsentChanged,
    DecisionFile,
    FactsReported,
    ReportedFact,
    ResidentContext,
    ResidentErasureRequested,
    ResidentUpdated,
)
from tests.services.eligibility.support import case_routed, today
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until


def _submitted(resident_id: uuid.UUID) -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=uuid.uuid4(), resident_id=resident_id, life_event="job_loss", channel="web",
        answers={"employment_status": "unemployed", "crisis_type": "main_earner_job_loss"},
        application_date=today(), submitted_at=dt.datetime.now(dt.UTC),
        resident=ResidentContext(district_code="11440", vulnerability=["disability"]),
    )  # fmt: skip


def _report(resident_id: uuid.UUID, value: int) -> FactsReported:
    now = dt.datetime.now(dt.UTC)
    return FactsReported(
        report_id=uuid.uuid4(), source="hometax", department="tax", resident_id=resident_id, reported_at=now,
        facts=[ReportedFact(name="earned_income", value=value, observed_at=now)],
    )  # fmt: skip


async def test_a_resident_s_part_then_their_erasure_keeping_only_the_decision_files(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    resident_id = uuid.uuid4()
    own = eligibility.auth("resident", resident_id=resident_id)
    intake = eligibility.auth("service", service="intake")
    decided, dropped = _submitted(resident_id), _submitted(resident_id)
    registry = ResidentUpdated(
        resident_id=resident_id, version=1, birth_date=dt.date(1984, 2, 2), district_code="11440",
        vulnerability=["disability"], updated_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    consents = ConsentChanged(resident_id=resident_id, version=1, consents={"department_data:tax": True},
                              changed=["department_data:tax"], changed_at=dt.datetime.now(dt.UTC))  # fmt: skip
    for data in (registry, consents, decided, dropped, _report(resident_id, 1_500_000)):
        await eligibility.publish(data, source="/onestop/intake")
    await eligibility.publish(case_routed(decided.application_id, resident_id, "MAPO-CSC"), source="/onestop/routing")
    await wait_until(lambda: eligibility.settled())

    # The part: everything eligibility holds, with its retention table.
    response = await eligibility.client.get(f"/v1/residents/{resident_id}/data", headers=own)
    assert response.status_code == 200, response.text
    part = response.json()
    records = part["records"]
    assert part["service"] == "eligibility"
    assert records["registry"][0]["vulnerability"] == ["disability"]
    assert records["registry"][0]["consents"] == {"department_data:tax": True}
    assert [f["name"] for f in records["department_facts"]] == ["earned_income"]
    assert {a["application_id"] for a in records["applications"]} == {str(decided.application_id),
                                                                     str(dropped.application_id)}  # fmt: skip
    assert {d["program_code"] for d in records["determinations"]} >= {"emergency_welfare"}
    assert [c["office_code"] for c in records["case_offices"]] == ["MAPO-CSC"]
    assert {r["record_type"] for r in part["retention"]} >= {"decision_files", "department_facts"}
    assert part["erasure"] is None
    read = await eligibility.client.get(f"/v1/residents/{resident_id}/data", headers=intake,
                                        params={"export_id": str(uuid.uuid4())})  # fmt: skip
    assert read.json()["records"]["access_log"][-1]["actor"] == "service:intake", "intake's read is audited"

    # The erasure: one decision file named by intake; the rest goes.
    decided_on = today()
    request = ResidentErasureRequested(
        erasure_id=uuid.uuid4(), resident_id=resident_id, requested_at=dt.datetime.now(dt.UTC),
        decision_files=[DecisionFile(application_id=decided.application_id, decided_on=decided_on)],
    )  # fmt: skip
    async with event_log(nats_server.url, bus_prefix) as events:
        await eligibility.publish(request, source="/onestop/intake")
        await eligibility.publish(request, source="/onestop/intake")  # intake asked twice: one answer
        answer = (await events.wait_for("resident.erased"))[0].data
        await wait_until(lambda: eligibility.settled())
        assert len(events.of_type("resident.erased")) == 1
    assert (answer["service"], answer["resident_id"]) == ("eligibility", str(resident_id))
    assert answer["erased"] == {"registry": 1, "department_facts": 1, "opportunities": 0, "screening_questions": 0,
                                "screening_answers": 0, "screening_schedule": 0, "applications_without_decision": 1,
                                "stored_answers": 0}  # fmt: skip
    kept = {k["record_type"]: k for k in answer["kept"]}
    assert kept["decision_files"]["count"] == 1
    assert kept["decision_files"]["destroy_on"] == f"{decided_on.year + 6}-01-01"
    assert "공공기록물" in kept["decision_files"]["legal_basis"]
    assert {"access_log", "erasure_record"} <= set(kept)

    assert await eligibility.count(ResidentRow, ResidentRow.resident_id == resident_id) == 0
    assert await eligibility.count(DepartmentFactRow, DepartmentFactRow.resident_id == resident_id) == 0
    assert await eligibility.count(ApplicationRow, ApplicationRow.application_id == dropped.application_id) == 0
    assert await eligibility.count(DeterminationRow, DeterminationRow.application_id == dropped.application_id) == 0
    assert await eligibility.count(DeterminationRow, DeterminationRow.application_id == decided.application_id) >= 1
    after = (await eligibility.client.get(f"/v1/residents/{resident_id}/data", headers=own)).json()
    assert after["records"]["registry"] == []
    assert [a["application_id"] for a in after["records"]["applications"]] == [str(decided.application_id)]
    assert after["records"]["applications"][0]["resident_context"] is None, "the vulnerabilities went with it"
    assert after["erasure"]["kept"] == answer["kept"]

    # Afterwards nothing about the resident is stored: a late registry event, a department's report (bus or API).
    await eligibility.publish(registry.model_copy(update={"version": 2}), source="/onestop/intake")
    await eligibility.publish(_report(resident_id, 2_000_000), source="/onestop/tax")
    await eligibility.publish(case_routed(uuid.uuid4(), resident_id, "MAPO-CSC"), source="/onestop/routing")
    await wait_until(lambda: eligibility.settled())
    tax = eligibility.auth("partner", partner_id="nts")
    fact = {"name": "earned_income", "value": 1, "observed_at": dt.datetime.now(dt.UTC).isoformat()}
    reported = await eligibility.client.post(
        "/v1/facts", headers=tax, json={"resident_id": str(resident_id), "source": "hometax", "facts": [fact]}
    )
    assert reported.status_code == 201, reported.text
    assert reported.json()["accepted"] == 0
    assert await eligibility.count(ResidentRow, ResidentRow.resident_id == resident_id) == 0
    assert await eligibility.count(DepartmentFactRow, DepartmentFactRow.resident_id == resident_id) == 0
    assert await eligibility.count(CaseOfficeRow, CaseOfficeRow.application_id == decided.application_id) == 1

    # The decision file is destroyed on its day, and the erasure's record once nothing is kept under it.
    ctx = eligibility.context(EligibilityContext)
    clock = Clock.from_settings(ctx.settings)
    before_day = dt.datetime(decided_on.year + 5, 12, 31, 12, tzinfo=dt.UTC)
    purged = await resident_data.purge(eligibility.runtime.db, clock, before_day)
    assert purged["decision_files"] == 0
    assert purged["access_log"] >= 1, "the access log went after its two years"
    purged = await resident_data.purge(eligibility.runtime.db, clock, before_day + dt.timedelta(days=2))
    assert (purged["decision_files"], purged["erasure_records"]) == (1, 1)
    assert await eligibility.count(ApplicationRow, ApplicationRow.resident_id == resident_id) == 0
    assert await eligibility.count(CaseOfficeRow, CaseOfficeRow.application_id == decided.application_id) == 0
    assert await eligibility.count(ResidentErasureRow) == 0


async def test_only_the_resident_and_intake_read_a_resident_s_whole_part(eligibility: RunningService) -> None:
    resident_id = uuid.uuid4()
    callers: dict[str, tuple[dict[str, str], int]] = {
        "own": (eligibility.auth("resident", resident_id=resident_id), 200),
        "other resident": (eligibility.auth("resident", resident_id=uuid.uuid4()), 404),
        "notify": (eligibility.auth("service", service="notify"), 404),
        "intake": (eligibility.auth("service", service="intake"), 200),
    }
    for who, (headers, expected) in callers.items():
        response = await eligibility.client.get(f"/v1/residents/{resident_id}/data", headers=headers)
        assert response.status_code == expected, (who, response.text)
    bad = await eligibility.client.get(f"/v1/residents/{resident_id}/data", headers=eligibility.auth("admin"),
                                       params={"export_id": "not-a-uuid"})  # fmt: skip
    assert bad.status_code == 422
