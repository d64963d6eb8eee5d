"""Filing applications, with the real bus, database and the real eligibility service's catalogue over HTTP:
Idempotency-Key, bad input refused with the field named and nothing written or emitted, derived facts refused in
favour of their inputs, and the catalogue's cache when eligibility is down."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from shared.auth import Role, TokenIssuer
from tests.services.intake.support import (
    SEOUL_WEST_EMP,
    birth_application,
    file_application,
    problem_fields,
    register_self,
    resident_body,
)
from tests.support.eligibility_server import Eligibility, catalogue_get
from tests.support.events import event_log
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service
from tests.support.waiting import wait_until

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
                    birth_registered="yes",
                    child_birth_date="2024/01/05",
                    earned_income=1.5,
                    household_assets=True,
                    tenure="castle",
                    children_birth_dates=["2019-03-02", "last spring"],
                    district_code="1144",
                    crisis_type="가" * 5000,
                    employment_status="",
                    favourite_colour="blue",
                    insured_days_18m=240,  # only staff can supply it
                    age_years=33,  # derived: eligibility computes it from birth_date
                ),
                {
                    "answers.birth_order",
                    "answers.birth_registered",
                    "answers.child_birth_date",
                    "answers.earned_income",
                    "answers.household_assets",
                    "answers.tenure",
                    "answers.children_birth_dates",
                    "answers.district_code",
                    "answers.crisis_type",
                    "answers.employment_status",
                    "answers.favourite_colour",
                    "answers.insured_days_18m",
                    "answers.age_years",
                },
            ),
            (with_answers(child_birth_date="2024-02-30"), {"answers.child_birth_date"}),
            (with_answers(children_birth_dates="2019-03-02"), {"answers.children_birth_dates"}),
        ]
        for body, fields in bad_applications:
            response = await client.post("/v1/applications", json=body, headers=a)
            assert response.status_code == 422, (body, response.text)
            assert problem_fields(response) == fields, response.json()
        garbage = await client.post(
            "/v1/applications", content=b"{not json", headers=a | {"content-type": "application/json"}
        )
        assert garbage.status_code == 422
        huge = await client.post("/v1/applications", json=with_answers(crisis_type="x" * 1_100_000), headers=a)
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
        # A number no 64-bit integer holds, under a key already used: the key is refused, and the number itself is
        # refused by the validator, never a 500 (the retry is compared before the body is validated).
        too_big = birth_application(a_id, answers={"earned_income": 10**20})
        assert problem_fields(await client.post("/v1/applications", json=too_big, headers=a | key)) == {
            "header.Idempotency-Key"
        }
        fresh_key = {"Idempotency-Key": "birth-2025-huge"}
        for _ in range(2):
            refused = await client.post("/v1/applications", json=too_big, headers=a | fresh_key)
            assert refused.status_code == 422, refused.text
            assert problem_fields(refused) == {"answers.earned_income"}

        # Staff file at a counter, with a fact only staff may supply (from the employment insurance records).
        clerk = intake.auth("caseworker", offices=[SEOUL_WEST_EMP], subject="cw-lee")
        job_loss = {"employment_status": "unemployed", "job_loss_reason": "contract_end", "insured_days_18m": 240}
        assisted = await file_application(
            intake, clerk, birth_application(a_id, life_event="job_loss", channel="visit", answers=job_loss)
        )
        assert assisted["filed_by"] == "cw-lee"
        assert assisted["answers"] == job_loss

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
        [sentinel] = await log.wait_for("resident.updated", lambda e: e.data["resident_id"] == str(sentinel_id))
        assert (sentinel.data["version"], sentinel.data["birth_date"], sentinel.data["district_code"]) == (
            1,
            resident_body()["birth_date"],
            resident_body()["district_code"],
        ), "the registration, announced once as its first version"
        assert {e.data["resident_id"] for e in log.of_type("resident.updated")} == {
            str(a_id),
            str(b_id),
            str(sentinel_id),
        }, "the refused registrations emitted nothing"


async def test_a_derived_fact_is_refused_and_its_inputs_are_named(
    intake: RunningService, eligibility_url: str, intake_token: str, nats_server: NatsServer
) -> None:
    """Eligibility computes derived facts (age_years from birth_date ...) and ignores a declared value for one: intake
    refuses such an answer, from residents and staff alike, on filing and on answering, and says what to give."""
    client = intake.client
    fact_types = await catalogue_get(eligibility_url, "/v1/fact-types", intake_token)
    derived = {f["name"]: f["inputs"] for f in fact_types if f["derived"]}
    assert derived["age_years"] == ["birth_date"], "the real catalogue, as the messages below rely on"
    assert derived["child_age_months"] == ["child_birth_date"]
    assert derived["median_income"] == ["household_size"]
    assert derived["application_date"] == []
    async with event_log(nats_server.url, intake.runtime.bus.prefix) as log:
        a_id, a = await register_self(intake)
        clerk = intake.auth("caseworker", offices=[SEOUL_WEST_EMP], subject="cw-lee")
        for headers in (a, clerk):
            every_derived = birth_application(a_id, answers=dict.fromkeys(derived, 1))
            refused = await client.post("/v1/applications", json=every_derived, headers=headers)
            assert refused.status_code == 422, refused.text
            errors = {e["field"]: e for e in refused.json()["errors"]}
            assert set(errors) == {f"answers.{name}" for name in derived}
            assert {e["type"] for e in errors.values()} == {"derived_fact"}
            for name, inputs in derived.items():
                if inputs:
                    expected = f"is derived from other facts; answer {', '.join(inputs)} instead"
                    assert errors[f"answers.{name}"]["message"] == expected
            assert errors["answers.age_years"]["message"] == ("is derived from other facts; answer birth_date instead")
            assert errors["answers.application_date"]["message"] == (
                "is derived by eligibility itself and cannot be answered"
            )

        # Giving the inputs instead is what works.
        body = birth_application(a_id)
        body["answers"] |= {"birth_date": "1992-04-17"}
        filed = await file_application(intake, a, body)
        assert filed["answers"]["birth_date"] == "1992-04-17"
        answered = await client.post(
            f"/v1/applications/{filed['id']}/info", json={"answers": {"child_age_months": 0}}, headers=a
        )
        assert answered.status_code == 422
        assert problem_fields(answered) == {"answers.child_age_months"}
        assert answered.json()["errors"][0]["message"] == (
            "is derived from other facts; answer child_birth_date instead"
        )
        sentinel = await client.post(
            f"/v1/applications/{filed['id']}/info", json={"answers": {"birth_order": 1}}, headers=a
        )
        assert sentinel.status_code == 200, sentinel.text
        await log.wait_for("application.info_provided")
        assert [e.data["application_id"] for e in log.of_type("application.submitted")] == [filed["id"]]
        assert [e.data["answers"] for e in log.of_type("application.info_provided")] == [{"birth_order": 1}]
        shown = (await client.get(f"/v1/applications/{filed['id']}", headers=a)).json()
        assert "child_age_months" not in shown["answers"]


def _relayed(life_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Eligibility's life events as intake lists them (intake keeps the code, the name and the programs)."""
    return [{"code": e["code"], "name": e["name"], "programs": e["programs"]} for e in life_events]


