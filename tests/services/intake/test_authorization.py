"""Object-level authorisation of every intake endpoint, and the access log a resident sees."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from services.intake.context import IntakeContext
from services.intake.models import Opportunity, ScreeningQuestion
from shared.events import (
    CaseDecided,
    CaseRouted,
    Decision,
    EligibilityOpportunity,
    Localized,
    MissingFact,
    ScreeningQuestionAsked,
)
from tests.services.intake.support import (
    JONGNO_CSC,
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
from tests.support.waiting import wait_until

SKIP = 0
Expected = dict[str, int]
MAPO_NAME = Localized(ko="서교동 주민센터", en="Seogyo-dong Community Service Centre")


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
        "postal": None,
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


async def test_several_residents_contact_details_are_read_by_notify_alone_each_read_recorded(
    intake: RunningService,
) -> None:
    """Notify asks for a batch's residents at once: it gets the contact of each it may reach (as the one-resident
    read gives it), an unknown one left out, and each resident sees the read in their access log. No other caller
    gets any."""
    client = intake.client
    a_id, a = await register_self(intake)
    b_id, b = await register_self(intake, name="박민수", email="minsu@example.kr")
    notify = intake.auth("service", service="notify")
    asked = {"resident_ids": [str(b_id), str(uuid.uuid4()), str(a_id)]}

    others = {
        "resident A": a,
        "admin": intake.auth("admin", subject="admin-kang"),
        "caseworker": intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-park"),
        "partner": intake.auth("partner", partner_id="kb-bank"),
        "routing": intake.auth("service", service="routing"),
    }
    for who, headers in others.items():
        refused = await client.post("/v1/contact-lookups", json=asked, headers=headers)
        assert refused.status_code == 403, (who, refused.text)
    assert (await client.post("/v1/contact-lookups", json=asked)).status_code == 401

    read = await client.post("/v1/contact-lookups", json=asked, headers=notify)
    assert read.status_code == 200, read.text
    one_by_one = [(await client.get(f"/v1/residents/{r}/contact", headers=notify)).json() for r in (a_id, b_id)]
    assert sorted(read.json()["items"], key=lambda c: c["resident_id"]) == sorted(
        one_by_one, key=lambda c: c["resident_id"]
    )
    for headers in (a, b):
        log = (await client.get(f"/v1/residents/{a_id if headers is a else b_id}/access-log", headers=headers)).json()
        reads = [e for e in log["items"] if (e["actor"], e["record_type"]) == ("service:notify", "contact")]
        assert len(reads) == 2, "the batch read and the one-resident read"

    too_many = {"resident_ids": [str(uuid.uuid4()) for _ in range(101)]}
    assert (await client.post("/v1/contact-lookups", json=too_many, headers=notify)).status_code == 422


# ---------------------------------------------------------------------------------------------- acting for a resident

ALL_SCOPES = ["apply", "answer", "withdraw", "consent", "read_messages"]


async def test_representatives_act_within_scope_and_expiry_and_counter_staff_only_under_an_authority(
    intake: RunningService,
) -> None:
    """The matrix for acting on a resident's behalf: representatives in scope, out of scope, expired and revoked;
    counter staff with and without an authority the resident gave; and the resident's access log telling who acted,
    for whom, under which authority."""
    client = intake.client
    clock = intake.context(IntakeContext).clock
    today = dt.date.today()
    clock.fixed_today = today

    # A has no phone: registered at the Yongsan-gu counter, where A signs a delegation form.
    han = intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-han", name="한지민")
    registered = await client.post("/v1/residents", json=resident_body(name="이순자", birth_date="1941-03-02"),
                                   headers=han)  # fmt: skip
    assert registered.status_code == 201, registered.text
    a_id = uuid.UUID(registered.json()["id"])
    a = intake.auth("resident", resident_id=a_id)
    b_id, b = await register_self(intake, name="박민수", email="minsu@example.kr")
    form = await client.post(
        f"/v1/residents/{a_id}/authorities",
        json={"kind": "signed_form", "reference": "위임장 2026-0412", "valid_until": str(today + dt.timedelta(30))},
        headers=han,
    )
    assert form.status_code == 201, form.text
    assert form.json()["office_code"] == YONGSAN_CSC

    async def application(*, decided: bool) -> str:
        """A fresh application of A's, with a case in Mapo-gu's office (decided, when asked)."""
        app = await file_application(intake, a, birth_application(a_id))
        d = Downstream(intake, app)
        case_id = uuid.uuid4()
        events = [d.event(CaseRouted(**d.case_fields(case_id, "parent_benefit"), office_name=MAPO_NAME, status="open",
                                     priority=3, automatic=False, reason="district 11440", routed_at=d.clock),
                          "/onestop/routing")]  # fmt: skip
        if decided:
            events.append(d.event(CaseDecided(**d.case_fields(case_id, "parent_benefit"), decision=Decision.APPROVED,
                                              reason_code="eligible", automatic=False, decided_at=d.clock),
                                  "/onestop/routing"))  # fmt: skip
        await d.publish(*events)
        state = "decided" if decided else "open"
        await view_when(intake, a, app["id"], lambda v: any(p["case"] and p["case"]["status"] == state
                                                            for p in v["programs"]))  # fmt: skip
        return str(app["id"])

    shared_app = await application(decided=True)

    # A names five representatives; B one of their own. Two of A's lapse: one expires today, one is revoked.
    reps: dict[str, uuid.UUID] = {}

    async def name(who: str, headers: dict[str, str], resident: uuid.UUID, scopes: list[str], expires: dt.date) -> str:
        reps[who] = uuid.uuid4()
        body = {"representative_id": str(reps[who]), "representative_name": f"{who} 님", "relation": "family",
                "scopes": scopes, "expires_on": expires.isoformat()}  # fmt: skip
        named = await client.post(f"/v1/residents/{resident}/representations", json=body, headers=headers)
        assert named.status_code == 201, named.text
        return str(named.json()["id"])

    year = today + dt.timedelta(days=365)
    await name("every scope", a, a_id, ALL_SCOPES, year)
    await name("answer only", a, a_id, ["answer"], year)
    await name("consent only", a, a_id, ["consent"], year)
    await name("expired", a, a_id, ALL_SCOPES, today)
    revoked = await name("revoked", a, a_id, ALL_SCOPES, year)
    await name("B's", b, b_id, ALL_SCOPES, year)
    gone = await client.post(f"/v1/residents/{a_id}/representations/{revoked}/revoke", headers=a)
    assert (gone.status_code, gone.json()["standing"]) == (200, "revoked")
    clock.fixed_today = today + dt.timedelta(days=1)  # "expired" lasted through yesterday

    callers: dict[str, dict[str, str]] = {
        "resident A": a,
        "resident B": b,
        **{f"representative ({who})": intake.auth("resident", resident_id=rep, name=f"{who} 님")
           for who, rep in reps.items()},
        "counter staff with A's authority": han,
        "staff of the case's office, no authority": intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-park"),
        "staff of another office": intake.auth("caseworker", offices=[JONGNO_CSC], subject="cw-lee"),
        "admin": intake.auth("admin", subject="admin-kang"),
        "no token": {},
    }  # fmt: skip
    rep = "representative ({})".format
    counter, no_authority = "counter staff with A's authority", "staff of the case's office, no authority"
    lapsed = {rep("expired"), rep("revoked"), rep("B's")}

    def expect(allowed: set[str], refused: set[str] | None = None, otherwise: int = 404, **special: int) -> Expected:
        out = {who: 200 if who in allowed else 403 if who in (refused or set()) else otherwise for who in callers}
        out["no token"] = 401
        out.update({who.replace("resident_A", "resident A"): status for who, status in special.items()})
        return out

    reads = {
        f"/v1/applications/{shared_app}": expect({"resident A", rep("every scope"), rep("answer only"), counter,
                                                 no_authority, "admin"}),
        f"/v1/residents/{a_id}/consents": expect({"resident A", rep("every scope"), rep("consent only"), counter,
                                                  no_authority, "admin"}),
        f"/v1/residents/{a_id}": expect({"resident A", counter, no_authority, "admin"}),
        f"/v1/residents/{a_id}/representations": expect({"resident A", counter, no_authority, "admin"}),
        f"/v1/residents/{a_id}/authorities": expect({"resident A", counter, no_authority, "admin"}),
        f"/v1/residents/{a_id}/access-log": expect({"resident A"}),
    }  # fmt: skip
    failures = []
    for path, expected in reads.items():
        for who, headers in callers.items():
            response = await client.get(path, headers=headers)
            if response.status_code != expected[who]:
                failures.append(f"GET {path} as {who}: {response.status_code}, expected {expected[who]}")
    assert not failures, "\n".join(failures)

    of_a = {"resident_id": str(a_id)}
    listed = await client.get("/v1/applications", params=of_a, headers=callers[rep("answer only")])
    assert shared_app in {i["id"] for i in listed.json()["items"]}, "a representative lists whom they act for"
    for who in lapsed | {rep("consent only")}:
        listed = await client.get("/v1/applications", params=of_a, headers=callers[who])
        assert listed.json()["items"] == [], who

    # Each write, as each caller. A success changes things, so it acts on an application of its own.
    writes: list[tuple[str, str, Any, dict[str, int], bool]] = [
        ("POST", "/v1/applications/{app}/info", {"answers": {"birth_order": 1}},
         expect({rep("every scope"), rep("answer only"), counter}, {no_authority, "admin"}, resident_A=SKIP), False),
        ("POST", "/v1/applications/{app}/withdraw", {},
         expect({rep("every scope"), counter}, {rep("answer only"), no_authority, "admin"}, resident_A=SKIP), False),
        ("POST", "/v1/applications/{app}/feedback", {"score": 4},
         expect(set(), {rep("every scope"), rep("answer only"), no_authority, "admin"}, resident_A=SKIP,
                **{counter: 201}), True),
        ("PUT", f"/v1/residents/{a_id}/consents", {"consents": {"proactive_screening": True}},
         expect({rep("every scope"), rep("consent only"), counter}, {no_authority, "admin"}, resident_A=SKIP), False),
        ("POST", "/v1/applications", birth_application(a_id),
         expect(set(), {rep("answer only"), rep("consent only"), "partner"}, otherwise=422, resident_A=SKIP,
                **{rep("every scope"): 201, counter: 201, no_authority: 201, "staff of another office": 201,
                   "admin": 201}), False),
        ("POST", f"/v1/residents/{a_id}/representations", None,
         expect(set(), {no_authority, "admin"}, resident_A=SKIP, **{counter: 201}), False),
    ]  # fmt: skip
    for method, path, body, expected, decided in writes:
        for who, headers in callers.items():
            status = expected[who]
            if status == SKIP:
                continue
            app = await application(decided=decided) if status in (200, 201) and "{app}" in path else shared_app
            if body is None:  # a representative of its own each time
                body_now: Any = {"representative_id": str(uuid.uuid4()), "representative_name": "김간병",
                                 "relation": "care_worker", "scopes": ["read_messages"],
                                 "expires_on": str(today + dt.timedelta(days=90))}  # fmt: skip
            else:
                body_now = body
            response = await client.request(method, path.format(app=app), json=body_now, headers=headers)
            if response.status_code != status:
                failures.append(f"{method} {path} as {who}: {response.status_code}, expected {status}")
            elif status >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)

    # Recording a counter authority is for office staff who see the resident; the resident cannot give it to
    # themselves, nor an administrator record it.
    record = {"kind": "id_checked", "reference": "주민등록증"}
    for who, status in {"resident A": 403, rep("every scope"): 404, "resident B": 404, "admin": 403,
                        "staff of another office": 404, no_authority: 201}.items():  # fmt: skip
        response = await client.post(f"/v1/residents/{a_id}/authorities", json=record, headers=callers[who])
        assert response.status_code == status, f"{who}: {response.text}"

    # ---- A's access log: who acted, for whom, under which authority; nothing of the refused
    log = (await client.get(f"/v1/residents/{a_id}/access-log", params={"limit": 200}, headers=a)).json()["items"]
    acted = {(e["actor"], e["action"]) for e in log if e["authority"] is not None}
    every = f"resident:{reps['every scope']}"
    assert {(every, "answer request for information"), (every, "withdraw"), (every, "set consents"),
            (every, "file application"), (f"resident:{reps['answer only']}", "answer request for information"),
            (f"resident:{reps['consent only']}", "set consents"), ("cw-han", "answer request for information"),
            ("cw-han", "withdraw"), ("cw-han", "give feedback"), ("cw-han", "set consents"),
            ("cw-han", "name representative"), ("cw-han", "record authority")} <= acted  # fmt: skip
    by_rep = next(e for e in log if e["actor"] == every and e["action"] == "withdraw")
    assert by_rep["actor_name"] == "every scope 님"
    assert by_rep["on_behalf_of"] == str(a_id)
    assert by_rep["purpose"] == "representation"
    assert by_rep["authority"]["kind"] == "representative"
    assert by_rep["authority"]["relation"] == "family"
    assert by_rep["authority"]["representative_name"] == "every scope 님"
    at_counter = next(e for e in log if e["actor"] == "cw-han" and e["action"] == "give feedback")
    assert at_counter["on_behalf_of"] == str(a_id)
    assert at_counter["purpose"] == "counter service"
    assert at_counter["authority"] == {"kind": "signed_form", "id": form.json()["id"], "relation": None,
                                       "representative_name": None, "reference": "위임장 2026-0412",
                                       "office_code": YONGSAN_CSC}  # fmt: skip
    read_by_rep = [e for e in log if e["actor"] == every and e["action"] == "read"]
    assert read_by_rep, "a representative's reads are logged too"
    assert all(e["authority"]["kind"] == "representative" for e in read_by_rep)
    case_review = next(e for e in log if e["actor"] == "cw-park" and e["action"] == "read")
    assert (case_review["on_behalf_of"], case_review["authority"]) == (None, None), "reading is not acting for"
    actors = {e["actor"] for e in log}
    assert not actors & {f"resident:{reps[w]}" for w in ("expired", "revoked", "B's")}, "refused callers left no trace"
    assert f"resident:{a_id}" not in actors

    withdrawn = await client.put(f"/v1/residents/{a_id}/consents", json={"consents": {}}, headers=han)
    assert withdrawn.json()["consents"] == {"proactive_screening": False}
    history = (await client.get(f"/v1/residents/{a_id}/consents", headers=a)).json()["history"]
    assert [(h["changed_by_role"], h["granted"]) for h in history] == [("representative", True), ("caseworker", False)]


async def test_offers_and_questions_reach_exactly_who_may_read_or_act_on_them(intake: RunningService) -> None:
    """The resident; a representative within scope (apply: read, accept, decline; answer: read, answer); counter
    staff of an office the resident authorised (read and act); staff who may see the record (read, audited); nobody
    else (404) — and who may see but not act gets 403. Every act by someone else is in the resident's access log."""
    client = intake.client
    clerk = intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-mapo", name="이서연")
    registered = await client.post("/v1/residents", json=resident_body(), headers=clerk)
    assert registered.status_code == 201, registered.text
    a_id = uuid.UUID(registered.json()["id"])
    a = intake.auth("resident", resident_id=a_id)
    _, b = await register_self(intake, email="other@example.kr")
    consented = await client.put(f"/v1/residents/{a_id}/consents", json={"consents": {"proactive_screening": True}},
                                 headers=a)  # fmt: skip
    assert consented.status_code == 200, consented.text
    authority = await client.post(f"/v1/residents/{a_id}/authorities",
                                  json={"kind": "signed_form", "reference": "위임장 M-3"}, headers=clerk)  # fmt: skip
    assert authority.status_code == 201, authority.text
    reps = {}
    for scope in ("apply", "answer", "read_messages"):
        rep_id = uuid.uuid4()
        named = await client.post(
            f"/v1/residents/{a_id}/representations",
            json={"representative_id": str(rep_id), "representative_name": f"대리인 {scope}", "relation": "family",
                  "scopes": [scope], "expires_on": (dt.date.today() + dt.timedelta(days=30)).isoformat()},
            headers=a,
        )  # fmt: skip
        assert named.status_code == 201, named.text
        reps[scope] = intake.auth("resident", resident_id=rep_id)

    programs = ["child_allowance", "parent_benefit", "first_meeting_voucher", "maternal_newborn_care", "basic_pension"]
    for code in programs:
        await intake.publish(
            EligibilityOpportunity(screening_id=uuid.uuid4(), resident_id=a_id, program_code=code,
                                   program_name=Localized(ko=code, en=code), department="welfare",
                                   found_at=dt.datetime.now(dt.UTC)),
            source="/onestop/eligibility",
        )  # fmt: skip
    for fact in ("korean_national", "birth_registered"):
        await intake.publish(
            ScreeningQuestionAsked(question_id=uuid.uuid4(), screening_id=uuid.uuid4(), resident_id=a_id,
                                   program_code="parent_benefit", program_name=Localized(ko="부모급여", en="Parent"),
                                   department="welfare",
                                   fact=MissingFact(name=fact, type="boolean", question=Localized(ko="?", en="?")),
                                   why=Localized(ko="이유", en="why"), asked_at=dt.datetime.now(dt.UTC)),
            source="/onestop/eligibility",
        )  # fmt: skip
    await wait_until(lambda: intake.settled("offers"))
    assert await intake.count(Opportunity) == len(programs)

    callers: dict[str, dict[str, str]] = {
        "resident": a,
        "another resident": b,
        "representative (apply)": reps["apply"],
        "representative (answer)": reps["answer"],
        "representative (messages)": reps["read_messages"],
        "counter staff": intake.auth("caseworker", offices=[MAPO_CSC], subject="cw-kim"),
        "staff of another office": intake.auth("caseworker", offices=[YONGSAN_CSC], subject="cw-han"),
        "admin": intake.auth("admin", subject="admin-kang"),
        "partner": intake.auth("partner", partner_id="kb-bank"),
        "notify": intake.auth("service", service="notify"),
        "no token": {},
    }
    readers = {"resident", "representative (apply)", "representative (answer)", "counter staff", "admin"}
    failures = []
    for path in (f"/v1/residents/{a_id}/opportunities", f"/v1/residents/{a_id}/questions"):
        for who, headers in callers.items():
            status = (await client.get(path, headers=headers)).status_code
            expected = 401 if who == "no token" else 200 if who in readers else 404
            if status != expected:
                failures.append(f"GET {path} as {who}: {status}, expected {expected}")

    offers = {o["program_code"]: o["id"] for o in (await client.get(f"/v1/residents/{a_id}/opportunities",
                                                                     headers=a)).json()}  # fmt: skip
    questions = [q["id"] for q in (await client.get(f"/v1/residents/{a_id}/questions", headers=a)).json()]
    refused = {"another resident": 404, "representative (messages)": 404, "staff of another office": 404,
               "partner": 404, "notify": 404, "no token": 401, "admin": 403}  # fmt: skip
    acts: list[tuple[str, Any, dict[str, int]]] = [
        (f"opportunities/{offers['basic_pension']}/accept", None, {**refused, "representative (answer)": 403}),
        (f"opportunities/{offers['basic_pension']}/decline", {"reason": "not_interested"},
         {**refused, "representative (answer)": 403}),
        (f"questions/{questions[0]}/answer", {"value": True}, {**refused, "representative (apply)": 403}),
    ]  # fmt: skip
    for path, body, statuses in acts:
        for who, status in statuses.items():
            response = await client.post(f"/v1/residents/{a_id}/{path}", json=body, headers=callers[who])
            if response.status_code != status:
                failures.append(f"POST {path} as {who}: {response.status_code}, expected {status}")
            elif status >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)
    assert await intake.count(Opportunity, Opportunity.status == "offered") == len(programs), "refusals wrote nothing"
    assert await intake.count(ScreeningQuestion, ScreeningQuestion.status == "open") == 2

    allowed = [
        ("representative (apply)", f"opportunities/{offers['child_allowance']}/accept", None, 201, "representative"),
        ("counter staff", f"opportunities/{offers['parent_benefit']}/accept", None, 201, "counter"),
        ("representative (apply)", f"opportunities/{offers['first_meeting_voucher']}/decline",
         {"reason": "will_apply_later"}, 200, "representative"),
        ("resident", f"opportunities/{offers['maternal_newborn_care']}/decline", {"reason": "privacy"}, 200,
         "resident"),
        ("representative (answer)", f"questions/{questions[0]}/answer", {"value": True}, 200, "representative"),
        ("counter staff", f"questions/{questions[1]}/answer", {"value": False}, 200, "counter"),
    ]  # fmt: skip
    for who, path, body, status, acted in allowed:
        response = await client.post(f"/v1/residents/{a_id}/{path}", json=body, headers=callers[who])
        assert response.status_code == status, (who, path, response.text)
        shown = response.json().get("opportunity", response.json())
        assert shown["acted_as"] == acted, (who, path)

    log = (await client.get(f"/v1/residents/{a_id}/access-log", params={"limit": 200}, headers=a)).json()["items"]
    by = {(e["action"], e["authority"]["kind"] if e["authority"] else None) for e in log}
    assert {("accept offer", "representative"), ("accept offer", "signed_form"), ("decline offer", "representative"),
            ("answer screening question", "representative"),
            ("answer screening question", "signed_form")} <= by  # fmt: skip
    assert ("read offers", None) in by, "the administrator's read is in the log"
    assert not any(e["action"] == "decline offer" and e["authority"] is None for e in log), "her own act is not"
