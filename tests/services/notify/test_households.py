"""A household's members hear of their integrated case management (통합사례관리) — its opening, each change of the
plan and its closure — each in their own language on their own channels; a member who joins later is told as the
others were at opening; a resident hears nothing of a household they are not in. The notify service against the
real NATS, real databases, a real SMTP server, a real HTTP SMS gateway and the real intake service over HTTP."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from services.notify.models import Notification
from shared.events import (
    HouseholdCaseClosed,
    HouseholdCaseMemberAdded,
    HouseholdCaseOpened,
    HouseholdCaseOutcome,
    HouseholdCasePlanChanged,
    Localized,
    NeedDomain,
)
from tests.services.notify.support import Producer
from tests.services.notify.test_residents import body_of, count, inbox, sms_to
from tests.support.endpoints import Endpoint
from tests.support.intake_server import IntakeServer
from tests.support.services import RunningService
from tests.support.smtp import MailServer
from tests.support.waiting import wait_until

OFFICE = Localized(ko="종로구 희망복지지원단", en="Jongno-gu Integrated Case Management Team")
NOW = dt.datetime(2025, 10, 2, 10, 0, tzinfo=dt.UTC)


def base(household_case_id: uuid.UUID, *members: uuid.UUID) -> dict[str, Any]:
    return {"household_case_id": household_case_id, "member_ids": list(members), "district_code": "11110",
            "office_code": "JONGNO-HOPE"}  # fmt: skip


async def test_each_member_hears_of_the_household_case_in_their_language(
    notify: RunningService,
    producer: Producer,
    intake: IntakeServer,
    smtp: MailServer,
    sms_gateway: Endpoint,
) -> None:
    mother_mail, father_phone, daughter_mail, stranger_mail = (
        "eunji.park@example.kr", "+821055501234", "sora.park@example.kr", "jiho.lee@example.kr")  # fmt: skip
    mother = await intake.register(email=mother_mail, language="ko", channels=("inbox", "email"))
    father = await intake.register(phone=father_phone, language="en", channels=("inbox", "sms"))
    daughter = await intake.register(email=daughter_mail, language="en", channels=("inbox", "email"))
    stranger = await intake.register(email=stranger_mail, language="ko", channels=("inbox", "email"))
    hid, other_hid = uuid.uuid4(), uuid.uuid4()

    # Opening: the two members, each in their language on their channels.
    await producer.publish(HouseholdCaseOpened(**base(hid, mother, father), office_name=OFFICE, trigger="automatic",
                                               departments=["welfare", "labour"], opened_at=NOW))  # fmt: skip
    # Another household's case, opened at the same office: none of this household hears of it.
    await producer.publish(HouseholdCaseOpened(**base(other_hid, stranger), office_name=OFFICE, trigger="caseworker",
                                               departments=["health"], opened_at=NOW))  # fmt: skip
    await wait_until(lambda: len(smtp.to(mother_mail)) == 1 and len(sms_to(sms_gateway, father_phone)) == 1)
    opened = smtp.to(mother_mail)[0]
    assert opened["Subject"].startswith("[원스톱]")
    assert "종로구 희망복지지원단" in body_of(opened)
    assert "통합사례관리" in body_of(opened)
    [sms] = sms_to(sms_gateway, father_phone)
    assert (sms["language"], "Jongno-gu Integrated Case Management Team" in sms["text"]) == ("en", True)

    # The daughter comes to have a case and joins: she alone is told, in English, as the others were at opening.
    await producer.publish(HouseholdCaseMemberAdded(**base(hid, mother, father, daughter), resident_id=daughter,
                                                    office_name=OFFICE, how="household", opened_at=NOW,
                                                    added_at=NOW))  # fmt: skip
    await wait_until(lambda: len(smtp.to(daughter_mail)) == 1)
    joined = smtp.to(daughter_mail)[0]
    assert joined["Subject"] == "[OneStop] One team will look after the support your household gets"
    assert "Jongno-gu Integrated Case Management Team" in body_of(joined)

    # A plan change and the closure: every member, each in their language.
    await producer.publish(HouseholdCasePlanChanged(**base(hid, mother, father, daughter), plan_version=1,
                                                    domains=[NeedDomain.INCOME, NeedDomain.EMPLOYMENT], goals=2,
                                                    services=3, changed_at=NOW))  # fmt: skip
    await wait_until(lambda: len(smtp.to(mother_mail)) == 2 and len(smtp.to(daughter_mail)) == 2
                     and len(sms_to(sms_gateway, father_phone)) == 2)  # fmt: skip
    assert "소득, 일자리" in body_of(smtp.to(mother_mail)[1])
    assert "income, work" in body_of(smtp.to(daughter_mail)[1])
    assert "2 goal(s), 3 service(s)" in sms_to(sms_gateway, father_phone)[1]["text"]
    await producer.publish(HouseholdCaseClosed(**base(hid, mother, father, daughter),
                                               outcome=HouseholdCaseOutcome.GOALS_MET,
                                               follow_up_check_on=dt.date(2026, 1, 14), closed_at=NOW))  # fmt: skip
    await wait_until(lambda: len(smtp.to(mother_mail)) == 3 and len(smtp.to(daughter_mail)) == 3
                     and len(sms_to(sms_gateway, father_phone)) == 3)  # fmt: skip
    assert "함께 세운 목표를 이루어" in body_of(smtp.to(mother_mail)[2])
    assert "2026년 1월 14일" in body_of(smtp.to(mother_mail)[2])
    assert "14 January 2026" in body_of(smtp.to(daughter_mail)[2])
    assert "ended" in sms_to(sms_gateway, father_phone)[2]["text"]

    # Each member's inbox holds their household's messages and only those: the opening (or joining), the plan, the
    # closure; the stranger's holds their own household's opening only.
    kinds = {r: [m["kind"] for m in (await inbox(notify, r))["items"]] for r in (mother, father, daughter, stranger)}
    household_kinds = ["household_case.opened", "household_case.plan_changed", "household_case.closed"]
    for member in (mother, father, daughter):
        assert sorted(kinds[member]) == sorted(household_kinds), kinds[member]
    assert kinds[stranger] == ["household_case.opened"]
    stranger_messages = (await inbox(notify, stranger))["items"]
    assert all(str(hid) not in str(m) for m in stranger_messages)
    assert len(smtp.to(stranger_mail)) == 1
    assert await count(notify, Notification, Notification.resident_id == stranger) == 1
    for member in (mother, father, daughter):
        assert await count(notify, Notification, Notification.resident_id == member) == 3
