"""Proactive service across the services as processes: a registry change screens the resident by itself, the offer
reaches them in intake, one confirmation files the application that routing grants; a vulnerable resident who leaves
an offer unanswered is visited, and the visit is recorded; a resident who had their data erased is screened, offered,
asked and visited no more.

These journeys run on a platform of their own: routing's date is pinned weeks ahead (the working days a vulnerable
resident has to answer an offer have passed by then), which the other journeys must not share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, unused_port
from shared.auth import Role
from tests.e2e.support import JSON, Api, eventually, programs

AHEAD = dt.timedelta(days=45)


@pytest.fixture(scope="module")
def proactive_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    config = PlatformConfig(
        var_dir=tmp_path_factory.mktemp("proactive"),
        nats_port=unused_port(),
        nats_http_port=unused_port(),
        ports={s.name: unused_port() for s in SERVICES},
        ready_timeout=90,
        overrides={
            "eligibility": {"screening_check_interval_seconds": 0.3},
            "notify": {"worker_interval_seconds": 0.2, "bundle_window_seconds": 0.5},
            "routing": {
                "today": (dt.date.today() + AHEAD).isoformat(),
                "outreach_check_interval_seconds": 0.3,
                "sla_check_interval_seconds": 30.0,
            },
        },
    )
    platform = Platform(config)
    platform.start()
    yield platform
    platform.stop()


@pytest.fixture(scope="module")
def api(proactive_platform: Platform) -> Api:
    return Api(proactive_platform)


def offers_of(api: Api, resident: Any, **params: str) -> list[JSON]:
    found: list[JSON] = api.ok("intake", "GET", f"/v1/residents/{resident.id}/opportunities", resident.auth,
                               params=params)  # fmt: skip
    return found


def test_a_registry_change_screens_the_resident_and_one_confirmation_files_the_application(api: Api) -> None:
    # A 70-year-old registered in Busan, who consents to proactive screening: the senior programs anyone 65 or over
    # may have are offered, but not Seoul's senior transport card.
    resident = api.register(district="26110", birth_date="1955-08-15", language="en")
    api.consent(resident, proactive_screening=True)
    eventually(lambda: offers_of(api, resident), what="the first offers (consent granted)")
    before = {o["program_code"] for o in offers_of(api, resident)}
    assert "senior_transport_card" not in before

    # Moving to Mapo-gu is a registry change: eligibility queues her and screens her again by itself.
    api.ok("intake", "PATCH", f"/v1/residents/{resident.id}", resident.auth, json={"district_code": "11440"})
    offer = eventually(
        lambda: next((o for o in offers_of(api, resident) if o["program_code"] == "senior_transport_card"), None),
        what="the transport card offered after the move",
    )
    assert offer["status"] == "offered"
    admin = api.token(Role.ADMIN)
    runs = api.ok("eligibility", "GET", "/v1/screenings", admin, params={"kind": "incremental"})["items"]
    assert any("registry_updated" in (r["trigger"] or "") and r["opportunities"] >= 1 for r in runs)
    told = eventually(
        lambda: [m for m in api.inbox(resident) if m["kind"] == "eligibility.opportunity"], what="the resident told"
    )
    assert told

    # One confirmation: an application for that program, judged for it alone and granted.
    accepted = api.ok("intake", "POST", f"/v1/residents/{resident.id}/opportunities/{offer['id']}/accept",
                      resident.auth, headers={"Idempotency-Key": "accept-transport-card"})  # fmt: skip
    application = accepted["application"]["id"]
    assert accepted["opportunity"]["status"] == "accepted"

    def granted(view: JSON) -> bool:
        card = programs(view).get("senior_transport_card") or {}
        return (card.get("case") or {}).get("decision") == "approved"

    view = api.view_when(application, resident.auth, granted, what="the card granted")
    assert set(programs(view)) == {"senior_transport_card"}, "judged for the offered program only"
    assert programs(view)["senior_transport_card"]["outcome"] == "eligible"
    again = offers_of(api, resident, status="accepted")
    assert [o["application_id"] for o in again] == [application]


def test_a_vulnerable_resident_who_does_not_answer_is_visited(api: Api) -> None:
    # An older person living alone in Mapo-gu (nobody in her household), who consented, and never answers.
    resident = api.register(district="11440", birth_date="1946-02-11", language="ko", household=[])
    api.consent(resident, proactive_screening=True)
    offer = eventually(lambda: offers_of(api, resident), what="an offer")[0]

    supervisor = api.token(Role.SUPERVISOR, offices=["MAPO-CSC"], subject="staff:mapo-csc-lead")

    def outreach_case() -> JSON | None:
        queue = api.ok("routing", "GET", "/v1/queues/MAPO-CSC", supervisor, params={"limit": 200})["items"]
        return next((c for c in queue if c["kind"] == "outreach" and c["opportunity_id"] == offer["id"]), None)

    case = eventually(outreach_case, what="an outreach case in the district office's queue")
    assert case["application_id"] is None
    assert case["priority"] >= 3, "an older person living alone comes first"

    caseworker = api.token(Role.CASEWORKER, offices=["MAPO-CSC"], subject="cw-outreach")
    api.ok("routing", "POST", f"/v1/cases/{case['id']}/claim", caseworker)
    visit = {"outcome": "will_apply", "note": "설명드림. 따님과 함께 온라인으로 신청하시겠다고 함."}
    done = api.ok("routing", "POST", f"/v1/cases/{case['id']}/visit", caseworker, json=visit)
    assert (done["status"], done["closed_reason"]) == ("closed", "visited")
    assert done["history"][-1]["details"]["outcome"] == "will_apply"
    # The offer still stands: the visit explained it; she accepts it herself.
    assert offers_of(api, resident, status="offered")


def test_an_erased_resident_is_neither_screened_offered_asked_nor_visited(api: Api) -> None:
    # An older person living alone who consented: an offer, and (routing's date being weeks ahead) an outreach case.
    resident = api.register(district="11440", birth_date="1944-06-30", language="ko", household=[])
    api.consent(resident, proactive_screening=True)
    eventually(lambda: offers_of(api, resident), what="an offer")
    supervisor = api.token(Role.SUPERVISOR, offices=["MAPO-CSC"], subject="staff:mapo-csc-lead")

    def outreach_cases(theirs: set[str]) -> list[JSON]:
        queue = api.ok("routing", "GET", "/v1/queues/MAPO-CSC", supervisor, params={"limit": 200})["items"]
        return [c for c in queue if c["kind"] == "outreach" and c["opportunity_id"] in theirs]

    eventually(lambda: outreach_cases({o["id"] for o in offers_of(api, resident)}), what="an outreach case")
    theirs = {o["id"] for o in offers_of(api, resident)}

    # Nothing of theirs is open: the erasure is done at once, and every service answers.
    created = api.request("intake", "POST", f"/v1/residents/{resident.id}/erasure-requests", resident.auth,
                          json={"confirm": True})  # fmt: skip
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    done = eventually(
        lambda: (e if (e := api.ok("intake", "GET", location, resident.auth))["status"] == "completed" else None),
        timeout=60, what="every service answered",
    )  # fmt: skip
    erased = {s["service"]: s["erased"] for s in done["services"]}
    assert erased["intake"]["offers"] >= 1
    assert erased["routing"]["offers"] >= 1
    assert erased["routing"]["outreach_cases"] >= 1, "no one is sent to visit them"
    assert erased["eligibility"]["opportunities"] >= 1
    assert outreach_cases(theirs) == []

    # A screening of everyone afterwards neither screens them (no review date is written for them) nor offers or
    # asks them anything; to intake they are no resident to offer to.
    admin = api.token(Role.ADMIN)
    run = api.ok("eligibility", "POST", "/v1/screenings", admin, json={},
                 headers={"Idempotency-Key": f"after-erasure-{resident.id}"})  # fmt: skip
    assert run["status"] == "completed", run
    part = api.ok("eligibility", "GET", f"/v1/residents/{resident.id}/data", resident.auth)["records"]
    for record_type in ("registry", "opportunities", "screening_questions", "screening_answers", "screening_reviews",
                        "screening_queue"):  # fmt: skip
        assert part[record_type] == [], record_type
    routing_part = api.ok("routing", "GET", f"/v1/residents/{resident.id}/data", resident.auth)["records"]
    assert (routing_part["offers"], routing_part["cases"]) == ([], [])
    for path in ("opportunities", "questions"):
        gone = api.request("intake", "GET", f"/v1/residents/{resident.id}/{path}", resident.auth)
        assert gone.status_code == 404, gone.text
    told = eventually(lambda: [m["kind"] for m in api.inbox(resident)], what="the erasure's result told")
    assert told == ["resident.erasure_completed"], "nothing else is left"
