"""The one status view, assembled from eligibility's, routing's and notify's events published on the real bus out of
order and more than once; and the resident's actions on it (answering, rating, withdrawing) with their events."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import text

from shared.events import (
    CaseAssigned,
    CaseClosed,
    CaseDecided,
    CaseEscalated,
    CaseInfoRequested,
    CaseResumed,
    CaseRouted,
    CaseTransferred,
    CloudEvent,
    Decision,
    Department,
    EligibilityDetermined,
    InfoQuestion,
    Language,
    Localized,
    NotificationFailed,
    NotificationSent,
    Outcome,
    ProgramDetermination,
    ReferralAccepted,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclined,
    ServiceType,
)
from tests.services.intake.support import (
    BIRTH_ORDER,
    INSURED_DAYS,
    JONGNO_CSC,
    MAPO_CSC,
    SEOUL_WEST_EMP,
    YONGSAN_CSC,
    Downstream,
    birth_application,
    consumer_idle,
    file_application,
    program,
    register_self,
    view_when,
)
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.round_trips import objects_added, one_batch
from tests.support.services import RunningService
from tests.support.waiting import wait_until

MAPO_NAME = Localized(ko="서교동 주민센터", en="Seogyo-dong Community Service Centre")
YONGSAN_NAME = Localized(ko="이태원1동 주민센터", en="Itaewon 1-dong Community Service Centre")
SEOUL_WEST_EMP_NAME = Localized(ko="서울서부고용센터", en="Seoul West Employment Centre")


def round_one() -> list[ProgramDetermination]:
    return [
        program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE, automatic=True, amount=100_000,
                period="monthly"),
        program("parent_benefit", "부모급여", "Parent benefit", Outcome.ELIGIBLE, amount=1_000_000, period="monthly"),
        program("first_meeting_voucher", "첫만남이용권", "First-meeting voucher", Outcome.NEEDS_INFORMATION,
                missing=[BIRTH_ORDER]),
        program("diaper_formula_support", "저소득층 기저귀·조제분유 지원",
                "Diapers and formula for low-income families", Outcome.INELIGIBLE, department=Department.HEALTH),
        program("parental_leave_benefit", "육아휴직 급여", "Parental leave benefit", Outcome.NEEDS_INFORMATION,
                department=Department.LABOUR, missing=[INSURED_DAYS], sla_days=14),
    ]  # fmt: skip


def round_two() -> list[ProgramDetermination]:
    programs = round_one()
    programs[2] = program(
        "first_meeting_voucher", "첫만남이용권", "First-meeting voucher", Outcome.ELIGIBLE, automatic=True,
        amount=3_000_000, period="once",
    )  # fmt: skip
    return programs


async def test_the_status_view_is_assembled_from_events_out_of_order_and_twice(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    resident_id, me = await register_self(intake)
    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        application = await file_application(intake, me, birth_application(resident_id))
        app_id = application["id"]
        assert application["status"] == "received"
        assert [t["type"] for t in application["timeline"]] == ["application.submitted"]
        submitted = (await log.wait_for("application.submitted"))[0]
        assert submitted.data["application_id"] == app_id
        assert submitted.data["resident"] == {
            "district_code": "11440",
            "preferred_language": "ko",
            "vulnerability": ["low_income"],
            "household_id": None,
        }
        assert submitted.data["answers"] == application["answers"]
        assert submitted.data["filed_by"] is None
        early = await client.post(f"/v1/applications/{app_id}/feedback", json={"score": 4}, headers=me)
        assert early.status_code == 409, "feedback opens once something is completed"

        d = Downstream(intake, application)
        ca, pb, fmv, pl = (uuid.uuid4() for _ in range(4))
        welfare = "/onestop/routing"

        def det(round_: int, programs: list[ProgramDetermination], trigger: str) -> EligibilityDetermined:
            return EligibilityDetermined(
                determination_id=uuid.uuid4(), application_id=d.application_id, resident_id=d.resident_id,
                round=round_, trigger=trigger, application_date=dt.date.today(), evaluated_at=d.clock,
                resident=d.context, programs=programs,
            )  # fmt: skip

        # ---- the first wave, in the order it happened
        e_det1 = d.event(det(1, round_one(), "submitted"), "/onestop/eligibility")
        e_ca_routed = d.event(
            CaseRouted(**d.case_fields(ca, "child_allowance"), office_name=MAPO_NAME, status="open", priority=3,
                       automatic=True, due_date=None, reason="district 11440, department welfare",
                       routed_at=d.clock), welfare)  # fmt: skip
        e_ca_decided = d.event(
            CaseDecided(**d.case_fields(ca, "child_allowance"), decision=Decision.APPROVED, reason_code="eligible",
                        amount=100_000, automatic=True, decided_at=d.clock), welfare)  # fmt: skip
        due = dt.date.today() + dt.timedelta(days=30)
        e_pb_routed = d.event(
            CaseRouted(**d.case_fields(pb, "parent_benefit"), office_name=MAPO_NAME, status="open", priority=5,
                       automatic=False, due_date=due, reason="district 11440, department welfare",
                       routed_at=d.clock), welfare)  # fmt: skip
        e_pb_assigned = d.event(
            CaseAssigned(**d.case_fields(pb, "parent_benefit"), assignee="cw-park", assigned_by="cw-park",
                         assigned_at=d.clock), welfare)  # fmt: skip
        new_due = due + dt.timedelta(days=5)
        e_pb_transferred = d.event(
            CaseTransferred(**d.case_fields(pb, "parent_benefit", YONGSAN_CSC), from_office_code=MAPO_CSC,
                            office_name=YONGSAN_NAME, reason="overflow: MAPO-CSC over capacity", due_date=new_due,
                            transferred_at=d.clock), welfare)  # fmt: skip
        e_pb_info = d.event(
            CaseInfoRequested(**d.case_fields(pb, "parent_benefit", YONGSAN_CSC),
                              questions=[InfoQuestion(text="출생증명서 사본을 제출해 주세요.")],
                              requested_at=d.clock), welfare)  # fmt: skip
        pl_fields = d.case_fields(pl, "parental_leave_benefit", SEOUL_WEST_EMP, Department.LABOUR)
        e_pl_routed = d.event(
            CaseRouted(**pl_fields, office_name=SEOUL_WEST_EMP_NAME, status="open", priority=3, automatic=False,
                       due_date=due, reason="district 11440, department labour", routed_at=d.clock),
            welfare)  # fmt: skip
        n1, n2 = uuid.uuid4(), uuid.uuid4()
        e_n1 = d.event(
            NotificationSent(notification_id=n1, resident_id=d.resident_id, application_id=d.application_id,
                             source_event_ids=[e_ca_decided.id], channel="inbox", template="case_decided",
                             language="ko", sent_at=d.clock), "/onestop/notify")  # fmt: skip
        e_n2_failed = d.event(
            NotificationFailed(notification_id=n2, resident_id=d.resident_id, application_id=d.application_id,
                               source_event_ids=[e_pb_info.id], channel="email", template="info_requested",
                               attempts=1, error="421 try again later", dead=False, failed_at=d.clock),
            "/onestop/notify")  # fmt: skip
        e_n2_sent = d.event(
            NotificationSent(notification_id=n2, resident_id=d.resident_id, application_id=d.application_id,
                             source_event_ids=[e_pb_info.id], channel="email", template="info_requested",
                             language="ko", sent_at=d.clock), "/onestop/notify")  # fmt: skip
        in_order = [e_det1, e_ca_routed, e_ca_decided, e_pb_routed, e_pb_assigned, e_pb_transferred, e_pb_info,
                    e_pl_routed, e_n1, e_n2_failed, e_n2_sent]  # fmt: skip

        # ...and the order they arrive in: the decision before its routing, the transfer before the routing, the
        # later delivery attempt before the failed one; some twice (JetStream's de-duplication, then the inbox).
        await d.publish(e_ca_decided, e_n1, e_pb_info, e_n2_sent, e_pb_transferred)
        await d.redeliver(e_ca_decided)
        await d.publish(e_det1, e_pb_assigned, e_ca_routed, e_n2_failed, e_pb_routed, e_pl_routed)
        await d.publish(e_pb_assigned)
        await d.redeliver(e_det1)
        await d.redeliver(e_pb_info)

        await view_when(intake, me, app_id, lambda v: len(v["timeline"]) >= 1 + len(in_order))
        await consumer_idle(intake)  # the redeliveries too have been taken before "exactly once" is judged
        view = (await client.get(f"/v1/applications/{app_id}", headers=me)).json()

        timeline = view["timeline"]
        assert [(t["type"], t["program_code"]) for t in timeline[1:]] == [
            (e.event_type, e.data.get("program_code")) for e in in_order
        ], "every event exactly once, in the order it happened"
        assert [t["at"] for t in timeline] == sorted(t["at"] for t in timeline)
        routed = {t["program_code"]: t["summary"] for t in timeline if t["type"] == "case.routed"}
        assert routed["parental_leave_benefit"] == {
            "ko": "육아휴직 급여: 서울서부고용센터에 접수",
            "en": "Parental leave benefit: sent to Seoul West Employment Centre",
        }, "named as its round names it (the round came first)"
        assert view["status"] == "action_required"
        assert view["determination"]["round"] == 1
        programs = {p["program_code"]: p for p in view["programs"]}
        assert list(programs) == [
            "child_allowance", "parent_benefit", "first_meeting_voucher", "diaper_formula_support",
            "parental_leave_benefit",
        ]  # fmt: skip

        allowance = programs["child_allowance"]
        assert (allowance["outcome"], allowance["settled"], allowance["action_required"]) == ("eligible", True, False)
        assert allowance["case"]["status"] == "decided"
        assert allowance["case"]["decision"] == "approved"
        assert allowance["case"]["office_name"] == MAPO_NAME.model_dump(), "filled in by the routing that came later"
        assert [(n["channel"], n["status"]) for n in allowance["notifications"]] == [("inbox", "sent")]

        parent = programs["parent_benefit"]
        assert parent["case"]["status"] == "information_requested"
        assert parent["case"]["office_code"] == YONGSAN_CSC, "the transfer is newer than the routing"
        assert parent["case"]["office_name"] == YONGSAN_NAME.model_dump()
        assert parent["case"]["due_date"] == new_due.isoformat()
        assert parent["case"]["questions"] == [{"fact": None, "text": "출생증명서 사본을 제출해 주세요."}]
        assert parent["action_required"] is True
        assert [(n["channel"], n["status"]) for n in parent["notifications"]] == [("email", "sent")]

        voucher = programs["first_meeting_voucher"]
        assert (voucher["outcome"], voucher["action_required"], voucher["case"]) == ("needs_information", True, None)
        assert [(m["name"], m["answered"]) for m in voucher["missing"]] == [("birth_order", False)]
        assert programs["diaper_formula_support"]["settled"] is True
        leave = programs["parental_leave_benefit"]
        assert leave["action_required"] is False, "only staff can supply what it misses"
        assert leave["case"]["status"] == "open"
        assert leave["case"]["office_code"] == SEOUL_WEST_EMP
        assert len(view["notifications"]) == 2

        # A case is readable by the staff of every office it is or was in, and by no other office.
        for office, expected in ((MAPO_CSC, 200), (YONGSAN_CSC, 200), (SEOUL_WEST_EMP, 200), (JONGNO_CSC, 404)):
            staff = intake.auth("caseworker", offices=[office])
            assert (await client.get(f"/v1/applications/{app_id}", headers=staff)).status_code == expected, office

        # ---- the resident answers what was asked
        info = await client.post(
            f"/v1/applications/{app_id}/info",
            json={"answers": {"birth_order": 2}, "note": "출생증명서는 내일 창구에 제출하겠습니다."},
            headers=me | {"Idempotency-Key": "answer-1"},
        )
        assert info.status_code == 200, info.text
        answered = info.json()
        assert answered["status"] == "in_progress"
        answered_programs = {p["program_code"]: p for p in answered["programs"]}
        assert answered_programs["parent_benefit"]["case"]["status"] == "in_review"
        assert answered_programs["first_meeting_voucher"]["missing"][0]["answered"] is True
        assert answered["answers"]["birth_order"] == 2
        provided = (await log.wait_for("application.info_provided"))[0]
        assert provided.data["answers"] == {"birth_order": 2}
        assert provided.data["program_codes"] == ["first_meeting_voucher"]
        assert provided.data["case_ids"] == [str(pb)]
        assert provided.data["note"] == "출생증명서는 내일 창구에 제출하겠습니다."
        again = await client.post(
            f"/v1/applications/{app_id}/info",
            json={"answers": {"birth_order": 2}, "note": "출생증명서는 내일 창구에 제출하겠습니다."},
            headers=me | {"Idempotency-Key": "answer-1"},
        )
        assert (again.status_code, again.json()) == (200, answered), "a retried answer is answered once"

        # ---- the second wave: a new round, decisions; a stale round 1 arrives late
        e_det2 = d.event(det(2, round_two(), "info_provided"), "/onestop/eligibility")
        e_fmv_routed = d.event(
            CaseRouted(**d.case_fields(fmv, "first_meeting_voucher"), office_name=MAPO_NAME, status="open",
                       priority=3, automatic=True, reason="district 11440", routed_at=d.clock), welfare)  # fmt: skip
        e_fmv_decided = d.event(
            CaseDecided(**d.case_fields(fmv, "first_meeting_voucher"), decision=Decision.APPROVED,
                        reason_code="eligible", amount=3_000_000, automatic=True, decided_at=d.clock),
            welfare)  # fmt: skip
        resumed_due = new_due + dt.timedelta(days=3)
        e_pb_resumed = d.event(
            CaseResumed(**d.case_fields(pb, "parent_benefit", YONGSAN_CSC), due_date=resumed_due,
                        paused_working_days=3, resumed_at=d.clock), welfare)  # fmt: skip
        e_pb_escalated = d.event(
            CaseEscalated(**d.case_fields(pb, "parent_benefit", YONGSAN_CSC), reason="resident is a single parent",
                          escalated_by="sv-choi", escalated_at=d.clock), welfare)  # fmt: skip
        e_pb_decided = d.event(
            CaseDecided(**d.case_fields(pb, "parent_benefit", YONGSAN_CSC), decision=Decision.APPROVED,
                        reason_code="eligible", reason=Localized(ko="요건 충족", en="Requirements met"),
                        amount=1_000_000, automatic=False, decided_at=d.clock), welfare)  # fmt: skip
        e_pl_decided = d.event(
            CaseDecided(**pl_fields, decision=Decision.APPROVED, reason_code="eligible", automatic=False,
                        decided_at=d.clock), welfare)  # fmt: skip
        e_stale = d.event(det(1, round_one(), "submitted"), "/onestop/eligibility")
        await d.publish(e_pl_decided, e_fmv_decided, e_stale, e_pb_decided, e_det2)
        await d.redeliver(e_fmv_decided)
        await d.publish(e_fmv_routed, e_pb_escalated, e_pb_resumed)
        await d.redeliver(e_det2)

        await view_when(intake, me, app_id, lambda v: len(v["timeline"]) >= len(timeline) + 1 + 8)
        await consumer_idle(intake)
        done = (await client.get(f"/v1/applications/{app_id}", headers=me)).json()
        assert len(done["timeline"]) == len(timeline) + 1 + 8
        assert done["status"] == "completed"
        assert done["determination"]["round"] == 2, "a lower round arriving late changes nothing"
        final = {p["program_code"]: p for p in done["programs"]}
        assert final["first_meeting_voucher"]["outcome"] == "eligible"
        assert final["first_meeting_voucher"]["amount"] == 3_000_000
        assert final["first_meeting_voucher"]["case"]["status"] == "decided"
        assert final["parent_benefit"]["case"]["escalated"] is True
        assert final["parent_benefit"]["case"]["due_date"] == resumed_due.isoformat(), "the pause moved the due date"
        assert final["parent_benefit"]["case"]["decision_reason"] == {"ko": "요건 충족", "en": "Requirements met"}
        assert all(p["settled"] for p in done["programs"])
        types = [t["type"] for t in done["timeline"]]
        assert types.count("eligibility.determined") == 3, "both rounds and the stale copy, each once"
        assert types.count("case.decided") == 4
        assert "application.info_provided" in types

        listed = await client.get("/v1/applications", params={"status": "completed"}, headers=me)
        assert [a["id"] for a in listed.json()["items"]] == [app_id]
        assert (await client.get("/v1/applications", params={"status": "received"}, headers=me)).json()["items"] == []

        # ---- the resident rates the service, once
        rated = await client.post(
            f"/v1/applications/{app_id}/feedback", json={"score": 5, "comment": "빨랐어요"}, headers=me
        )
        assert rated.status_code == 201, rated.text
        twice = await client.post(f"/v1/applications/{app_id}/feedback", json={"score": 1}, headers=me)
        assert twice.status_code == 409
        late = await client.post(f"/v1/applications/{app_id}/withdraw", headers=me)
        assert late.status_code == 409, "a completed application cannot be withdrawn"
        shown = (await client.get(f"/v1/applications/{app_id}", headers=me)).json()
        assert (shown["feedback"]["score"], shown["feedback"]["comment"]) == (5, "빨랐어요")
        assert shown["timeline"][-1]["type"] == "feedback.given"
        [given] = await log.wait_for("feedback.given")
        assert (given.data["score"], given.data["life_event"], given.data["district_code"]) == (5, "birth", "11440")
        assert "빨랐어요" not in given.to_json().decode(), "the comment stays in intake"


async def test_withdrawal_is_announced_and_later_events_keep_it_withdrawn(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    resident_id, me = await register_self(intake)
    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        application = await file_application(intake, me, birth_application(resident_id))
        app_id = application["id"]
        d = Downstream(intake, application)
        case_id = uuid.uuid4()
        await d.publish(
            d.event(
                CaseRouted(**d.case_fields(case_id, "parent_benefit"), office_name=MAPO_NAME, status="open",
                           priority=3, automatic=False, reason="district 11440", routed_at=d.clock),
                "/onestop/routing",
            ),
            d.event(
                CaseInfoRequested(**d.case_fields(case_id, "parent_benefit"),
                                  questions=[InfoQuestion(fact="birth_order", text="몇 번째 자녀입니까?")],
                                  requested_at=d.clock),
                "/onestop/routing",
            ),
        )  # fmt: skip
        await view_when(intake, me, app_id, lambda v: v["status"] == "action_required")

        withdrawn = await client.post(
            f"/v1/applications/{app_id}/withdraw", json={"reason": "다른 지역으로 이사합니다"}, headers=me
        )
        assert withdrawn.status_code == 200, withdrawn.text
        assert withdrawn.json()["status"] == "withdrawn"
        assert withdrawn.json()["withdrawal_reason"] == "다른 지역으로 이사합니다"
        event = (await log.wait_for("application.withdrawn"))[0]
        assert event.data["application_id"] == app_id
        assert event.data["resident_id"] == str(resident_id)
        assert event.data["reason"] == "다른 지역으로 이사합니다"

        assert (await client.post(f"/v1/applications/{app_id}/withdraw", headers=me)).status_code == 409
        info = await client.post(f"/v1/applications/{app_id}/info", json={"answers": {"birth_order": 1}}, headers=me)
        assert info.status_code == 409
        feedback = await client.post(f"/v1/applications/{app_id}/feedback", json={"score": 3}, headers=me)
        assert feedback.status_code == 409

        # Routing closes the case because of the withdrawal; the application stays withdrawn.
        await d.publish(
            d.event(
                CaseClosed(**d.case_fields(case_id, "parent_benefit"), reason="withdrawn",
                           closed_at=d.clock), "/onestop/routing"),
        )  # fmt: skip
        view = await view_when(intake, me, app_id, lambda v: v["timeline"][-1]["type"] == "case.closed")
        assert view["status"] == "withdrawn"
        assert view["programs"][0]["case"]["status"] == "closed"
        assert view["programs"][0]["case"]["closed_reason"] == "withdrawn"
        assert view["programs"][0]["outcome"] is None, "a case seen without a determination still shows"
        assert [t["type"] for t in view["timeline"]] == [
            "application.submitted", "case.routed", "case.info_requested", "application.withdrawn", "case.closed",
        ]  # fmt: skip
        assert len(log.of_type("application.info_provided")) == 0
        listed = await client.get("/v1/applications", params={"status": "withdrawn"}, headers=me)
        assert [a["id"] for a in listed.json()["items"]] == [app_id]


async def test_the_resident_sees_their_referrals_to_partners_in_the_one_status(intake: RunningService) -> None:
    """routing's referral.* events, out of order and twice, make the referral as the resident sees it: the partner's
    answer is never undone by a late referral.created, and the status of the application does not change."""
    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    app_id = application["id"]
    d = Downstream(intake, application)
    case_id, accepted_one, declined_one = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    routing = "/onestop/routing"

    def fields(referral_id: uuid.UUID, code: str, name: Localized, kind: ServiceType) -> dict[str, Any]:
        return {
            "referral_id": referral_id, "partner_id": "saebom-ngo", "offering_id": uuid.uuid4(), "offering_code": code,
            "offering_name": name, "service_type": kind, "case_id": case_id, "application_id": d.application_id,
            "resident_id": d.resident_id, "program_code": "parent_benefit", "office_code": MAPO_CSC,
        }  # fmt: skip

    childcare = fields(
        accepted_one, "childcare-mapo", Localized(ko="새봄 아이돌봄", en="Saebom childcare"), ServiceType.CHILDCARE
    )
    food = fields(declined_one, "meals", Localized(ko="새봄 식품지원", en="Saebom meals"), ServiceType.FOOD_SUPPORT)
    created = d.event(
        ReferralCreated(**childcare, district_code="11440", language=Language.KO, referred_by="cw-park",
                        created_at=d.clock), routing)  # fmt: skip
    accepted = d.event(ReferralAccepted(**childcare, accepted_at=d.clock), routing)
    completed = d.event(ReferralCompleted(**childcare, outcome="served", completed_at=d.clock), routing)
    food_created = d.event(
        ReferralCreated(**food, district_code="11440", language=Language.KO, referred_by="cw-park",
                        created_at=d.clock), routing)  # fmt: skip
    food_declined = d.event(ReferralDeclined(**food, reason="no_capacity", declined_at=d.clock), routing)

    # The partner's answers arrive before the referrals themselves, and a referral.created comes twice.
    await d.publish(accepted, food_declined, food_created, created)
    await d.redeliver(created)
    # All four applied (each its timeline line): both referrals exist once two of them are, before the late created.
    view = await view_when(
        intake, me, app_id, lambda v: sum(t["type"].startswith("referral.") for t in v["timeline"]) == 4
    )
    assert len(view["referrals"]) == 2
    by_id = {r["referral_id"]: r for r in view["referrals"]}
    assert (by_id[str(accepted_one)]["status"], by_id[str(declined_one)]["status"]) == ("accepted", "declined")
    assert by_id[str(declined_one)]["decline_reason"] == "no_capacity"
    assert by_id[str(accepted_one)]["offering_name"] == {"ko": "새봄 아이돌봄", "en": "Saebom childcare"}
    assert (by_id[str(accepted_one)]["case_id"], by_id[str(accepted_one)]["service_type"]) == (
        str(case_id),
        "childcare",
    )
    assert by_id[str(accepted_one)]["referred_at"] is not None, "filled in by the late referral.created"
    assert view["status"] == "received", "a referral is help beside the application, not a step of it"

    await d.publish(completed)
    view = await view_when(intake, me, app_id, lambda v: any(r["status"] == "completed" for r in v["referrals"]))
    done = next(r for r in view["referrals"] if r["referral_id"] == str(accepted_one))
    assert done["outcome"] == "served"
    referral_lines = [t["summary"]["en"] for t in view["timeline"] if t["type"].startswith("referral.")]
    # In the order they happened, each once however often it came.
    assert referral_lines == [
        "Referred to Saebom childcare", "Saebom childcare accepted the referral", "Saebom childcare: service provided",
        "Referred to Saebom meals", "Saebom meals declined the referral (no place free)",
    ]  # fmt: skip


async def test_the_resident_sees_their_household_case_in_the_one_status(intake: RunningService) -> None:
    """routing's household_case.* events, out of order and twice, show the household case to each member it names:
    the team that leads it, the plan's version, and once closed its outcome and the check after it."""
    from shared.events import HouseholdCaseClosed, HouseholdCaseOpened, HouseholdCasePlanChanged, NeedDomain

    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    d = Downstream(intake, application)
    base = {"household_case_id": uuid.uuid4(), "member_ids": [d.resident_id, uuid.uuid4()], "district_code": "11110",
            "office_code": "JONGNO-HOPE"}  # fmt: skip
    team = Localized(ko="종로구 희망복지지원단", en="Jongno-gu Integrated Case Management Team")
    routing = "/onestop/routing"
    opened = d.event(HouseholdCaseOpened(**base, office_name=team, trigger="automatic", departments=["welfare",
                                         "health"], opened_at=d.clock), routing)  # fmt: skip
    planned = d.event(HouseholdCasePlanChanged(**base, plan_version=2, domains=[NeedDomain.INCOME], goals=1,
                                               services=2, changed_at=d.clock), routing)  # fmt: skip
    closed = d.event(HouseholdCaseClosed(**base, outcome="goals_met", follow_up_check_on=dt.date(2026, 1, 14),
                                         closed_at=d.clock), routing)  # fmt: skip
    await d.publish(planned, opened)
    await d.redeliver(opened)
    view = await view_when(
        intake, me, application["id"], lambda v: bool((v["household_case"] or {}).get("office_name"))
    )
    household = view["household_case"]
    assert (household["id"], household["status"], household["plan_version"]) == (str(base["household_case_id"]),
                                                                                  "open", 2)  # fmt: skip
    assert household["office_name"] == {
        "ko": "종로구 희망복지지원단",
        "en": "Jongno-gu Integrated Case Management Team",
    }
    await d.publish(closed, planned)
    view = await view_when(intake, me, application["id"], lambda v: v["household_case"]["status"] == "closed")
    household = view["household_case"]
    assert (household["outcome"], household["follow_up_check_on"]) == ("goals_met", "2026-01-14")


