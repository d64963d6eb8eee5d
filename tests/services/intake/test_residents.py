"""Residents and consents, with the real bus and database: self and assisted registration, Idempotency-Key,
resident.updated carrying registry facts only, and consent history with consent.changed."""

from __future__ import annotations

import uuid

import orjson

from shared.events import ConsentChanged, ResidentUpdated
from tests.services.intake.support import MAPO_CSC, birth_application, file_application, register_self, resident_body
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService

REGISTRY_KEYS = {
    "resident_id",
    "version",
    "birth_date",
    "district_code",
    "household",
    "vulnerability",
    "preferred_language",
    "updated_at",
}


async def test_registration_is_idempotent_and_publishes_registry_facts_without_personal_details(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    resident_id = uuid.uuid4()
    me = intake.auth("resident", resident_id=resident_id)
    key = {"Idempotency-Key": f"register-{resident_id}"}
    body = resident_body()

    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        first = await client.post("/v1/residents", json=body, headers=me | key)
        assert first.status_code == 201, first.text
        created = first.json()
        assert created["id"] == str(resident_id), "self-registration keeps the token's resident id"
        assert created["assisted"] is False
        assert created["version"] == 1
        assert first.headers["location"] == f"/v1/residents/{resident_id}"

        retry = await client.post("/v1/residents", json=body, headers=me | key)
        assert (retry.status_code, retry.json()) == (201, created)
        assert retry.headers.get("idempotent-replayed") == "true"

        conflicting = await client.post("/v1/residents", json=resident_body(name="박서준"), headers=me | key)
        assert conflicting.status_code == 422
        assert conflicting.json()["type"] == "urn:onestop:problem:idempotency-key-reused"

        again = await client.post("/v1/residents", json=body, headers=me)
        assert again.status_code == 409, "one record per resident"

        # Assisted registration at a Mapo-gu counter: intake assigns the id and returns it.
        clerk = intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-lee", name="이민호")
        assisted = await client.post(
            "/v1/residents",
            json=resident_body(name="최영수", birth_date="1951-02-03", email=None, preferred_channels=["inbox"]),
            headers=clerk,
        )
        assert assisted.status_code == 201, assisted.text
        assisted_id = uuid.UUID(assisted.json()["id"])
        assert assisted_id != resident_id
        assert assisted.json()["assisted"] is True
        own = await client.get(f"/v1/residents/{assisted_id}", headers=intake.auth("resident", resident_id=assisted_id))
        assert own.status_code == 200
        assert own.json()["name"] == "최영수"

        # A change of contact details is a new version, but nothing eligibility needs: no event.
        phone = await client.patch(f"/v1/residents/{resident_id}", json={"phone": "+82 10-9876-5432"}, headers=me)
        assert phone.status_code == 200, phone.text
        assert (phone.json()["phone"], phone.json()["version"]) == ("+82 10-9876-5432", 2)
        moved = await client.patch(
            f"/v1/residents/{resident_id}",
            json={"district_code": "11140", "address": "서울특별시 중구 세종대로 110"},
            headers=me,
        )
        assert moved.status_code == 200, moved.text
        assert (moved.json()["district_code"], moved.json()["version"]) == ("11140", 3)
        nothing = await client.patch(f"/v1/residents/{resident_id}", json={"district_code": "11140"}, headers=me)
        assert nothing.json()["version"] == 3, "an unchanged value is no change"
        refused = await client.patch(f"/v1/residents/{resident_id}", json={"name": None}, headers=me)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "name"
        # Events leave in commit order: once this one is out, anything the requests above emitted would be too.
        last = await client.patch(f"/v1/residents/{resident_id}", json={"vulnerability": ["single_parent"]}, headers=me)
        assert last.json()["version"] == 4

        events = await log.wait_for("resident.updated", count=4)
        mine = [e for e in events if e.data["resident_id"] == str(resident_id)]
        assert [e.data["version"] for e in mine] == [1, 3, 4]
        assert mine[-1].data["vulnerability"] == ["single_parent"]
        assert mine[-1].data["district_code"] == "11140"
        assert mine[0].data["household"][0] == {
            "relation": "spouse",
            "birth_date": "1990-11-02",
            "monthly_income": 3_100_000,
            "disability": False,
        }
        assert [e.data["version"] for e in events if e.data["resident_id"] == str(assisted_id)] == [1]
        personal = [body["name"], body["email"], "2345-6789", "9876-5432", "월드컵북로", "세종대로", "최영수"]
        for event in events:
            ResidentUpdated.model_validate(event.data)
            assert set(event.data) == REGISTRY_KEYS
            raw = orjson.dumps(event.data).decode()
            assert not [p for p in personal if p in raw], f"personal data in {event.data}"
        assert len(log.of_type("resident.updated")) == 4, "the refused and the unchanged requests emitted nothing"


async def test_consents_keep_their_history_and_announce_the_full_set(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    resident_id, me = await register_self(intake)
    path = f"/v1/residents/{resident_id}/consents"

    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        first = await client.put(
            path, json={"consents": {"proactive_screening": True, "department_data:tax": True}}, headers=me
        )
        assert first.status_code == 200, first.text
        assert first.json()["version"] == 1
        assert first.json()["changed"] == ["department_data:tax", "proactive_screening"]

        second = await client.put(
            path,
            json={"consents": {"proactive_screening": True, "department_data:tax": False, "partner:kb-bank": True}},
            headers=me,
        )
        assert (second.json()["version"], second.json()["changed"]) == (2, ["department_data:tax", "partner:kb-bank"])

        same = await client.put(
            path,
            json={"consents": {"proactive_screening": True, "department_data:tax": False, "partner:kb-bank": True}},
            headers=me,
        )
        assert (same.json()["version"], same.json()["changed"]) == (2, []), "no change, no new version"

        bad = await client.put(path, json={"consents": {"marketing": True}}, headers=me)
        assert bad.status_code == 422
        assert any(e["field"].startswith("consents") for e in bad.json()["errors"])
        other = await client.put(
            path,
            json={"consents": {"proactive_screening": True}},
            headers=intake.auth("resident", resident_id=uuid.uuid4()),
        )
        assert other.status_code == 404
        staff = await client.put(path, json={"consents": {"proactive_screening": True}}, headers=intake.auth("admin"))
        assert staff.status_code == 403, "only the resident gives or withdraws consent"

        # The set is complete: what is left out is withdrawn.
        third = await client.put(path, json={"consents": {"department_data:welfare": True}}, headers=me)
        assert third.json()["version"] == 3
        assert third.json()["changed"] == ["department_data:welfare", "partner:kb-bank", "proactive_screening"]
        assert third.json()["consents"] == {
            "department_data:tax": False,
            "department_data:welfare": True,
            "partner:kb-bank": False,
            "proactive_screening": False,
        }

        history = (await client.get(path, headers=me)).json()["history"]
        assert [(h["version"], h["purpose"], h["granted"]) for h in history] == [
            (1, "department_data:tax", True),
            (1, "proactive_screening", True),
            (2, "department_data:tax", False),
            (2, "partner:kb-bank", True),
            (3, "department_data:welfare", True),
            (3, "partner:kb-bank", False),
            (3, "proactive_screening", False),
        ]
        assert all(h["changed_by_role"] == "resident" for h in history)
        record = (await client.get(f"/v1/residents/{resident_id}", headers=me)).json()
        assert record["consents"] == third.json()["consents"]

        events = await log.wait_for("consent.changed", count=3)
        data = [ConsentChanged.model_validate(e.data) for e in events]
        assert [(d.version, d.changed) for d in data] == [
            (1, ["department_data:tax", "proactive_screening"]),
            (2, ["department_data:tax", "partner:kb-bank"]),
            (3, ["department_data:welfare", "partner:kb-bank", "proactive_screening"]),
        ]
        assert data[1].consents == {"department_data:tax": False, "partner:kb-bank": True, "proactive_screening": True}
        assert data[2].consents == third.json()["consents"]
        assert all(d.resident_id == resident_id for d in data)
        assert len(log.of_type("consent.changed")) == 3


async def test_a_resident_consents_to_a_partner_for_one_event_type_and_a_bad_purpose_writes_nothing(
    intake: RunningService, nats_server: NatsServer
) -> None:
    """partner:<id> covers every type the partner is granted; partner:<id>:<event type> one type, and only a type
    a partner may receive about a resident (an aggregate feed needs no consent, so none can be given for it)."""
    client = intake.client
    resident_id, me = await register_self(intake)
    path = f"/v1/residents/{resident_id}/consents"

    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        chosen = {"partner:saebom-ngo:case.routed": True, "partner:hanbit-bank": True}
        first = await client.put(path, json={"consents": chosen}, headers=me)
        assert first.status_code == 200, first.text
        assert first.json()["consents"] == chosen

        bad_purposes = [
            ("partner:saebom-ngo:case.exploded", "unknown type"),
            ("partner:saebom-ngo:case.assigned", "not partner-visible"),
            ("partner:saebom-ngo:aggregate.determinations_counted", "names no resident"),
            ("partner:saebom-ngo:", "no type after the colon"),
            ("partner:saebom-ngo:case.routed:more", "one type only"),
            ("partner:Saebom:case.routed", "upper case partner id"),
        ]
        for purpose, why in bad_purposes:
            refused = await client.put(path, json={"consents": {**chosen, purpose: True}}, headers=me)
            assert refused.status_code == 422, (why, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert any(e["field"].startswith("consents") for e in refused.json()["errors"]), why

        after = (await client.get(path, headers=me)).json()
        assert (after["version"], after["consents"]) == (1, chosen), "the refused requests changed nothing"
        [event] = await log.wait_for("consent.changed", count=1)
        assert ConsentChanged.model_validate(event.data).consents == chosen
        assert len(log.of_type("consent.changed")) == 1


async def test_a_carer_registers_the_children_they_raise_and_the_registry_says_how(
    intake: RunningService, nats_server: NatsServer
) -> None:
    """A grandparent raising grandchildren, a foster carer and a guardian: the relations the child allowance and the
    parent benefit count (아동수당법·영유아보육법의 보호자) reach eligibility in resident.updated."""
    client = intake.client
    resident_id = uuid.uuid4()
    me = intake.auth("resident", resident_id=resident_id)
    household = [
        {"relation": "grandchild", "birth_date": "2019-03-03"},
        {"relation": "foster_child", "birth_date": "2022-08-08"},
        {"relation": "foster_child", "birth_date": "2022-08-08"},
        {"relation": "ward", "birth_date": "2015-05-05"},
    ]
    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        created = await client.post("/v1/residents", json=resident_body(birth_date="1958-01-01", household=household),
                                    headers=me)  # fmt: skip
        assert created.status_code == 201, created.text
        assert [(m["relation"], m["birth_date"]) for m in created.json()["household"]] == [
            (m["relation"], m["birth_date"]) for m in household
        ]
        (event,) = await log.wait_for("resident.updated", lambda e: e.data["resident_id"] == str(resident_id))
        published = ResidentUpdated.model_validate(event.data)
        assert [(m.relation, m.birth_date.isoformat()) for m in published.household] == [
            (m["relation"], m["birth_date"]) for m in household
        ], "both foster twins, in order"
    refused = await client.patch(f"/v1/residents/{resident_id}",
                                 json={"household": [{"relation": "godchild", "birth_date": "2020-01-01"}]},
                                 headers=me)  # fmt: skip
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "household[0].relation"


async def test_the_registered_household_travels_by_a_pseudonymous_id(
    intake: RunningService, nats_server: NatsServer
) -> None:
    """Who lives together is the registry's: staff copy the household's registry key, intake gives the household a
    random id of its own, and every application carries that id in the resident's context — never the key."""
    client = intake.client
    clerk = intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-lee", name="이민호")
    key = "1144012-000731"
    # A resident cannot say which household they are in (they could join a stranger's): refused, nothing written.
    self_id, own = await register_self(intake)
    refused = await client.patch(f"/v1/residents/{self_id}", json={"registry_household": key}, headers=own)
    assert refused.status_code == 403, refused.text
    assert (await client.get(f"/v1/residents/{self_id}", headers=own)).json()["household_id"] is None
    self_registered = await client.post(
        "/v1/residents",
        json=resident_body(registry_household=key),
        headers=intake.auth("resident", resident_id=uuid.uuid4()),
    )
    assert self_registered.status_code == 403, self_registered.text
    bad = await client.post("/v1/residents", json=resident_body(registry_household="세대 1"), headers=clerk)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "registry_household"

    # Staff register two people of one household at a counter, and a third before they looked the registry up.
    first = await client.post("/v1/residents", json=resident_body(registry_household=key), headers=clerk)
    second = await client.post(
        "/v1/residents", json=resident_body(name="박서준", registry_household=key), headers=clerk
    )
    assert first.status_code == second.status_code == 201, first.text
    household_id = first.json()["household_id"]
    assert household_id is not None
    assert second.json()["household_id"] == household_id
    assert first.json()["registry_household"] == key
    third = await client.post("/v1/residents", json=resident_body(name="박하늘"), headers=clerk)
    resident_id = uuid.UUID(third.json()["id"])
    me = intake.auth("resident", resident_id=resident_id)
    assert third.json()["household_id"] is None
    joined = await client.patch(f"/v1/residents/{resident_id}", json={"registry_household": key}, headers=clerk)
    assert joined.status_code == 200, joined.text
    assert (joined.json()["household_id"], joined.json()["version"]) == (household_id, 2)

    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        await file_application(intake, me, birth_application(resident_id))
        # A move to another household is a new id; a household the registry no longer lists is none.
        moved = await client.patch(
            f"/v1/residents/{resident_id}", json={"registry_household": "1144012-000999"}, headers=clerk
        )
        assert moved.json()["household_id"] not in (None, household_id)
        await file_application(intake, me, birth_application(resident_id))
        cleared = await client.patch(f"/v1/residents/{resident_id}", json={"registry_household": None}, headers=clerk)
        assert cleared.json()["household_id"] is None
        await file_application(intake, me, birth_application(resident_id))
        events = await log.wait_for("application.submitted", count=3)
    contexts = [e.data["resident"] for e in events if e.data["resident_id"] == str(resident_id)]
    assert [c["household_id"] for c in contexts] == [household_id, moved.json()["household_id"], None]
    assert not [e for e in events if key in orjson.dumps(e.data).decode()], "the registry key never leaves intake"
