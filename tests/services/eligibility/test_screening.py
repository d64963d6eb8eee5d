"""Proactive screening: only residents who consented, only programs they never applied to, each told once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable

from services.eligibility.models import OpportunityRow, ResidentRow
from shared.events import ApplicationSubmitted, ConsentChanged, HouseholdMember, ResidentContext, ResidentUpdated
from tests.services.eligibility.support import today
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def resident(
    service: RunningService,
    born: dt.date,
    *,
    district: str = "11440",
    household: list[HouseholdMember] | None = None,
    **purposes: bool,
) -> uuid.UUID:
    resident_id = uuid.uuid4()
    await service.publish(
        ResidentUpdated(resident_id=resident_id, version=1, birth_date=born, district_code=district,
                        household=household or [], updated_at=now()),
    )  # fmt: skip
    given = {k.replace("__", ":"): v for k, v in purposes.items()}
    await service.publish(
        ConsentChanged(resident_id=resident_id, version=1, consents=given, changed=list(given), changed_at=now()),
    )
    return resident_id


async def test_screening_finds_what_consenting_residents_never_applied_for(
    eligibility: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    client = eligibility.client
    senior = await resident(eligibility, dt.date(1950, 5, 1), proactive_screening=True, department_data__welfare=True,
                            department_data__civil_registry=True, department_data__tax=True)  # fmt: skip
    applied = await resident(eligibility, dt.date(1955, 5, 1), proactive_screening=True)
    refused = await resident(eligibility, dt.date(1950, 5, 1), proactive_screening=False)
    young = await resident(eligibility, dt.date(2000, 5, 1), proactive_screening=True)
    observed = (now() - dt.timedelta(hours=1)).isoformat()
    # What the departments hold of the senior (and of the one who refused screening): a pension of 1,000,000 a
    # month, no other income, no assets, no occupational pension; the registry holds the rest (living alone).
    reports: dict[str, dict[str, object]] = {
        "ssis": {"public_pension_income": 1_000_000, "financial_assets": 0, "debts": 0,
                 "occupational_pension_recipient": False},
        "nts": {"earned_income": 0, "business_income": 0, "residence_value": 0, "other_property_value": 0,
                "vehicle_value": 0},
        "moi": {"korean_national": True},
    }  # fmt: skip
    for partner, facts in reports.items():
        for who in (senior, refused):
            body = {"resident_id": str(who), "facts": [
                {"name": name, "value": value, "observed_at": observed} for name, value in facts.items()
            ]}  # fmt: skip
            response = await client.post("/v1/facts", json=body,
                                         headers=eligibility.auth("partner", partner_id=partner))  # fmt: skip
            assert response.status_code == 201, response.text
    await eligibility.publish(
        ApplicationSubmitted(
            application_id=uuid.uuid4(), resident_id=applied, life_event="turning_65", answers={}, channel="visit",
            application_date=today(), submitted_at=now(), resident=ResidentContext(district_code="11440"),
        ),
    )  # fmt: skip
    await wait_until(lambda: eligibility.settled("events"))
    assert await eligibility.count(ResidentRow, ResidentRow.proactive_screening.is_(True)) == 3

    supervisor = {**eligibility.auth("supervisor", offices=["mapo"]), "Idempotency-Key": "screen-1"}
    async with event_log(nats_server.url, bus_prefix) as log:
        response = await client.post("/v1/screenings", json={}, headers=supervisor)
        assert response.status_code == 201, response.text
        assert "Idempotent-Replayed" not in response.headers
        first = response.json()
        assert first["status"] == "completed"
        assert first["residents_screened"] == 3, "only residents who consented"
        assert first["opportunities"] > 0
        assert first["eligible_found"] == first["opportunities"] + first["already_applied"] + first["already_notified"]
        assert first["already_applied"] >= 4, "the turning-65 programs the second resident applied for"
        assert first["judgements"] == 3 * len(first["programs"])
        assert first["evaluations"] <= first["judgements"]
        assert "death_registration" not in first["programs"], "procedures are not suggested proactively"

        found = await log.wait_for("eligibility.opportunity", count=first["opportunities"])
        assert {e.data["resident_id"] for e in found} == {str(senior)}
        codes = {e.data["program_code"] for e in found}
        assert {"basic_pension", "senior_transport_card", "senior_job_program", "medical_aid"} <= codes
        assert "livelihood_benefit" not in codes, "1,000,000 is above 32 % of the median"
        pension = next(e for e in found if e.data["program_code"] == "basic_pension")
        assert pension.data["department"] == "welfare"
        assert pension.data["program_name"]["en"] == "Basic pension"
        assert {e.data["screening_id"] for e in found} == {first["screening_id"]}

        again = await client.post("/v1/screenings", json={}, headers=supervisor)
        assert again.status_code == 201
        assert again.json() == first, "the same Idempotency-Key: the original answer"
        assert again.headers["Idempotent-Replayed"] == "true"
        second = (await client.post("/v1/screenings", json={}, headers=eligibility.auth("admin"))).json()
        assert second["screening_id"] != first["screening_id"]
        assert second["opportunities"] == 0
        assert second["already_notified"] == first["opportunities"]
        # What an operator watches (deploy/prometheus/alerts.yml): two runs (the replay ran none), what they found.
        assert eligibility.metric("onestop_eligibility_screenings_total", status="completed") == 2
        assert eligibility.metric("onestop_eligibility_screenings_total", status="failed") == 0
        assert eligibility.metric("onestop_eligibility_opportunities_total") == first["opportunities"]
        assert eligibility.metric("onestop_eligibility_screening_duration_seconds_count") == 2
        await wait_until(lambda: _outbox_sent(eligibility))
        assert len(log.of_type("eligibility.opportunity")) == first["opportunities"], "each finding told once"
    assert await eligibility.count(OpportunityRow) == first["opportunities"]
    assert await eligibility.count(OpportunityRow, OpportunityRow.resident_id.in_([refused, young, applied])) == 0

    read = await client.get(f"/v1/screenings/{first['screening_id']}", headers=eligibility.auth("admin"))
    assert read.status_code == 200
    assert read.json() == first
    bad = await client.post("/v1/screenings", json={"programs": ["nope"]}, headers=eligibility.auth("admin"))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "programs[0]"


async def _outbox_sent(service: RunningService) -> bool:
    return await service.runtime.relay.backlog() == 0


async def test_screening_counts_each_child_a_carer_raises(eligibility: RunningService) -> None:
    """Twins are two children, a grandparent's grandchild and a foster carer's foster children count, and the 2026
    regional supplement is in the amount found: the bulk path judges households as an application would."""
    client = eligibility.client
    young = today() - dt.timedelta(days=3 * 365)

    def child(relation: str) -> HouseholdMember:
        return HouseholdMember(relation=relation, birth_date=young)

    def carer(born: dt.date, household: list[HouseholdMember], district: str = "11440") -> Awaitable[uuid.UUID]:
        return resident(eligibility, born, district=district, household=household, proactive_screening=True,
                        department_data__civil_registry=True)  # fmt: skip

    twins = await carer(dt.date(1990, 1, 1), [child("child"), child("child")], district="46890")
    grandparent = await carer(dt.date(1955, 1, 1), [child("grandchild")])
    foster = await carer(dt.date(1975, 1, 1), [child("foster_child"), child("ward")])
    observed = (now() - dt.timedelta(hours=1)).isoformat()
    for who in (twins, grandparent, foster):
        fact = {"name": "korean_national", "value": True, "observed_at": observed}
        response = await client.post("/v1/facts", json={"resident_id": str(who), "facts": [fact]},
                                     headers=eligibility.auth("partner", partner_id="moi"))  # fmt: skip
        assert response.status_code == 201, response.text
    await wait_until(lambda: eligibility.settled("events"))

    only = {"programs": ["child_allowance"]}
    response = await client.post("/v1/screenings", json=only, headers=eligibility.auth("admin"))
    assert response.status_code == 201, response.text
    per_child = 120_000 if today() >= dt.date(2026, 1, 1) else 100_000  # 전남 완도군: a special-support area
    expected = {twins: 2 * per_child, grandparent: 100_000, foster: 200_000}
    for who, amount in expected.items():
        found = OpportunityRow.resident_id == who, OpportunityRow.program_code == "child_allowance"
        assert await eligibility.count(OpportunityRow, *found, OpportunityRow.amount == amount) == 1, (who, amount)