async def test_the_catalogue_is_cached_and_served_stale_and_without_it_nothing_is_written(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    intake_token: str,
    eligibility: Eligibility,
) -> None:
    common: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_server.url,
        "prefix": bus_prefix,
        "keys_dir": keys_dir,
        "issuer": issuer,
        "service_token": intake_token,
    }
    catalogue = _relayed(await eligibility.get("/v1/life-events", intake_token))
    birth = next(e for e in catalogue if e["code"] == "birth")
    assert {"child_allowance", "parent_benefit", "first_meeting_voucher"} <= {p["code"] for p in birth["programs"]}
    life_events, fact_types = "/v1/life-events", "/v1/fact-types"

    async def calls() -> dict[str, int]:
        return {route: await eligibility.requests_to(route) for route in (life_events, fact_types)}

    async def calls_since(before: dict[str, int]) -> dict[str, int]:
        return {route: count - before[route] for route, count in (await calls()).items()}

    # Cached: with a TTL far longer than the test, every request after the first is served from the copy, however
    # slow the machine.
    before = await calls()
    async with running_service(
        "intake", eligibility_url=eligibility.url, catalogue_ttl_seconds=3600, **common
    ) as intake:
        resident_id, me = await register_self(intake)
        listed = await intake.client.get("/v1/life-events", headers=me)
        assert listed.status_code == 200
        assert listed.json() == catalogue
        partner = await intake.client.get("/v1/life-events", headers=intake.auth("partner", partner_id="kb-bank"))
        assert partner.json() == catalogue
        key = {"Idempotency-Key": "first-try"}
        first = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me | key)
        assert first.status_code == 201, first.text
        again = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        assert again.status_code == 201, again.text
        assert (await intake.client.get("/v1/life-events", headers=me)).json() == catalogue
        assert await calls_since(before) == {life_events: 1, fact_types: 1}, "served from the cache within the TTL"

    # Refreshed, then stale: a short TTL that the test only ever waits out (never races), in a second intake.
    ttl = 0.2
    async with running_service(
        "intake", eligibility_url=eligibility.url, catalogue_ttl_seconds=ttl, **common, migrate=False
    ) as intake:
        filed = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        assert filed.status_code == 201, filed.text  # both parts of the catalogue are cached now
        copied_by = time.monotonic()
        await wait_until(lambda: _after(copied_by + ttl))
        before = await calls()
        refreshed = await intake.client.get("/v1/life-events", headers=me)
        assert refreshed.json() == catalogue
        assert await calls_since(before) == {life_events: 1, fact_types: 0}, "refreshed once the TTL is over"

        await eligibility.stop()  # eligibility goes down
        down_from = time.monotonic()
        await wait_until(lambda: _after(down_from + ttl))
        stale = await intake.client.get("/v1/life-events", headers=me)
        assert (stale.status_code, stale.json()) == (200, catalogue), "a stale copy beats no answer"
        second = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        assert second.status_code == 201, second.text

    # A fresh intake that never reached eligibility has no copy at all.
    async with running_service("intake", eligibility_url=eligibility.url, **common, migrate=False) as intake:
        me = intake.auth("resident", resident_id=resident_id)
        down = await intake.client.get("/v1/life-events", headers=me)
        assert down.status_code == 503
        assert down.headers["content-type"].startswith("application/problem+json")
        assert down.headers["retry-after"] == "5"
        refused = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        assert refused.status_code == 503
        listed = (await intake.client.get("/v1/applications", headers=me)).json()["items"]
        assert len(listed) == 4, "nothing was written"
        replay = await intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me | key)
        assert (replay.status_code, replay.json()) == (201, first.json()), "a retry of what succeeded still succeeds"


