"""A resident's rights over their data, across the four services as separate processes, driven over HTTP as the
resident, a caseworker and a partner would: the resident files, gets a case and a notification, asks for a copy of
everything held about them (one document with each service's part), then for its erasure; afterwards each service
holds only what its retention table keeps, the export shows just that with its reasons, the resident is told, and the
partner receives nothing more about them."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from typing import Any

import pytest

from onestop.runner import Platform
from shared.auth import Role
from tests.e2e.support import JSON, Api, Resident, WebhookEndpoint, eventually, programs

pytestmark = pytest.mark.e2e

JOB_LOSS = {"employment_status": "unemployed", "job_loss_reason": "dismissal", "korean_national": True,
            "earned_income": 1_500_000, "business_income": 0, "public_pension_income": 0,
            "crisis_type": "main_earner_job_loss", "household_assets": 30_000_000}  # fmt: skip
SERVICES = {"intake", "eligibility", "routing", "notify"}


def _export(api: Api, resident: Resident) -> JSON:
    """Ask for a copy of everything, wait for it, and return the document."""
    response = api.request("intake", "POST", f"/v1/residents/{resident.id}/data-exports", resident.auth)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert response.json()["status"] == "pending"

    def ready() -> JSON | None:
        export: JSON = api.ok("intake", "GET", location, resident.auth)
        assert export["status"] != "failed", export
        return export if export["status"] == "ready" else None

    export = eventually(ready, timeout=60, what="the export gathered from every service")
    assert {s for s, part in export["parts"].items() if part["status"] == "gathered"} == SERVICES
    document: JSON = export["document"]
    return document


def _mine(endpoint: WebhookEndpoint, resident: Resident) -> list[Any]:
    return [d for d in endpoint.deliveries if d.event["data"].get("resident_id") == str(resident.id)]


def test_a_resident_exports_everything_then_has_it_erased_but_what_the_law_keeps(
    api: Api, platform: Platform, partner_endpoint: WebhookEndpoint
) -> None:
    ngo = api.token(Role.PARTNER, partner_id="saebom-ngo")
    granted = ["application.submitted", "eligibility.determined", "case.routed", "case.decided"]
    api.ok("notify", "POST", "/v1/subscriptions", ngo,
           json={"transport": "webhook", "event_types": granted, "url": partner_endpoint.url})  # fmt: skip

    # The resident files; a case opens; they are told; the NGO they consented to hears of it.
    resident = api.register(district="11440", language="en", birth_date="1981-05-05")
    api.consent(resident, **{"partner__saebom-ngo": True})
    application = api.apply(resident, "job_loss", JOB_LOSS)
    view = api.view_when(
        application, resident.auth, lambda v: bool((programs(v).get("emergency_welfare") or {}).get("case")),
        what="a case for emergency welfare",
    )  # fmt: skip
    case = programs(view)["emergency_welfare"]["case"]
    eventually(lambda: [m for m in api.inbox(resident) if m["kind"] == "case.routed"], what="told of the case")
    eventually(lambda: _mine(partner_endpoint, resident), what="the NGO heard of the application")

    # A caseworker decides it (a decision file the law keeps); the resident withdraws the rest.
    caseworker = api.token(Role.CASEWORKER, offices=[case["office_code"]], subject="caseworker:rights-oh")
    api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/claim", caseworker)
    api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/decide", caseworker,
           json={"decision": "approved", "reason_code": "criteria_met", "note": "Dismissal letter seen."})  # fmt: skip
    api.view_when(
        application, resident.auth, lambda v: programs(v)["emergency_welfare"]["case"]["status"] == "decided",
        what="decided",
    )  # fmt: skip

    # While the application is being handled, erasure is refused: it could end a benefit they are owed.
    refused = api.request("intake", "POST", f"/v1/residents/{resident.id}/erasure-requests", resident.auth,
                          json={"confirm": True})  # fmt: skip
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "urn:onestop:problem:applications-open"
    assert refused.json()["applications"] == [application]

    # 1. A copy of everything: one document, each service's part.
    document = _export(api, resident)
    parts = document["services"]
    assert set(parts) == SERVICES
    intake, eligibility, routing, notify = (parts[s]["records"] for s in ("intake", "eligibility", "routing", "notify"))
    assert intake["resident"][0]["name"] == f"Test Resident {resident.id.hex[:6]}"
    assert intake["resident"][0]["email"] == resident.email
    assert [c["purpose"] for c in intake["consents"]] == ["partner:saebom-ngo"]
    assert [a["id"] for a in intake["applications"]] == [application]
    assert eligibility["applications"][0]["declared"]["crisis_type"] == "main_earner_job_loss"
    assert {d["program_code"] for d in eligibility["determinations"]} >= {"emergency_welfare"}
    decided = [c for c in routing["cases"] if c["id"] == case["case_id"]]
    assert decided[0]["status"] == "decided"
    assert [e["action"] for e in decided[0]["history"]][:1] == ["routed"]
    assert {n["kind"] for n in notify["notifications"]} >= {"application.submitted", "case.routed"}
    # Which partner got what, when: the NGO, the partner view it was sent.
    sent = {(d["partner_id"], d["event_type"]) for d in notify["partner_deliveries"]}
    assert ("saebom-ngo", "application.submitted") in sent
    assert all(d["sent"] is None or d["sent"]["resident_id"] == str(resident.id) for d in notify["partner_deliveries"])
    for part in parts.values():
        assert part["retention"], "each part states its retention table"
        assert part["erasure"] is None
    # The copy is in the resident's access log (theirs too: all their data left the platform).
    log = api.ok("intake", "GET", f"/v1/residents/{resident.id}/access-log", resident.auth)["items"]
    assert {"request export", "read export"} <= {e["action"] for e in log}

    # 2. The resident withdraws what is still open, then asks for erasure.
    api.ok("intake", "POST", f"/v1/applications/{application}/withdraw", resident.auth, json={"reason": "moving"})
    api.view_when(application, resident.auth, lambda v: v["status"] == "withdrawn", what="withdrawn")
    eventually(
        lambda: all(
            (p.get("case") or {}).get("status") in (None, "decided", "closed")
            for p in api.view(application, resident.auth)["programs"]
        ),
        what="every case final",
    )
    before = len(_mine(partner_endpoint, resident))
    created = api.request("intake", "POST", f"/v1/residents/{resident.id}/erasure-requests", resident.auth,
                          json={"confirm": True, "reason": "I am moving abroad."})  # fmt: skip
    assert created.status_code == 201, created.text
    erasure = created.json()
    assert erasure["status"] == "in_progress"
    assert [f["application_id"] for f in erasure["decision_files"]] == [application]
    again = api.request("intake", "POST", f"/v1/residents/{resident.id}/erasure-requests", resident.auth,
                        json={"confirm": True})  # fmt: skip
    assert again.status_code == 409
    assert again.json()["type"] == "urn:onestop:problem:erasure-already-requested"

    location = created.headers["location"]
    done = eventually(
        lambda: (e if (e := api.ok("intake", "GET", location, resident.auth))["status"] == "completed" else None),
        timeout=60, what="every service answered",
    )  # fmt: skip
    by_service = {s["service"]: s for s in done["services"]}
    assert set(by_service) == SERVICES
    assert all(s["status"] == "erased" for s in by_service.values())
    decided_year = dt.date.fromisoformat(erasure["decision_files"][0]["decided_on"]).year
    for service, record_type in (("intake", "decision_files"), ("eligibility", "decision_files"),
                                 ("routing", "decided_cases")):  # fmt: skip
        kept = {k["record_type"]: k for k in by_service[service]["kept"]}
        assert kept[record_type]["count"] == 1
        # Five years from the 1st of January after the decision (공공기록물법 시행령 제26조 — 확인 필요).
        assert kept[record_type]["destroy_on"] == f"{decided_year + 6}-01-01"
        assert kept[record_type]["legal_basis"]
    assert by_service["routing"]["erased"]["cases_without_decision"] >= 1
    assert by_service["notify"]["erased"]["messages"] >= 2
    assert by_service["notify"]["erased"]["partner_deliveries"] >= 1

    # The resident is told the result, in the app and by email (intake kept their address for it).
    notice = eventually(
        lambda: [m for m in api.inbox(resident) if m["kind"] == "resident.erasure_completed"], what="the notice"
    )
    assert [m["kind"] for m in api.inbox(resident)] == ["resident.erasure_completed"], "nothing else is left"
    assert "erased" in notice[0]["body"]
    mail_dir = platform.var / "notify" / "mail" / "new"

    def notice_mail() -> list[email.message.EmailMessage] | None:
        parsed = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mail_dir.glob("*.eml")]
        mine = [m for m in parsed if resident.email in str(m["To"] or "") and "erased" in str(m["Subject"])]
        return mine or None

    eventually(notice_mail, what="the notice by email")

    # 3. What is left: only what the retention tables keep, with reasons, and nothing more for anyone else.
    assert api.request("intake", "GET", f"/v1/residents/{resident.id}", resident.auth).status_code == 404
    after = _export(api, resident)["services"]
    intake, eligibility, routing, notify = (after[s]["records"] for s in ("intake", "eligibility", "routing", "notify"))
    stub = intake["resident"][0]
    assert (stub["name"], stub["birth_date"], stub["address"], stub["household"]) == (None, None, None, None)
    assert stub["erased_at"] is not None
    assert (intake["consents"], intake["consent_history"], intake["feedback"]) == ([], [], [])
    assert [a["id"] for a in intake["applications"]] == [application], "the decision file"
    assert intake["applications"][0]["withdrawal_reason"] is None
    assert (eligibility["registry"], eligibility["department_facts"]) == ([], [])
    assert [a["application_id"] for a in eligibility["applications"]] == [application]
    assert eligibility["applications"][0]["resident_context"] is None
    assert [(c["id"], c["status"]) for c in routing["cases"]] == [(case["case_id"], "decided")]
    assert routing["cases"][0]["vulnerability"] == []
    assert (routing["referrals"], routing["consents"]) == ([], [])
    assert [n["kind"] for n in notify["notifications"]] == ["resident.erasure_completed"]
    assert (notify["partner_consents"], notify["partner_deliveries"]) == ([], [])
    assert (notify["preferences"], notify["resident"]) == ([], [])
    for service, part in after.items():
        assert part["erasure"] is not None, service
        for kept in part["erasure"]["kept"]:
            assert kept["reason"]["ko"]
            assert kept["reason"]["en"]
            assert kept["legal_basis"]
            assert kept["destroy_on"]

    # A partner receives nothing more: another consenting resident's events reach the NGO (a barrier: notify takes
    # events in stream order), and none about the erased resident came since the erasure.
    other = api.register(district="11440", language="ko", birth_date="1990-02-02")
    api.consent(other, **{"partner__saebom-ngo": True})
    api.apply(other, "job_loss", JOB_LOSS)
    eventually(lambda: _mine(partner_endpoint, other), what="the other resident's events at the NGO")
    assert len(_mine(partner_endpoint, resident)) == before
