"""Acting for a resident, with the real bus and database: naming and revoking representatives (bad input refused
without a trace, representation.changed with pseudonymous ids only, a revocation that holds at once), counter staff
recording how a resident agreed and finishing an application for a resident without a login of their own, and the
postal address given to notify only for residents who chose letters."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson

from services.intake.context import IntakeContext
from services.intake.models import CounterAuthority, Representation
from shared.events import NotificationSent, RepresentationChanged
from tests.services.intake.support import (
    MAPO_CSC,
    YONGSAN_CSC,
    Downstream,
    birth_application,
    file_application,
    problem_fields,
    register_self,
    resident_body,
    view_when,
)
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService


def today(intake: RunningService) -> dt.date:
    """Today as the service dates things (in the city's time zone)."""
    return intake.context(IntakeContext).clock.today()


def representative(representative_id: uuid.UUID, today: dt.date, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "representative_id": str(representative_id),
        "representative_name": "김민지",
        "relation": "family",
        "scopes": ["answer", "read_messages"],
        "expires_on": (today + dt.timedelta(days=180)).isoformat(),
    }
    body.update(overrides)
    return body


async def test_a_named_representative_acts_until_revoked_and_bad_input_writes_nothing(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    day = today(intake)
    mother_id, mother = await register_self(intake, name="박정숙", birth_date="1948-05-20")
    daughter_id = uuid.uuid4()
    daughter = intake.auth("resident", resident_id=daughter_id, name="김민지")
    path = f"/v1/residents/{mother_id}/representations"

    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        refused = {
            "expires_on": representative(daughter_id, day, expires_on=(day - dt.timedelta(days=1)).isoformat()),
            "representative_id": representative(mother_id, day),
            "scopes": representative(daughter_id, day, scopes=["answer", "answer"]),
            "relation": representative(daughter_id, day, relation="neighbour"),
        }
        for field, body in refused.items():
            response = await client.post(path, json=body, headers=mother)
            assert response.status_code == 422, response.text
            assert field in {f.removeprefix("body.") for f in problem_fields(response)}, response.text
        too_far = representative(daughter_id, day, expires_on=(day + dt.timedelta(days=6 * 366)).isoformat())
        assert problem_fields(await client.post(path, json=too_far, headers=mother)) == {"expires_on"}
        nothing = await client.post(path, json=representative(daughter_id, day, scopes=[]), headers=mother)
        assert nothing.status_code == 422
        assert await intake.count(Representation) == 0, "a refused request writes nothing"

        named = await client.post(path, json=representative(daughter_id, day), headers=mother)
        assert named.status_code == 201, named.text
        shown = named.json()
        assert (shown["standing"], shown["scopes"]) == ("active", ["answer", "read_messages"])
        again = await client.post(path, json=representative(daughter_id, day, scopes=["apply"]), headers=mother)
        assert again.status_code == 409, "one open representation per representative: revoke to change it"

        mine = await client.get("/v1/representations", headers=daughter)
        assert [(r["resident_id"], r["standing"]) for r in mine.json()] == [(str(mother_id), "active")]
        assert (await client.get("/v1/representations", headers=intake.auth("admin"))).status_code == 403

        # The daughter answers for her mother, but may not withdraw (not in her scope).
        app = await file_application(intake, mother, birth_application(mother_id))
        answered = await client.post(
            f"/v1/applications/{app['id']}/info", json={"answers": {"birth_order": 2}}, headers=daughter
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["timeline"][-1]["summary"]["en"] == "Your representative sent the information asked for"
        assert answered.json()["timeline"][-1]["details"]["by"] == "representative"
        withdraw = await client.post(f"/v1/applications/{app['id']}/withdraw", headers=daughter)
        assert withdraw.status_code == 403

        # Revoked: her next request finds nothing; revoking again changes nothing.
        revoke = f"{path}/{shown['id']}/revoke"
        assert (await client.post(revoke, headers=daughter)).status_code == 404, "only the resident revokes"
        revoked = await client.post(revoke, headers=mother)
        assert (revoked.status_code, revoked.json()["standing"]) == (200, "revoked")
        assert (await client.post(revoke, headers=mother)).json() == revoked.json()
        after = await client.post(
            f"/v1/applications/{app['id']}/info", json={"answers": {"birth_order": 2}}, headers=daughter
        )
        assert after.status_code == 404
        listed = await client.get(path, headers=mother)
        assert [r["standing"] for r in listed.json()] == ["revoked"]

        events = await log.wait_for("representation.changed", count=2)
        assert [e.data["version"] for e in events] == [1, 2]
        first, last = (e.data_as(RepresentationChanged) for e in events)
        assert (first.resident_id, first.representative_id) == (mother_id, daughter_id)
        assert first.scopes == ["answer", "read_messages"]
        assert first.revoked_at is None
        assert last.revoked_at is not None
        raw = orjson.dumps([e.data for e in events]).decode()
        assert "김민지" not in raw, "no names, nothing but pseudonymous ids"
        assert "family" not in raw
        assert len(log.of_type("representation.changed")) == 2, "refused and repeated requests announced nothing"


async def test_counter_staff_finish_for_a_resident_without_a_login_under_the_authority_they_recorded(
    intake: RunningService,
) -> None:
    client = intake.client
    day = today(intake)
    clerk = intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-seo", name="서은지")
    registered = await client.post(
        "/v1/residents",
        json=resident_body(name="정말순", birth_date="1939-09-09", email=None, phone=None, preferred_channels=["post"]),
        headers=clerk,
    )
    assert registered.status_code == 201, registered.text
    resident_id = registered.json()["id"]
    app = await file_application(intake, clerk, birth_application(resident_id))

    answer = {"answers": {"birth_order": 1}}
    before = await client.post(f"/v1/applications/{app['id']}/info", json=answer, headers=clerk)
    assert before.status_code == 404, "without an authority the counter does not even see the filed application"

    path = f"/v1/residents/{resident_id}/authorities"
    two_offices = intake.auth("supervisor", offices=[YONGSAN_CSC, MAPO_CSC], subject="sv-two")
    bad = {
        "valid_until": ({"kind": "signed_form", "reference": "F-1", "valid_until": str(day - dt.timedelta(1))},
                        clerk),
        "office_code": ({"kind": "signed_form", "reference": "F-1", "office_code": MAPO_CSC}, clerk),
        "kind": ({"kind": "phoned", "reference": "F-1"}, clerk),
        "reference": ({"kind": "signed_form", "reference": ""}, clerk),
    }  # fmt: skip
    for field, (body, headers) in bad.items():
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert field in {f.removeprefix("body.") for f in problem_fields(response)}, response.text
    far = {"kind": "signed_form", "reference": "F-1", "valid_until": str(day + dt.timedelta(days=91))}
    assert problem_fields(await client.post(path, json=far, headers=clerk)) == {"valid_until"}
    assert await intake.count(CounterAuthority) == 0, "a refused request writes nothing"
    registered_by_other = await client.post(path, json={"kind": "id_checked", "reference": "주민등록증"},
                                            headers=two_offices)  # fmt: skip
    assert registered_by_other.status_code == 404, "staff who cannot see the resident cannot record for them"

    recorded = await client.post(path, json={"kind": "signed_form", "reference": "위임장 F-7"}, headers=clerk)
    assert recorded.status_code == 201, recorded.text
    assert (recorded.json()["valid_until"], recorded.json()["standing"]) == (day.isoformat(), "active")

    answered = await client.post(f"/v1/applications/{app['id']}/info", json=answer, headers=clerk)
    assert answered.status_code == 200, answered.text
    assert answered.json()["timeline"][-1]["details"]["by"] == "counter"
    colleague = intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-yang")
    consents = await client.put(f"/v1/residents/{resident_id}/consents",
                                json={"consents": {"proactive_screening": True}}, headers=colleague)  # fmt: skip
    assert consents.status_code == 200, "the authority is the office's: a colleague at the counter may act too"

    # The resident, once they have a token, sees it all and may end the authority.
    own = intake.auth("resident", resident_id=resident_id)
    given = await client.get(path, headers=own)
    assert [(g["kind"], g["reference"], g["recorded_by_name"]) for g in given.json()] == [
        ("signed_form", "위임장 F-7", "서은지")
    ]
    ended = await client.post(f"{path}/{recorded.json()['id']}/revoke", headers=own)
    assert (ended.status_code, ended.json()["standing"]) == (200, "revoked")
    withdraw = await client.post(f"/v1/applications/{app['id']}/withdraw", headers=clerk)
    assert withdraw.status_code == 404, "revoked: the counter no longer acts, nor sees the application"

    log = (await client.get(f"/v1/residents/{resident_id}/access-log", params={"limit": 200}, headers=own)).json()
    acts = [(e["actor"], e["action"], e["authority"]["kind"]) for e in log["items"] if e["authority"]]
    assert ("cw-seo", "answer request for information", "signed_form") in acts
    assert ("cw-yang", "set consents", "signed_form") in acts
    assert ("cw-seo", "record authority", "signed_form") in acts


async def test_notify_gets_the_postal_address_only_of_residents_who_chose_letters(intake: RunningService) -> None:
    notify = intake.auth("service", service="notify")
    letters_id, letters_headers = await register_self(intake, preferred_channels=["post"], email=None)
    email_id, _ = await register_self(intake)
    letters = (await intake.client.get(f"/v1/residents/{letters_id}/contact", headers=notify)).json()
    assert letters["postal"] == {"name": "김지은", "address": "서울특별시 마포구 월드컵북로 212"}
    email = (await intake.client.get(f"/v1/residents/{email_id}/contact", headers=notify)).json()
    assert email["postal"] is None

    # A letter sent is in the status view like any notification.
    app = await file_application(intake, letters_headers, birth_application(letters_id))
    d = Downstream(intake, app)
    sent = NotificationSent(notification_id=uuid.uuid4(), resident_id=letters_id, application_id=d.application_id,
                            source_event_ids=[], channel="post", template="application.submitted", language="ko",
                            sent_at=d.clock)  # fmt: skip
    await d.publish(d.event(sent, "/onestop/notify"))
    shown = await view_when(
        intake, letters_headers, app["id"], lambda v: v["timeline"][-1]["type"] == "notification.sent"
    )
    assert shown["timeline"][-1]["summary"] == {"ko": "알림 발송 (우편)", "en": "Notification sent by post"}