async def test_a_status_read_in_one_snapshot_reads_its_timeline_once_and_a_write_checks_it_again(
    intake: RunningService,
) -> None:
    """A resident's GET reads one snapshot (SQLite's read connection, PostgreSQL's REPEATABLE READ), so the view's
    parts are read once each; a view built in a write transaction (answering, withdrawing) reads the timeline before
    and after the rest, since an event can land in between there."""
    from sqlalchemy import event

    from services.intake.repository import Repository
    from services.intake.status import build_view

    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    db = intake.runtime.db
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    # PostgreSQL's read engine is the write engine with options (its statements reach the write engine's listeners);
    # SQLite's file has read connections of their own.
    engines = [db.engine.sync_engine]
    if db.read_engine.sync_engine.pool is not db.engine.sync_engine.pool:
        engines.append(db.read_engine.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        response = await intake.client.get(f"/v1/applications/{application['id']}", headers=me)
        assert response.status_code == 200
        assert [t["type"] for t in response.json()["timeline"]] == ["application.submitted"]
        read = [s for s in statements if "FROM timeline_entries" in s]
        statements.clear()
        async with db.session() as session:
            repo = Repository(session)
            filed = await repo.application(uuid.UUID(application["id"]))
            assert filed is not None
            built = await build_view(repo, filed)
        assert [t.type for t in built.timeline] == ["application.submitted"]
        written = [s for s in statements if "FROM timeline_entries" in s]
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    assert len(read) == 1, read
    assert len(written) == 2, written


async def test_a_status_get_reads_the_application_and_every_part_in_one_statement(intake: RunningService) -> None:
    """A resident's GET of a status with every kind of part (a determination, cases, notifications, referrals, a
    household case, feedback, a timeline of several entries) reads them all in one statement, and shows the very view
    the parts read one by one make, to the byte."""
    import json

    from services.intake.repository import Repository
    from services.intake.status import build_view
    from shared.events import HouseholdCaseOpened
    from tests.support.round_trips import round_trips

    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    app_id = application["id"]
    d = Downstream(intake, application)
    ca, pb = uuid.uuid4(), uuid.uuid4()
    routing = "/onestop/routing"
    determined = d.event(
        EligibilityDetermined(
            determination_id=uuid.uuid4(), application_id=d.application_id, resident_id=d.resident_id, round=1,
            trigger="submitted", application_date=dt.date.today(), evaluated_at=d.clock, resident=d.context,
            programs=round_one(),
        ), "/onestop/eligibility")  # fmt: skip
    ca_routed = d.event(
        CaseRouted(**d.case_fields(ca, "child_allowance"), office_name=MAPO_NAME, status="open", priority=3,
                   automatic=True, due_date=None, reason="district 11440", routed_at=d.clock), routing)  # fmt: skip
    ca_decided = d.event(
        CaseDecided(**d.case_fields(ca, "child_allowance"), decision=Decision.APPROVED, reason_code="eligible",
                    amount=100_000, automatic=True, decided_at=d.clock), routing)  # fmt: skip
    pb_routed = d.event(
        CaseRouted(**d.case_fields(pb, "parent_benefit"), office_name=MAPO_NAME, status="open", priority=5,
                   automatic=False, due_date=dt.date.today() + dt.timedelta(days=30), reason="district 11440",
                   routed_at=d.clock), routing)  # fmt: skip
    pb_info = d.event(
        CaseInfoRequested(**d.case_fields(pb, "parent_benefit"), questions=[InfoQuestion(text="출생증명서 사본")],
                          requested_at=d.clock), routing)  # fmt: skip
    sent = d.event(
        NotificationSent(notification_id=uuid.uuid4(), resident_id=d.resident_id, application_id=d.application_id,
                         source_event_ids=[ca_decided.id], channel="inbox", template="case_decided", language="ko",
                         sent_at=d.clock), "/onestop/notify")  # fmt: skip
    failed = d.event(
        NotificationFailed(notification_id=uuid.uuid4(), resident_id=d.resident_id, application_id=d.application_id,
                           source_event_ids=[pb_info.id], channel="email", template="info_requested", attempts=3,
                           error="550 no such mailbox", dead=True, failed_at=d.clock), "/onestop/notify")  # fmt: skip
    referral = d.event(
        ReferralCreated(referral_id=uuid.uuid4(), partner_id="saebom-ngo", offering_id=uuid.uuid4(),
                        offering_code="meals", offering_name=Localized(ko="새봄 식품지원", en="Saebom meals"),
                        service_type=ServiceType.FOOD_SUPPORT, case_id=pb, application_id=d.application_id,
                        resident_id=d.resident_id, program_code="parent_benefit", office_code=MAPO_CSC,
                        district_code="11440", language=Language.KO, referred_by="cw-park", created_at=d.clock),
        routing)  # fmt: skip
    household = d.event(
        HouseholdCaseOpened(household_case_id=uuid.uuid4(), member_ids=[d.resident_id], district_code="11440",
                            office_code="MAPO-HOPE", office_name=Localized(ko="마포구 희망복지지원단", en="Mapo team"),
                            trigger="automatic", departments=["welfare"], opened_at=d.clock), routing)  # fmt: skip
    await d.publish(determined, ca_routed, ca_decided, pb_routed, pb_info, sent, failed, referral, household)
    await view_when(intake, me, app_id, lambda v: len(v["timeline"]) == 9 and v["household_case"] is not None)
    rated = await intake.client.post(f"/v1/applications/{app_id}/feedback", json={"score": 4}, headers=me)
    assert rated.status_code == 201, rated.text

    db = intake.runtime.db
    with round_trips(db) as sent_to_database:
        response = await intake.client.get(f"/v1/applications/{app_id}", headers=me)
    assert response.status_code == 200
    statements = [s for s in sent_to_database if s.startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))]
    assert len(statements) == 1, statements
    assert len(sent_to_database) <= 4, sent_to_database  # with the transaction's BEGIN and COMMIT

    shown = response.json()
    assert (len(shown["programs"]), len(shown["notifications"]), len(shown["referrals"])) == (5, 2, 1)
    assert shown["feedback"]["score"] == 4
    assert shown["household_case"]["office_code"] == "MAPO-HOPE"
    async with db.session() as session:  # a write transaction reads the parts one by one
        repo = Repository(session)
        filed = await repo.application(uuid.UUID(app_id))
        assert filed is not None
        one_by_one = await build_view(repo, filed)
    assert json.dumps(shown, ensure_ascii=False) == json.dumps(one_by_one.model_dump(mode="json"), ensure_ascii=False)


