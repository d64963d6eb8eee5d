"""Object-level authorisation of every intake endpoint, and the access log a resident sees."""

from __future__ import annotations

import uuid
from typing import Any

from shared.events import CaseRouted, Localized
from tests.services.intake.support import (
    MAPO_CSC,
    YONGSAN_CSC,
    Downstream,
    birth_application,
    file_application,
    register_self,
    resident_body,
    view_when,
)
from tests.support.services import RunningService

SKIP = 0


async def test_each_caller_reaches_exactly_what_it_may_and_the_resident_sees_who_looked(
    intake: RunningService,
) -> None:
    client = intake.client
    a_id, a = await register_self(intake)
    b_id, b = await register_self(intake, name="박민수", email="minsu@example.kr")
    app_a = await file_application(intake, a, birth_application(a_id))
    app_b = await file_application(intake, b, birth_application(b_id, life_event="job_loss", answers={}))

    # Routing puts a case of A's application in the Mapo-gu welfare office.
    d = Downstream(intake, app_a)
    routed = CaseRouted(
        **d.case_fields(uuid.uuid4(), "parent_benefit"),
        office_name=Localized(ko="서교동 주민센터", en="Seogyo-dong Community Service Centre"),
        status="open",
        priority=3,
        automatic=False,
        reason="district 11440, department welfare",
        routed_at=d.clock,
    )
    await d.publish(d.event(routed, "/onestop/routing"))
    await view_when(intake, a, app_a["id"], lambda v: v["status"] == "in_progress")

    callers: dict[str, dict[str, str]] = {
        "resident A": a,
        "resident B": b,
        "caseworker of the office": intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-park", name="박상우"),
        "caseworker of another office": intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-han"),
        "supervisor of the office": intake.auth("supervisor", offices=[MAPO_CSC], subject="sv-choi"),
        "supervisor of another office": intake.auth("supervisor", offices=[YONGSAN_CSC], subject="sv-yoon"),
        "admin": intake.auth("admin", subject="admin-kang"),
        "partner": intake.auth("partner", partner_id="kb-bank"),
        "notify": intake.auth("service", service="notify"),
        "routing": intake.auth("service", service="routing"),
        "no token": {},
    }
    readers = {"resident A", "caseworker of the office", "supervisor of the office", "admin"}

    def expect(allowed: set[str], otherwise: int = 404, **special: int) -> dict[str, int]:
        out = {who: (200 if who in allowed else otherwise) for who in callers}
        out["no token"] = 401
        for who, status in special.items():
            out[who.replace("_", " ")] = status
        return out

    reads: dict[str, dict[str, int]] = {
        f"/v1/residents/{a_id}": expect(readers),
        f"/v1/residents/{a_id}/consents": expect(readers),
        f"/v1/applications/{app_a['id']}": expect(readers),
        f"/v1/residents/{a_id}/access-log": expect({"resident A"}),
        f"/v1/residents/{a_id}/contact": expect({"notify"}),
        f"/v1/residents/{uuid.uuid4()}": expect(set()),
        f"/v1/applications/{uuid.uuid4()}": expect(set()),
        "/v1/applications": expect(readers | {"resident B", "caseworker of another office",
                                              "supervisor of another office"}, otherwise=403),
        "/v1/life-events": expect(set(callers)),
    }  # fmt: skip
    failures = []
    for path, expected in reads.items():
        for who, headers in callers.items():
            response = await client.get(path, headers=headers)
            if response.status_code != expected[who]:
                failures.append(f"GET {path} as {who}: {response.status_code}, expected {expected[who]}")
            elif response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)

    contact = await client.get(f"/v1/residents/{a_id}/contact", headers=callers["notify"])
    assert contact.json() == {
        "resident_id": str(a_id),
        "email": "jieun.kim@example.kr",
        "phone": "+82 10-2345-6789",
        "preferred_language": "ko",
        "preferred_channels": ["inbox", "email"],
    }

    lists = {who: await client.get("/v1/applications", headers=callers[who]) for who in readers | {"resident B"}}
    visible = {who: {item["id"] for item in r.json()["items"]} for who, r in lists.items()}
    assert visible["resident A"] == {app_a["id"]}
    assert visible["resident B"] == {app_b["id"]}
    assert visible["caseworker of the office"] == {app_a["id"]}
    assert visible["admin"] == {app_a["id"], app_b["id"]}
    other_office = await client.get("/v1/applications", headers=callers["caseworker of another office"])
    assert other_office.json()["items"] == []

    # Only the resident acts on their own application and consents; staff who can see it get 403, others 404.
    writes: list[tuple[str, str, Any, dict[str, int]]] = [
        ("POST", f"/v1/applications/{app_a['id']}/info", {"answers": {"birth_order": 1}},
         expect(set(), resident_B=404, caseworker_of_the_office=403, supervisor_of_the_office=403, admin=403)),
        ("POST", f"/v1/applications/{app_a['id']}/withdraw", {},
         expect(set(), resident_B=404, caseworker_of_the_office=403, supervisor_of_the_office=403, admin=403)),
        ("POST", f"/v1/applications/{app_a['id']}/feedback", {"score": 5},
         expect(set(), resident_B=404, caseworker_of_the_office=403, supervisor_of_the_office=403, admin=403)),
        ("PUT", f"/v1/residents/{a_id}/consents", {"consents": {"proactive_screening": True}},
         expect(set(), resident_B=404, caseworker_of_the_office=403, supervisor_of_the_office=403, admin=403)),
        ("PATCH", f"/v1/residents/{a_id}", {"vulnerability": ["low_income"]},
         expect(readers - {"resident A"}, resident_A=SKIP)),
        ("POST", "/v1/residents", resident_body(),
         expect(set(), otherwise=201, resident_A=409, resident_B=409, partner=403, notify=403, routing=403)),
        ("POST", "/v1/applications", birth_application(a_id),
         expect(set(), otherwise=403, resident_A=SKIP, resident_B=422, caseworker_of_the_office=SKIP,
                supervisor_of_the_office=SKIP, supervisor_of_another_office=SKIP, admin=SKIP,
                caseworker_of_another_office=201)),
    ]  # fmt: skip
    for method, path, body, expected in writes:
        for who, headers in callers.items():
            if expected[who] == SKIP or (who == "resident A" and expected[who] == 404):
                continue  # what A may do is shown elsewhere; here, who may not
            response = await client.request(method, path, json=body, headers=headers)
            if response.status_code != expected[who]:
                failures.append(f"{method} {path} as {who}: {response.status_code}, expected {expected[who]}")
    assert not failures, "\n".join(failures)
    filed = await client.get("/v1/applications", headers=a)
    assert len(filed.json()["items"]) == 2, "staff of any office may file for a resident"
    assert {i["filed_by"] for i in filed.json()["items"]} == {None, "cw-han"}

    # ---- the access log: A sees every staff (and service) access to their data, and nothing of their own
    log = (await client.get(f"/v1/residents/{a_id}/access-log", params={"limit": 200}, headers=a)).json()["items"]
    seen = {(e["actor"], e["action"], e["record_type"], e["purpose"]) for e in log}
    assert ("cw-park", "read", "application", "case review") in seen
    assert ("cw-park", "read", "resident", "case review") in seen
    assert ("cw-park", "update", "resident", "case review") in seen
    assert ("sv-choi", "read", "application", "case review") in seen
    assert ("admin-kang", "read", "resident", "administration") in seen
    assert ("service:notify", "read", "contact", "notification delivery") in seen
    assert ("cw-han", "file application", "application", "assisted application") in seen
    park = next(e for e in log if e["actor"] == "cw-park" and e["record_type"] == "application")
    assert park["actor_name"] == "박상우"
    assert park["actor_role"] == "caseworker"
    assert park["offices"] == [MAPO_CSC]
    assert park["record_id"] == app_a["id"]
    actors = {e["actor"] for e in log}
    assert f"resident:{a_id}" not in actors, "a resident's own reads are not logged"
    assert not actors & {"sv-yoon", "partner:kb-bank", "service:routing", f"resident:{b_id}"}, "refused reads"
    assert [e["at"] for e in log] == sorted((e["at"] for e in log), reverse=True), "newest first"

    # ...and no one else sees it, nor finds A's accesses in their own log.
    log_b = (await client.get(f"/v1/residents/{b_id}/access-log", headers=b)).json()["items"]
    assert all(e["actor"] == "admin-kang" for e in log_b), log_b
    assert not [e for e in log_b if e["record_id"] in (str(a_id), app_a["id"])]

    page = await client.get(f"/v1/residents/{a_id}/access-log", params={"limit": 2}, headers=a)
    following = await client.get(
        f"/v1/residents/{a_id}/access-log", params={"limit": 200, "cursor": page.json()["next_cursor"]}, headers=a
    )
    assert page.json()["items"] + following.json()["items"] == log
    assert following.json()["next_cursor"] is None

    # Finally A withdraws: the action refused to everyone else is A's to take.
    assert (await client.post(f"/v1/applications/{app_a['id']}/withdraw", headers=a)).status_code == 200