async def _after(moment: float) -> bool:
    return time.monotonic() >= moment


async def test_the_catalogue_copy_is_revalidated_by_its_version_and_fetched_again_only_once_it_changed(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    intake_token: str,
    eligibility: Eligibility,
) -> None:
    life_events = "/v1/life-events"

    async def answered(status: int) -> int:
        return await eligibility.requests_to(life_events, status)

    ttl = 0.2
    async with running_service(
        "intake", eligibility_url=eligibility.url, catalogue_ttl_seconds=ttl, database_url=database_url,
        nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer, service_token=intake_token,
        catalogue_timeout_seconds=30,  # a slow machine must not turn a fetch into "unavailable"
    ) as intake:  # fmt: skip
        _, me = await register_self(intake)
        catalogue = (await intake.client.get(life_events, headers=me)).json()
        fetched, unchanged = await answered(200), await answered(304)

        # The copy is old, the catalogue the same: eligibility answers 304 and intake keeps its copy.
        copied_by = time.monotonic()
        await wait_until(lambda: _after(copied_by + ttl))
        assert (await intake.client.get(life_events, headers=me)).json() == catalogue
        assert (await answered(200), await answered(304)) == (fetched, unchanged + 1)

        # An administrator adds a rule version (the catalogue's revision moves): the next refresh fetches it whole.
        admin = {"Authorization": f"Bearer {issuer.mint(Role.ADMIN)}"}
        async with httpx.AsyncClient(base_url=eligibility.url) as client:
            added = await client.put("/v1/programs/basic_pension", json=_pension_version(), headers=admin)
        assert added.status_code == 200, added.text
        changed_at = time.monotonic()
        await wait_until(lambda: _after(changed_at + ttl))
        refreshed = (await intake.client.get(life_events, headers=me)).json()
        assert (await answered(200), await answered(304)) == (fetched + 1, unchanged + 1)
        assert refreshed == _relayed(await eligibility.get(life_events, intake_token))


