"""Filing applications, with the real bus, database and HTTP to eligibility's catalogue: Idempotency-Key, bad input
refused with the field named and nothing written or emitted, and the catalogue's cache when eligibility is down."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

from shared.auth import TokenIssuer
from tests.services.intake.conftest import standin_verifier
from tests.services.intake.eligibility_standin import LIFE_EVENTS, create_standin
from tests.services.intake.helpers import (
    MAPO_WELFARE,
    birth_application,
    file_application,
    problem_fields,
    register_self,
    resident_body,
)
from tests.support.bus_harness import wait_until
from tests.support.events import event_log
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service

TOMORROW = (dt.date.today() + dt.timedelta(days=2)).isoformat()


async def test_filing_is_idempotent_and_bad_input_is_refused_without_a_trace(
    intake: RunningService, nats_server: NatsServer
) -> None:
    client = intake.client
    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        a_id, a = await register_self(intake)
        b_id, _ = await register_self(intake)
        good = birth_application(a_id)

        def with_answers(**answers: Any) -> dict[str, Any]:
            return birth_application(a_id, answers=answers)

        bad_applications: list[tuple[Any, set[str]]] = [
            (birth_application(a_id, life_event="winning_the_lottery"), {"life_event"}),
            (birth_application(a_id, life_event="Birth!"), {"life_event"}),
            (birth_application(uuid.uuid4()), {"resident_id"}),
            (birth_application(b_id), {"resident_id"}),  # another resident's id: as unknown as a made-up one
            (birth_application("not-a-uuid"), {"resident_id"}),
            (birth_application(a_id) | {"resident_id": 12345}, {"resident_id"}),
            (birth_application(a_id, channel="fax"), {"channel"}),
            (birth_application(a_id) | {"filed_by": "someone"}, {"filed_by"}),
            (birth_application(a_id) | {"answers": ["birth_order", 2]}, {"answers"}),
            (with_answers(**{f"fact_{n}": n for n in range(101)}), {"answers"}),
            (
                with_answers(
                    birth_order="two",
                    has_crisis_event="yes",
                    child_birth_date="2024/01/05",
                    monthly_household_income=1.5,
                    savings_krw=True,
                    housing_tenure="castle",
                    disability_types=["physical", "telepathic"],
                    business_name="가" * 5000,
                    favourite_colour="blue",
                    registry_birth_verified=True,
                ),
                {
                    "answers.birth_order",
                    "answers.has_crisis_event",
                    "answers.child_birth_date",
                    "answers.monthly_household_income",
                    "answers.savings_krw",
                    "answers.housing_tenure",
                    "answers.disability_types",
                    "answers.business_name",
                    "answers.favourite_colour",
                    "answers.registry_birth_verified",  # only staff can supply it
                },
            ),
            (with_answers(child_birth_date="2024-02-30"), {"answers.child_birth_date"}),
        ]
        for body, fields in bad_applications:
            response = await client.post("/v1/applications", json=body, headers=a)
            assert response.status_code == 422, (body, response.text)
            assert problem_fields(response) == fields, response.json()
        garbage = await client.post(
            "/v1/applications", content=b"{not json", headers=a | {"content-type": "application/json"}
        )
        assert garbage.status_code == 422
        huge = await client.post("/v1/applications", json=with_answers(business_name="x" * 1_100_000), headers=a)
        assert huge.status_code == 413
        assert huge.headers["content-type"].startswith("application/problem+json")

        c_id = uuid.uuid4()
        c = intake.auth("resident", resident_id=c_id)
        bad_residents: list[tuple[dict[str, Any], set[str]]] = [
            (resident_body(birth_date=TOMORROW), {"birth_date"}),
            (resident_body(household=[{"relation": "child", "birth_date": TOMORROW}]), {"household[0].birth_date"}),
            (resident_body(birth_date="17/04/1992"), {"birth_date"}),
            (resident_body(birth_date="1992-02-30"), {"birth_date"}),
            (resident_body(birth_date=19920417), {"birth_date"}),
            (resident_body(birth_date="1992-04-17T00:00:00"), {"birth_date"}),
            (resident_body(district_code="1144"), {"district_code"}),
            (resident_body(name="김" * 5000), {"name"}),
            (resident_body(name="김\u0000지은"), {"name"}),
            (resident_body(email="not-an-email"), {"email"}),
            (resident_body(preferred_channels=["sms"], phone=None), {"phone"}),
            (resident_body(vulnerability=["rich"]), {"vulnerability[0]"}),
            (resident_body(household=[{"relation": "pet", "birth_date": "2020-01-01"}]), {"household[0].relation"}),
            (resident_body(preferred_language="fr"), {"preferred_language"}),
        ]
        for body, fields in bad_residents:
            response = await client.post("/v1/residents", json=body, headers=c)
            assert response.status_code == 422, (body, response.text)
            assert problem_fields(response) == fields, response.json()
        assert (await client.get(f"/v1/residents/{c_id}", headers=c)).status_code == 404

        # The good request, retried, and the key reused for another body.
        key = {"Idempotency-Key": "birth-2025-a"}
        first = await client.post("/v1/applications", json=good, headers=a | key)
        assert first.status_code == 201, first.text
        retry = await client.post("/v1/applications", json=good, headers=a | key)
        assert (retry.status_code, retry.json()) == (201, first.json())
        assert retry.headers["location"] == f"/v1/applications/{first.json()['id']}"
        other = await client.post("/v1/applications", json=birth_application(a_id, channel="web"), headers=a | key)
        assert other.status_code == 422
        assert problem_fields(other) == {"header.Idempotency-Key"}
        same_key_other_caller = await client.post(
            "/v1/applications", json=birth_application(b_id), headers=intake.auth("resident", resident_id=b_id) | key
        )
        assert same_key_other_caller.status_code == 201, "keys belong to their caller"

        # Staff file at a counter, with a fact only staff may supply.
        clerk = intake.auth("caseworker", offices=[MAPO_WELFARE], subject="cw-lee")
        assisted = await file_application(
            intake,
            clerk,
            birth_application(a_id, channel="visit", answers={"registry_birth_verified": True, "birth_order": 2}),
        )
        assert assisted["filed_by"] == "cw-lee"
        assert assisted["answers"] == {"registry_birth_verified": True, "birth_order": 2}

        submitted = await log.wait_for("application.submitted", count=3)
        # The relay publishes in commit order: had any refused request emitted, it would be among these.
        assert [e.data["application_id"] for e in submitted] == [
            first.json()["id"],
            same_key_other_caller.json()["id"],
            assisted["id"],
        ]
        assert submitted[0].data["answers"] == good["answers"]
        assert submitted[0].data["channel"] == "mobile"
        assert submitted[2].data["filed_by"] == "cw-lee"
        assert submitted[2].data["channel"] == "visit"
        mine = (await client.get("/v1/applications", headers=a)).json()["items"]
        assert [i["id"] for i in mine] == [assisted["id"], first.json()["id"]], "newest first"
        page = (await client.get("/v1/applications", params={"limit": 1}, headers=a)).json()
        rest = (
            await client.get("/v1/applications", params={"limit": 1, "cursor": page["next_cursor"]}, headers=a)
        ).json()
        assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in mine]
        assert rest["next_cursor"] is None
        bad_cursor = await client.get("/v1/applications", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=a)
        assert bad_cursor.status_code == 422
        assert problem_fields(bad_cursor) == {"query.cursor"}
        sentinel_id, _ = await register_self(intake)
        updated = await log.wait_for("resident.updated", lambda e: e.data["resident_id"] == str(sentinel_id))
        assert updated
        assert {e.data["resident_id"] for e in log.of_type("resident.updated")} == {
            str(a_id),
            str(b_id),
            str(sentinel_id),
        }, "the refused registrations emitted nothing"


async def test_the_catalogue_is_cached_and_served_stale_and_without_it_nothing_is_written(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    intake_token: str,
) -> None:
    standin = create_standin(standin_verifier(keys_dir))
    common: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_server.url,
        "prefix": bus_prefix,
        "keys_dir": keys_dir,
        "issuer": issuer,
        "service_token": intake_token,
    }
    ttl = 0.2
    async with contextlib.AsyncExitStack() as eligibility:
        url = await eligibility.enter_async_context(serve(standin))
        async with running_service("intake", eligibility_url=url, catalogue_ttl_seconds=ttl, **common) as intake:
            resident_id, me = await register_self(intake)
            listed = await intake.client.get("/v1/life-events", headers=me)
            assert listed.status_code == 200
            assert listed.json() == LIFE_EVENTS
            await intake.client.get("/v1/life-events", headers=intake.auth("partner", partner_id="kb-bank"))
            assert standin.state.calls["/v1/life-events"] == 1, "served from the cache within the TTL"
            key = {"Idempotency-Key": "first-try"}
            first = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me | key)
            assert first.status_code == 201

            await eligibility.aclose()  # eligibility goes down
            stale_from = time.monotonic() + ttl
            await wait_until(lambda: _after(stale_from))
            stale = await intake.client.get("/v1/life-events", headers=me)
            assert (stale.status_code, stale.json()) == (200, LIFE_EVENTS), "a stale copy beats no answer"
            second = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
            assert second.status_code == 201, second.text

    # A fresh intake that never reached eligibility has no copy at all.
    async with running_service("intake", eligibility_url="http://127.0.0.1:9", **common, migrate=False) as intake:
        me = intake.auth("resident", resident_id=resident_id)
        down = await intake.client.get("/v1/life-events", headers=me)
        assert down.status_code == 503
        assert down.headers["content-type"].startswith("application/problem+json")
        assert down.headers["retry-after"] == "5"
        refused = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        assert refused.status_code == 503
        listed = (await intake.client.get("/v1/applications", headers=me)).json()["items"]
        assert len(listed) == 2, "nothing was written"
        replay = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me | key)
        assert (replay.status_code, replay.json()) == (201, first.json()), "a retry of what succeeded still succeeds"


async def _after(moment: float) -> bool:
    return time.monotonic() >= moment