async def test_a_batch_derives_each_applications_status_once_and_writes_its_rows_together(
    intake: RunningService,
) -> None:
    """The status view's consumer applies a batch of events in one transaction: each application's status is derived
    once at its end from everything the batch changed (one read of the cases), not after every event; and the
    events' rows are written together, not flushed before each lookup (nor at another application's first event in
    the batch). What the residents see is the same."""

    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    d = Downstream(intake, application)
    other_resident, someone = await register_self(intake)
    other = Downstream(intake, await file_application(intake, someone, birth_application(other_resident)))
    ca, pb = uuid.uuid4(), uuid.uuid4()
    welfare, due = "/onestop/routing", dt.date.today() + dt.timedelta(days=30)
    programs = [
        program("child_allowance", "아동수당", "Child allowance", Outcome.ELIGIBLE, automatic=True, amount=100_000,
                period="monthly"),
        program("parent_benefit", "부모급여", "Parent benefit", Outcome.ELIGIBLE, amount=1_000_000, period="monthly"),
        program("diaper_formula_support", "저소득층 기저귀·조제분유 지원",
                "Diapers and formula for low-income families", Outcome.INELIGIBLE, department=Department.HEALTH),
    ]  # fmt: skip
    determined = d.event(
        EligibilityDetermined(
            determination_id=uuid.uuid4(), application_id=d.application_id, resident_id=d.resident_id, round=1,
            trigger="submitted", application_date=dt.date.today(), evaluated_at=d.clock, resident=d.context,
            programs=programs,
        ), "/onestop/eligibility",
    )  # fmt: skip
    batch = [
        d.event(CaseRouted(**d.case_fields(ca, "child_allowance"), office_name=MAPO_NAME, status="closed", priority=3,
                           automatic=True, due_date=None, reason="granted", routed_at=d.clock), welfare),
        d.event(CaseDecided(**d.case_fields(ca, "child_allowance"), decision=Decision.APPROVED,
                            reason_code="eligible", amount=100_000, automatic=True, decided_at=d.clock), welfare),
        d.event(CaseRouted(**d.case_fields(pb, "parent_benefit"), office_name=MAPO_NAME, status="open", priority=5,
                           automatic=False, due_date=due, reason="district 11440", routed_at=d.clock), welfare),
        d.event(CaseAssigned(**d.case_fields(pb, "parent_benefit"), assignee="cw-park", assigned_by="cw-park",
                             assigned_at=d.clock), welfare),
        d.event(CaseDecided(**d.case_fields(pb, "parent_benefit"), decision=Decision.APPROVED,
                            reason_code="eligible", amount=1_000_000, automatic=False, decided_at=d.clock), welfare),
    ]  # fmt: skip
    notification = uuid.uuid4()  # failed once, then sent: the second event finds the row the first kept aside
    batch.append(
        d.event(NotificationFailed(notification_id=notification, resident_id=d.resident_id,
                                   application_id=d.application_id, source_event_ids=[batch[1].id], channel="inbox",
                                   template="case_decided", attempts=1, error="busy", dead=False,
                                   failed_at=d.clock), "/onestop/notify")
    )  # fmt: skip
    batch.append(
        d.event(NotificationSent(notification_id=notification, resident_id=d.resident_id,
                                 application_id=d.application_id, source_event_ids=[batch[1].id], channel="inbox",
                                 template="case_decided", language="ko", sent_at=d.clock), "/onestop/notify")
    )  # fmt: skip
    interleaved = other.event(
        NotificationSent(notification_id=uuid.uuid4(), resident_id=other.resident_id,
                         application_id=other.application_id, source_event_ids=[], channel="email",
                         template="application_submitted", language="ko", sent_at=other.clock), "/onestop/notify",
    )  # fmt: skip

    with objects_added(intake.runtime.consumers["status-view"].durable) as added:
        work = await one_batch(intake, "status-view", [determined, *batch[:2], interleaved, *batch[2:]])
    statements, commits = work.statements, work.commits
    # Each event's timeline entry, and each new notification and office, is kept aside as its values and written with
    # the others by one statement at the end of the transaction, not added as an ORM object each
    # (Repository.add_timeline, add_notification, add_office); a notification looked up again by a later event of the
    # transaction is made an ORM row then.
    assert "TimelineEntry" not in added, added
    assert "ApplicationOffice" not in added, added
    assert added.count("Notification") <= 1, added

    status_reads = [s for s in statements if "FROM cases WHERE cases.application_id" in s]
    timeline_writes = [s for s in statements if s.startswith("INSERT INTO timeline_entries")]
    application_writes = [s for s in statements if s.startswith("UPDATE applications")]
    events = 1 + len(batch) + 1
    assert 1 <= len(status_reads) <= commits < events, (len(status_reads), commits, events)
    assert len(timeline_writes) <= commits < events, "\n".join(s[:100] for s in statements)
    # What the events look up is loaded at the start of each transaction (Subscription.load), a query per kind: in
    # each transaction, one read of each (and of the cases one more, for the statuses at its end), however many
    # events name them.
    for applied in work.transactions():
        for table, most in (("cases", 2), ("applications", 1), ("determinations", 1), ("notifications", 1),
                            ("application_offices", 1)):  # fmt: skip
            reads = [s for s in applied if s.startswith(f"SELECT {table}.")]
            assert len(reads) <= most, (table, reads)
    # Once per application per transaction (two applications at most in one here), not once per event.
    assert len(application_writes) <= 2 * commits < events, "\n".join(s[:100] for s in statements)

    view = await view_when(intake, me, application["id"], lambda v: len(v["timeline"]) == 2 + len(batch))
    assert view["status"] == "completed"
    assert [t["type"] for t in view["timeline"][1:]] == [e.event_type for e in [determined, *batch]]
    assert {p["program_code"]: p["case"]["status"] for p in view["programs"] if p["case"]} == {
        "child_allowance": "decided",
        "parent_benefit": "decided",
    }
    assert [n["status"] for n in view["notifications"]] == ["sent"]
    view = await view_when(intake, someone, str(other.application_id), lambda v: len(v["timeline"]) == 2)
    assert [(n["channel"], n["status"]) for n in view["notifications"]] == [("email", "sent")]


