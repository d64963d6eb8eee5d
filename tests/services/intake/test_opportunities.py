"""Offers and screening questions in intake: made only with the resident's consent, accepted with one confirmation
into an application for that program, declined with a reason, expired by their day or by a withdrawn consent; a
near miss's one question answered and passed back to eligibility. Each step an event; bad input writes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from services.intake.context import IntakeContext
from services.intake.models import Application, Opportunity, ScreeningQuestion
from shared.events import (
    Department,
    EligibilityOpportunity,
    Localized,
    MissingFact,
    ScreeningQuestionAsked,
)
from tests.services.intake.support import register_self
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService
from tests.support.waiting import wait_until

ELIGIBILITY = "/onestop/eligibility"


def today(intake: RunningService) -> dt.date:
    return intake.context(IntakeContext).clock.today()


def found(
    resident_id: uuid.UUID, program: str = "child_allowance", amount: int | None = 100_000
) -> EligibilityOpportunity:
    names = {"child_allowance": ("아동수당", "Child allowance"), "parent_benefit": ("부모급여", "Parent benefit"),
             "basic_pension": ("기초연금", "Basic pension")}  # fmt: skip
    ko, en = names[program]
    return EligibilityOpportunity(
        screening_id=uuid.uuid4(), resident_id=resident_id, program_code=program, program_name=Localized(ko=ko, en=en),
        department=Department.WELFARE, amount=amount, amount_period="monthly" if amount else None,
        found_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def asked(
    resident_id: uuid.UUID, fact: str = "korean_national", program: str = "parent_benefit"
) -> ScreeningQuestionAsked:
    return ScreeningQuestionAsked(
        question_id=uuid.uuid4(), screening_id=uuid.uuid4(), resident_id=resident_id, program_code=program,
        program_name=Localized(ko="부모급여", en="Parent benefit"), department=Department.WELFARE,
        fact=MissingFact(name=fact, type="boolean", question=Localized(ko="국적?", en="Are you Korean?")),
        why=Localized(ko="이 질문 하나로 판단할 수 있습니다.", en="This one answer settles it."),
        asked_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


async def consent(intake: RunningService, resident_id: uuid.UUID, headers: dict[str, str], **purposes: bool) -> None:
    given = {k.replace("__", ":"): v for k, v in purposes.items()}
    path = f"/v1/residents/{resident_id}/consents"
    response = await intake.client.put(path, json={"consents": given}, headers=headers)
    assert response.status_code == 200, response.text


async def offers(intake: RunningService, resident_id: uuid.UUID, headers: dict[str, str], **params: Any) -> Any:
    response = await intake.client.get(f"/v1/residents/{resident_id}/opportunities", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_offer_is_made_with_consent_and_accepted_into_an_application_for_that_program(
    intake: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    client = intake.client
    resident_id, me = await register_self(intake)
    silent_id, silent = await register_self(intake, email="silent@example.kr")
    await consent(intake, resident_id, me, proactive_screening=True)
    await consent(intake, silent_id, silent, department_data__tax=True)

    async with event_log(nats_server.url, bus_prefix) as log:
        for event in (found(resident_id), found(resident_id, "basic_pension", None), found(silent_id),
                      asked(resident_id), asked(silent_id)):  # fmt: skip
            await intake.publish(event, source=ELIGIBILITY)
        await intake.publish(found(resident_id), source=ELIGIBILITY)  # screening finds it again: one offer still
        await wait_until(lambda: intake.settled("offers"))
        assert await offers(intake, silent_id, silent) == [], "no consent: nothing offered"
        assert await intake.count(ScreeningQuestion, ScreeningQuestion.resident_id == silent_id) == 0

        mine = {o["program_code"]: o for o in await offers(intake, resident_id, me)}
        assert set(mine) == {"child_allowance", "basic_pension"}
        offer = mine["child_allowance"]
        assert (offer["status"], offer["amount"], offer["amount_period"]) == ("offered", 100_000, "monthly")
        assert offer["expires_on"] == (today(intake) + dt.timedelta(days=90)).isoformat()
        offered = await log.wait_for("opportunity.offered", count=2)
        told = next(e for e in offered if e.data["program_code"] == "child_allowance")
        assert told.data["opportunity_id"] == offer["id"]
        assert told.data["resident"] == {"district_code": "11440", "preferred_language": "ko",
                                         "vulnerability": ["low_income"], "household_id": None}  # fmt: skip

        # The one question: a bad answer writes nothing; the answer goes back to eligibility.
        questions = (await client.get(f"/v1/residents/{resident_id}/questions", headers=me)).json()
        assert [(q["fact"]["name"], q["status"]) for q in questions] == [("korean_national", "open")]
        path = f"/v1/residents/{resident_id}/questions/{questions[0]['id']}/answer"
        bad = await client.post(path, json={"value": "yes"}, headers=me)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "value"
        assert await intake.count(ScreeningQuestion, ScreeningQuestion.status == "open") == 1
        answered = await client.post(path, json={"value": True}, headers=me)
        assert answered.status_code == 200, answered.text
        assert (answered.json()["status"], answered.json()["answer"], answered.json()["acted_as"]) == (
            "answered", True, "resident")  # fmt: skip
        passed_back = (await log.wait_for("screening.question_answered"))[0]
        assert (passed_back.data["fact"], passed_back.data["value"]) == ("korean_national", True)
        again = await client.post(path, json={"value": False}, headers=me)
        assert again.status_code == 409
        assert again.json()["question_status"] == "answered"

        # One confirmation files the application for that program, with what the resident already told.
        accept = f"/v1/residents/{resident_id}/opportunities/{offer['id']}/accept"
        keyed = {**me, "Idempotency-Key": "accept-1"}
        accepted = await client.post(accept, headers=keyed)
        assert accepted.status_code == 201, accepted.text
        body = accepted.json()
        application = body["application"]
        assert accepted.headers["location"] == f"/v1/applications/{application['id']}"
        assert (body["opportunity"]["status"], body["opportunity"]["application_id"]) == ("accepted", application["id"])
        assert application["life_event"] in {"birth", "moving_in"}
        replay = await client.post(accept, headers=keyed)
        assert (replay.status_code, replay.json()) == (201, body)
        twice = await client.post(accept, headers=me)
        assert twice.status_code == 409
        assert (twice.json()["offer_status"], twice.json()["application_id"]) == ("accepted", application["id"])

        submitted = (await log.wait_for("application.submitted"))[0]
        assert submitted.data["program_codes"] == ["child_allowance"]
        assert submitted.data["opportunity_id"] == offer["id"]
        assert submitted.data["answers"] == {"korean_national": True}, "what the resident answered, filled in"
        accepted_event = (await log.wait_for("opportunity.accepted"))[0]
        assert (accepted_event.data["application_id"], accepted_event.data["acted_as"]) == (application["id"],
                                                                                            "resident")  # fmt: skip

        # Declining records an enumerated reason; anything else is refused and writes nothing.
        pension = mine["basic_pension"]
        decline = f"/v1/residents/{resident_id}/opportunities/{pension['id']}/decline"
        refused = await client.post(decline, json={"reason": "bored"}, headers=me)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "reason"
        assert await intake.count(Opportunity, Opportunity.status == "offered") == 1
        declined = await client.post(decline, json={"reason": "already_receiving", "note": "받고 있어요"}, headers=me)
        assert declined.status_code == 200, declined.text
        assert (declined.json()["status"], declined.json()["decline_reason"]) == ("declined", "already_receiving")
        declined_event = (await log.wait_for("opportunity.declined"))[0]
        assert declined_event.data["reason"] == "already_receiving"
        assert "note" not in declined_event.data, "free text stays in intake"
        late = await client.post(f"/v1/residents/{resident_id}/opportunities/{pension['id']}/accept", headers=me)
        assert late.status_code == 409
    assert await intake.count(Application) == 1


async def test_offers_expire_by_their_day_and_when_consent_is_withdrawn(
    intake: RunningService, nats_server: NatsServer, bus_prefix: str
) -> None:
    ctx = intake.context(IntakeContext)
    day = today(intake)
    first_id, first = await register_self(intake)
    second_id, second = await register_self(intake, email="second@example.kr", household=[], birth_date="1950-01-01",
                                            vulnerability=[])  # fmt: skip
    for resident_id, headers in ((first_id, first), (second_id, second)):
        await consent(intake, resident_id, headers, proactive_screening=True)
    async with event_log(nats_server.url, bus_prefix) as log:
        await intake.publish(found(first_id), source=ELIGIBILITY)
        await intake.publish(found(second_id, "basic_pension"), source=ELIGIBILITY)
        await intake.publish(asked(second_id), source=ELIGIBILITY)
        await wait_until(lambda: intake.settled("offers"))
        older = next(
            e for e in await log.wait_for("opportunity.offered", count=2) if e.data["resident_id"] == str(second_id)
        )
        assert older.data["resident"]["vulnerability"] == ["elderly_alone"], "65 or over with nobody in the household"

        assert ctx.expiry is not None
        assert await ctx.expiry.sweep() == 0, "standing until its last day"
        ctx.clock.fixed_today = day + dt.timedelta(days=90)
        assert await ctx.expiry.sweep() == 0, "the last day is still a day to accept"
        (offer,) = await offers(intake, first_id, first)
        late = await intake.client.post(f"/v1/residents/{first_id}/opportunities/{offer['id']}/accept", headers=first)
        assert late.status_code == 201, late.text
        ctx.clock.fixed_today = day

        await consent(intake, second_id, second, proactive_screening=False)
        (withdrawn,) = await offers(intake, second_id, second)
        assert (withdrawn["status"], withdrawn["expired_reason"]) == ("expired", "consent_withdrawn")
        questions = (await intake.client.get(f"/v1/residents/{second_id}/questions", headers=second)).json()
        assert [q["status"] for q in questions] == ["withdrawn"]
        expired = (await log.wait_for("opportunity.expired"))[0]
        assert (expired.data["resident_id"], expired.data["reason"]) == (str(second_id), "consent_withdrawn")

        # An offer left standing past its day expires with the timer's next pass.
        third_id, third = await register_self(intake, email="third@example.kr")
        await consent(intake, third_id, third, proactive_screening=True)
        await intake.publish(found(third_id), source=ELIGIBILITY)
        await wait_until(lambda: intake.settled("offers"))
        (standing,) = await offers(intake, third_id, third)
        ctx.clock.fixed_today = day + dt.timedelta(days=91)
        refused = await intake.client.post(f"/v1/residents/{third_id}/opportunities/{standing['id']}/accept",
                                           headers=third)  # fmt: skip
        assert refused.status_code == 409
        assert refused.json()["offer_status"] == "expired"
        assert await ctx.expiry.sweep() == 1
        (gone,) = await offers(intake, third_id, third)
        assert (gone["status"], gone["expired_reason"]) == ("expired", "deadline")
        deadline = await log.wait_for("opportunity.expired", count=2)
        assert {e.data["reason"] for e in deadline} == {"consent_withdrawn", "deadline"}
        assert await ctx.expiry.sweep() == 0
        assert [o["id"] for o in await offers(intake, third_id, third, status="offered")] == []


async def test_an_erased_resident_s_offers_and_questions_go_with_them_and_none_are_made_again(
    intake: RunningService,
) -> None:
    client = intake.client
    resident_id, me = await register_self(intake)
    await consent(intake, resident_id, me, proactive_screening=True)
    for event in (found(resident_id), found(resident_id, "basic_pension", None), asked(resident_id)):
        await intake.publish(event, source=ELIGIBILITY)
    await wait_until(lambda: intake.settled("offers"))
    mine = {o["program_code"]: o for o in await offers(intake, resident_id, me)}
    # An accepted offer points at the application it filed; withdrawn, that application ends without a decision.
    accepted = await client.post(f"/v1/residents/{resident_id}/opportunities/{mine['child_allowance']['id']}/accept",
                                 headers=me)  # fmt: skip
    assert accepted.status_code == 201, accepted.text
    application_id = accepted.json()["application"]["id"]
    withdrawn = await client.post(f"/v1/applications/{application_id}/withdraw", headers=me, json={"reason": "이사"})
    assert withdrawn.status_code == 200, withdrawn.text

    created = await client.post(f"/v1/residents/{resident_id}/erasure-requests", headers=me, json={"confirm": True})
    assert created.status_code == 201, created.text
    own = next(s for s in created.json()["services"] if s["service"] == "intake")
    assert (own["erased"]["offers"], own["erased"]["screening_questions"]) == (2, 1)
    assert own["erased"]["applications_without_decision"] == 1
    assert await intake.count(Opportunity, Opportunity.resident_id == resident_id) == 0
    assert await intake.count(ScreeningQuestion, ScreeningQuestion.resident_id == resident_id) == 0

    # Screening's finds arriving afterwards put nothing before them; to anyone they are no resident to offer to.
    for event in (found(resident_id, "parent_benefit"), asked(resident_id, "earned_income")):
        await intake.publish(event, source=ELIGIBILITY)
    await wait_until(lambda: intake.settled("offers"))
    assert await intake.count(Opportunity, Opportunity.resident_id == resident_id) == 0
    assert await intake.count(ScreeningQuestion, ScreeningQuestion.resident_id == resident_id) == 0
    staff = intake.auth("admin")
    for headers in (me, staff):
        for path in ("opportunities", "questions"):
            response = await client.get(f"/v1/residents/{resident_id}/{path}", headers=headers)
            assert response.status_code == 404, (path, response.text)