def _pension_version() -> dict[str, Any]:
    """A new basic pension version from a month ahead (its attributes as they are)."""
    return {
        "name": {"ko": "기초연금", "en": "Basic pension"},
        "department": "welfare",
        "life_events": ["turning_65"],
        "automatic": False,
        "sla_days": 30,
        "case_weight": 1.5,
        "version": {
            "effective_from": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
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


async def test_an_idempotency_key_blank_or_too_long_is_refused_naming_the_header_and_nothing_is_filed(
    intake: RunningService,
) -> None:
    """The key is a parameter of the dependency that honours it (``shared.deps.IdempotentDep``), checked there: a key
    of blanks only, or longer than a stored key may be, is a 422 naming the header, before anything is written."""
    resident_id, me = await register_self(intake)
    for key in ("   ", "k" * 256):
        response = await intake.client.post(
            "/v1/applications", json=birth_application(resident_id), headers=me | {"Idempotency-Key": key}
        )
        assert response.status_code == 422, response.text
        assert problem_fields(response) == {"header.Idempotency-Key"}
    listed = await intake.client.get("/v1/applications", params={"resident_id": str(resident_id)}, headers=me)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    trimmed = await intake.client.post(
        "/v1/applications", json=birth_application(resident_id), headers=me | {"Idempotency-Key": " k-1 "}
    )
    retried = await intake.client.post(
        "/v1/applications", json=birth_application(resident_id), headers=me | {"Idempotency-Key": "k-1"}
    )
    assert (trimmed.status_code, retried.status_code) == (201, 201)
    assert retried.headers["idempotent-replayed"] == "true", "the key is stored without its surrounding blanks"
    assert retried.json() == trimmed.json()


async def test_filing_answers_from_what_it_wrote_reading_the_resident_and_their_household_case_at_once(
    intake: RunningService,
) -> None:
    """The answer to a filing is the new application's view built from what the filing wrote, with the resident's
    household case, which is read with the resident in one statement: what the filing reads is its Idempotency-Key
    and the resident."""
    from shared.events import HouseholdCaseOpened, Localized
    from tests.services.intake.support import Downstream, view_when
    from tests.support.round_trips import round_trips

    resident_id, me = await register_self(intake)
    first = await file_application(intake, me, birth_application(resident_id))
    d = Downstream(intake, first)
    opened = d.event(
        HouseholdCaseOpened(household_case_id=uuid.uuid4(), member_ids=[resident_id], district_code="11440",
                            office_code="MAPO-HOPE", office_name=Localized(ko="마포구 희망복지지원단", en="Mapo team"),
                            trigger="automatic", departments=["welfare"], opened_at=d.clock),
        "/onestop/routing")  # fmt: skip
    await d.publish(opened)
    shown = await view_when(intake, me, first["id"], lambda v: v["household_case"] is not None)

    with round_trips(intake.runtime.db) as sent:
        response = await intake.client.post(
            "/v1/applications", json=birth_application(resident_id), headers={**me, "Idempotency-Key": "second"}
        )
    assert response.status_code == 201, response.text
    filed = response.json()
    assert filed["household_case"] == shown["household_case"]
    assert [t["type"] for t in filed["timeline"]] == ["application.submitted"]
    assert (filed["status"], filed["programs"], filed["notifications"]) == ("received", [], [])
    reads = [s for s in sent if s.startswith("SELECT")]
    assert len(reads) == 2, reads  # the Idempotency-Key's stored answer (none), the resident with their household case
    assert "FROM residents LEFT OUTER JOIN household_cases" in reads[1]
    writes = [s.split(" (")[0] for s in sent if s.startswith("INSERT")]
    assert writes == [  # one INSERT a table: the application first (where its resident is checked again), then
        "INSERT INTO applications",  # its event and its timeline entry, then the key
        "INSERT INTO outbox",
        "INSERT INTO timeline_entries",
        "INSERT INTO idempotency_keys",
    ]
    assert len(sent) == 8, sent  # with the transaction's BEGIN and COMMIT
    # Its reads come before its first write: on SQLite the writer lock is held for the four INSERTs and the COMMIT.
    first_write = next(i for i, s in enumerate(sent) if s.startswith("INSERT"))
    assert not [s for s in sent[first_write:] if s.startswith("SELECT")], sent


async def test_an_application_filed_while_its_resident_is_being_erased_is_refused_and_leaves_nothing(
    intake: RunningService,
) -> None:
    """A filing checks its resident before it writes (on SQLite before it takes the writer lock) and files only if
    they still stand where it writes: an erasure committed in between, which did not see the application, refuses
    it (422, as a filing made afterwards is), and nothing of it is written."""
    import asyncio

    from services.intake import erasure
    from services.intake.context import IntakeContext
    from services.intake.repository import Repository
    from services.intake.schemas import ErasureCreate
    from shared.auth import Principal

    resident_id, me = await register_self(intake)
    db = intake.runtime.db
    resident = Principal(subject=f"resident:{resident_id}", role=Role.RESIDENT, resident_id=resident_id)

    async def filing_waits_to_write() -> bool:
        if db.dialect == "sqlite":
            return db.writers_waiting() == 1
        async with db.engine.connect() as conn:  # waiting for the erasure's lock of the resident's row
            waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
        return bool(waiting)

    async with db.session() as session:
        await erasure.request(
            Repository(session), intake.context(IntakeContext), resident, resident_id, ErasureCreate(confirm=True)
        )
        filing = asyncio.create_task(
            intake.client.post("/v1/applications", json=birth_application(resident_id), headers=me)
        )
        await wait_until(filing_waits_to_write)
    response = await filing
    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"resident_id"}
    async with db.read_session() as session:
        filed = await session.scalar(text("SELECT count(*) FROM applications"))
        keys = await session.scalar(text("SELECT count(*) FROM idempotency_keys"))
    assert (filed, keys) == (0, 0)