def test_the_program_states_kept_between_events_are_nothing_the_garbage_collector_walks() -> None:
    """Intake keeps each round's programs (by determination) for the events that follow it. What it keeps is text in
    tuples, which a collection stops tracking: kept as objects, 4,096 rounds were some 250,000 objects that every full
    collection walked (pauses of 80-180 ms under load). What it answers is the same."""
    import gc

    from services.intake.models import Determination
    from services.intake.status import _PROGRAM_STATES, Missing, program_states

    programs = [
        {"program_code": "parent_benefit", "program_name": {"ko": "부모급여", "en": "Parent benefit"},
         "outcome": "needs_information",
         "missing": [{"name": "birth_certificate"}, {"name": "income", "asked_of": "office"}]},
        {"program_code": "child_allowance", "program_name": {"ko": "아동수당", "en": "Child allowance"},
         "outcome": "eligible", "missing": []},
    ]  # fmt: skip
    determination = Determination(determination_id=uuid.uuid4(), programs=programs)
    states = program_states(determination)
    assert [(s.program_code, s.program_name.en, s.outcome, s.missing) for s in states] == [
        ("parent_benefit", "Parent benefit", Outcome.NEEDS_INFORMATION,
         (Missing("birth_certificate", "resident"), Missing("income", "office"))),
        ("child_allowance", "Child allowance", Outcome.ELIGIBLE, ()),
    ]  # fmt: skip
    assert program_states(determination) == states, "the second answer, from what was kept, is the same"
    for _ in range(4):  # a pass stops tracking a tuple whose items it no longer tracks: a level of nesting a pass
        gc.collect()
    assert not gc.is_tracked(_PROGRAM_STATES[determination.determination_id.int])


def test_a_case_event_names_its_program_as_the_round_did_or_by_its_code_before_any_round() -> None:
    """A case's timeline line names its program from the round's kept programs; a case arriving before any round
    (or for a program the round left out) is named by its code."""
    from services.intake.models import Determination
    from services.intake.status import program_name

    determination = Determination(
        determination_id=uuid.uuid4(),
        programs=[{"program_code": "child_allowance", "program_name": {"ko": "아동수당", "en": "Child allowance"},
                   "outcome": "eligible", "missing": []}],
    )  # fmt: skip
    assert program_name(determination, "child_allowance") == Localized(ko="아동수당", en="Child allowance")
    assert program_name(determination, "parent_benefit") == Localized(ko="parent_benefit", en="parent_benefit")
    assert program_name(None, "child_allowance") == Localized(ko="child_allowance", en="child_allowance")


async def test_an_event_that_fails_in_its_batch_leaves_no_timeline_entry_and_the_others_keep_theirs(
    intake: RunningService,
) -> None:
    """When a batch's transaction fails, its events are applied again each in a savepoint: the one that fails there
    is rolled back alone — its timeline entry with its case, though entries are otherwise kept aside to be written at
    the end of the transaction — and the others commit with theirs. Retried alone once it can succeed, it gets its
    entry, once."""
    resident_id, me = await register_self(intake)
    application = await file_application(intake, me, birth_application(resident_id))
    d = Downstream(intake, application)
    welfare, due = "/onestop/routing", dt.date.today() + dt.timedelta(days=30)
    # A case the database refuses (as a constraint would): its event fails, in the batch and in its savepoint.
    async with intake.runtime.db.session() as session:
        for statement in _refusing_cases(intake.runtime.db.engine.dialect.name):
            await session.execute(text(statement))

    def routed(program_code: str) -> CloudEvent:
        return d.event(
            CaseRouted(**d.case_fields(uuid.uuid4(), program_code), office_name=MAPO_NAME, status="open", priority=3,
                       automatic=False, due_date=due, reason="district 11440", routed_at=d.clock), welfare,
        )  # fmt: skip

    good, refused, after = routed("child_allowance"), routed("refused_program"), routed("parent_benefit")
    sent = d.event(
        NotificationSent(notification_id=uuid.uuid4(), resident_id=d.resident_id, application_id=d.application_id,
                         source_event_ids=[good.id], channel="inbox", template="case_routed", language="ko",
                         sent_at=d.clock), "/onestop/notify",
    )  # fmt: skip
    consumer = intake.runtime.consumers["status-view"]
    await consumer.stop()
    await d.publish(good, refused, sent, after)
    await consumer.start()

    def types(view: dict[str, Any]) -> list[str]:
        return [t["type"] for t in view["timeline"]]

    view = await view_when(intake, me, application["id"], lambda v: len(v["timeline"]) >= 4)
    assert types(view) == ["application.submitted", "case.routed", "case.routed", "notification.sent"], view
    assert {p["program_code"] for p in view["programs"]} == {"child_allowance", "parent_benefit"}
    assert [n["status"] for n in view["notifications"]] == ["sent"]

    async with intake.runtime.db.session() as session:
        for statement in _refusing_cases(intake.runtime.db.engine.dialect.name, drop=True):
            await session.execute(text(statement))
    await wait_until(lambda: intake.settled("status-view"))
    view = await view_when(intake, me, application["id"], lambda v: len(v["timeline"]) >= 5)
    assert types(view) == ["application.submitted", *["case.routed"] * 3, "notification.sent"], view
    assert {p["program_code"] for p in view["programs"]} == {"child_allowance", "parent_benefit", "refused_program"}


def _refusing_cases(dialect: str, *, drop: bool = False) -> list[str]:
    """A trigger that refuses a case of the program ``refused_program``, or what drops it."""
    if dialect == "sqlite":
        if drop:
            return ["DROP TRIGGER refuse_case"]
        return [
            "CREATE TRIGGER refuse_case BEFORE INSERT ON cases WHEN NEW.program_code = 'refused_program' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    if drop:
        return ["DROP TRIGGER refuse_case ON cases", "DROP FUNCTION refuse_case()"]
    return [
        "CREATE FUNCTION refuse_case() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
        "CREATE TRIGGER refuse_case BEFORE INSERT ON cases FOR EACH ROW "
        "WHEN (NEW.program_code = 'refused_program') EXECUTE FUNCTION refuse_case()",
    ]
