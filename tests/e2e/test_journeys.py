"""The journeys the platform is for, across the four services running as separate processes, driven only over
HTTP (and a partner's webhook endpoint) as residents, caseworkers, administrators and partners would.

Each test takes new residents, so they do not disturb one another on the shared platform."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from typing import Any

import pytest

from onestop.runner import Platform
from shared.auth import Role
from tests.e2e.conftest import TAX_SOURCE
from tests.e2e.support import (
    JSON,
    Api,
    Delivery,
    WebhookEndpoint,
    eventually,
    programs,
    settled_round,
    verify_standard_webhook,
)

pytestmark = pytest.mark.e2e

HANGUL = re.compile(r"[\uac00-\ud7a3]")
PERSONAL_KEYS = {"name", "email", "phone", "address", "birth_date", "answers", "household", "resident", "filed_by"}

# A resident who lost their job: what they declare when filing (incomes, crisis and assets left out), and then what
# they are asked: their incomes by kind (what a person can answer), never an income total.
JOB_LOSS = {"employment_status": "unemployed", "job_loss_reason": "dismissal", "korean_national": True}
JOB_LOSS_DETAILS = {"earned_income": 1_500_000, "business_income": 0, "public_pension_income": 0,
                    "crisis_type": "main_earner_job_loss", "household_assets": 30_000_000}  # fmt: skip


def _all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _all_keys(v)}
    return set()


def _staff(api: Api, office: str, role: Role = Role.CASEWORKER, name: str = "kim") -> dict[str, str]:
    return api.token(role, offices=[office], subject=f"{role.value}:{name}-{office.lower()}")


# ---------------------------------------------------------------------------------------------- 1. birth


def test_birth_one_application_reaches_every_department(
    api: Api, platform: Platform, partner_endpoint: WebhookEndpoint
) -> None:
    # A partner NGO (seeded with its grants) subscribes a webhook to what it was granted.
    partner = api.token(Role.PARTNER, partner_id="saebom-ngo")
    granted = ["application.submitted", "eligibility.determined", "case.routed", "case.decided"]
    subscription = api.ok(
        "notify", "POST", "/v1/subscriptions", partner,
        json={"transport": "webhook", "event_types": granted, "url": partner_endpoint.url},
    )  # fmt: skip
    secret = subscription["secret"]
    assert secret.startswith("whsec_")

    parent = api.register(
        district="11170",
        language="ko",
        household=[{"relation": "spouse", "birth_date": "1991-01-09", "monthly_income": 2_000_000}],
    )
    # The NGO hears about the family because the parent consents to it (partner:saebom-ngo).
    api.consent(parent, **{"partner__saebom-ngo": True})
    bundle = next(le for le in api.ok("intake", "GET", "/v1/life-events", parent.auth) if le["code"] == "birth")
    answers = {"child_birth_date": (dt.date.today() - dt.timedelta(days=9)).isoformat(), "birth_order": 2,
               "newborns": 1, "korean_national": True, "birth_registered": True, "earned_income": 2_200_000,
               "business_income": 0, "public_pension_income": 0, "employment_status": "employed"}  # fmt: skip
    application = api.apply(parent, "birth", answers)

    # Within seconds the one status shows every program of the bundle, across departments, each explained.
    def complete(view: JSON) -> bool:
        shown = programs(view)
        automatic = [p for p in shown.values() if p["outcome"] == "eligible" and p["automatic"]]
        return (
            settled_round(view)
            and len(shown) == len(bundle["programs"])
            and bool(automatic)
            and all((p.get("case") or {}).get("status") == "decided" for p in automatic)
        )

    view = api.view_when(application, parent.auth, complete, what="the birth bundle decided")
    shown = programs(view)
    assert set(shown) == {p["code"] for p in bundle["programs"]}
    assert {p["department"] for p in shown.values()} >= {"welfare", "health", "civil_registry", "labour", "tax"}
    for program in shown.values():
        assert program["outcome"] in {"eligible", "ineligible", "needs_information", "needs_review"}
        assert program["criteria"], f"{program['program_code']} explains its outcome"
        for criterion in program["criteria"]:
            assert criterion["status"] in {"passed", "failed", "unknown"}
            assert criterion["label"]["ko"]
            assert criterion["label"]["en"]
    voucher = shown["first_meeting_voucher"]
    assert (voucher["outcome"], voucher["amount"]) == ("eligible", 3_000_000), "the second child's voucher"
    assert shown["parent_benefit"]["amount"] == 1_000_000, "a newborn: age 0"
    assert shown["birth_registration"]["case"]["status"] == "decided", "automatic grants are completed"

    # Review cases sit in the queue of the office responsible for the resident's district and department.
    reviews = [p for p in shown.values() if (p.get("case") or {}).get("status") == "open"]
    assert reviews, "some programs need a caseworker"
    for program in reviews:
        case = program["case"]
        queue = api.ok("routing", "GET", f"/v1/queues/{case['office_code']}", _staff(api, case["office_code"]))
        assert case["case_id"] in {item["id"] for item in queue["items"]}
        detail = api.ok("routing", "GET", f"/v1/cases/{case['case_id']}", _staff(api, case["office_code"]))
        assert detail["routing"]["district_code"] == "11170"
        assert detail["routing"]["department"] == program["department"]
        assert detail["routing"]["explanation"]

    # The parent hears it all in Korean: in the app and by email.
    def told() -> list[JSON] | None:
        messages = api.inbox(parent, application)
        return messages if len(messages) >= 3 else None

    inbox = eventually(told, what="three messages in the parent's inbox")
    assert {m["language"] for m in inbox} == {"ko"}
    assert all(HANGUL.search(m["title"]) and HANGUL.search(m["body"]) for m in inbox)
    assert {"application.submitted", "eligibility.determined"} <= {m["kind"] for m in inbox}
    mail_dir = platform.var / "notify" / "mail" / "new"

    def mails() -> list[email.message.EmailMessage] | None:
        parsed = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mail_dir.glob("*.eml")]
        mine = [m for m in parsed if parent.email in str(m["To"] or "")]
        return mine if len(mine) >= 3 else None

    sent = eventually(mails, what="emails in the sink")
    assert all(HANGUL.search(str(m["Subject"])) for m in sent)

    # The partner's webhook received the partner-visible events for this application, signed, without personal data.
    def delivered() -> list[Delivery] | None:
        received = partner_endpoint.for_application(application)
        types = {d.event["type"].removeprefix("onestop.") for d in received}
        return received if set(granted) <= types else None

    deliveries = eventually(delivered, what="the partner's webhook deliveries")
    for delivery in deliveries:
        assert verify_standard_webhook(secret, delivery), "signed per Standard Webhooks with the subscription secret"
        assert delivery.event["data"]["resident_id"] == str(parent.id)
        assert not (_all_keys(delivery.event["data"]) & PERSONAL_KEYS)
        assert "amount" not in _all_keys(delivery.event["data"]), "the NGO's grants are for notification"
        assert parent.email not in delivery.body.decode()


# ---------------------------------------------------------------------------------------------- 2. job loss


def test_job_loss_with_missing_information_until_a_decision(api: Api) -> None:
    resident = api.register(district="11440", language="en", birth_date="1985-03-02")
    application = api.apply(resident, "job_loss", JOB_LOSS)

    view = api.view_when(application, resident.auth, settled_round, what="the first determination")
    emergency = programs(view)["emergency_welfare"]
    assert emergency["outcome"] == "needs_information"
    asked = {m["name"]: m for m in emergency["missing"]}
    assert {"crisis_type", "earned_income", "household_assets"} <= set(asked)
    catalogue = {f["name"]: f for f in api.ok("eligibility", "GET", "/v1/fact-types", resident.auth)}
    assert asked["crisis_type"]["question"] == catalogue["crisis_type"]["question"], "the catalogue's own question"
    assert view["status"] == "action_required"

    # The resident answers through intake; eligibility judges again; a case opens for a caseworker.
    api.ok("intake", "POST", f"/v1/applications/{application}/info", resident.auth, json={"answers": JOB_LOSS_DETAILS})

    def emergency_case(view: JSON) -> bool:
        program = programs(view)["emergency_welfare"]
        return settled_round(view, 2) and program["outcome"] == "eligible" and bool(program.get("case"))

    view = api.view_when(application, resident.auth, emergency_case, what="a case for emergency welfare")
    assert view["determination"]["trigger"] == "info_provided"
    case = programs(view)["emergency_welfare"]["case"]
    caseworker = _staff(api, case["office_code"], name="park")
    api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/claim", caseworker)

    # The caseworker needs a document; the resident is asked, answers, and the case moves on.
    question = "Please send the letter of dismissal from your employer."
    api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/request-info", caseworker,
           json={"questions": [{"text": question}]})  # fmt: skip
    view = api.view_when(
        application, resident.auth,
        lambda v: v["status"] == "action_required" and bool(programs(v)["emergency_welfare"]["case"]["questions"]),
        what="the caseworker's question shown to the resident",
    )  # fmt: skip
    assert programs(view)["emergency_welfare"]["case"]["questions"][0]["text"] == question
    api.ok("intake", "POST", f"/v1/applications/{application}/info", resident.auth,
           json={"note": "Sent the letter dated 3 November by post today."})  # fmt: skip

    # The answer is judged again (a new round, whatever it holds), and the case takes that round in: a decision
    # made while it does is refused as a concurrent change (409), as a caseworker's would be.
    def back_with_round_3(found: JSON) -> bool:
        return bool(found["status"] == "assigned" and found["round"] >= 3)

    eventually(
        lambda: back_with_round_3(api.ok("routing", "GET", f"/v1/cases/{case['case_id']}", caseworker)),
        what="the case back with its caseworker, judged again",
    )

    decision = {"decision": "approved", "reason_code": "criteria_met_after_information", "note": "Letter received."}
    api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/decide", caseworker, json=decision)
    view = api.view_when(
        application, resident.auth,
        lambda v: programs(v)["emergency_welfare"]["case"]["status"] == "decided", what="the decision shown",
    )  # fmt: skip
    assert programs(view)["emergency_welfare"]["case"]["decision"] == "approved"
    told = eventually(
        lambda: [m for m in api.inbox(resident, application) if m["kind"] == "case.decided"], what="told the decision"
    )
    assert "Emergency welfare" in told[0]["body"]
    assert told[0]["language"] == "en"


# ---------------------------------------------------------------------------------------------- 3. overflow


def test_moving_in_where_the_office_is_full_overflows_to_its_neighbour(api: Api) -> None:
    admin = api.token(Role.ADMIN)
    office = api.ok("routing", "GET", "/v1/offices/WEST-HOUSING", admin)
    writable = ("name", "kind", "departments", "districts", "languages", "capacity", "neighbours", "supervisors",
                "fallback")  # fmt: skip
    original = {k: office[k] for k in writable}
    full = {**original, "capacity": {**original["capacity"], "active_case_ceiling": 1.0}}
    api.ok("routing", "PUT", "/v1/offices/WEST-HOUSING", admin, json=full)
    try:
        answers = {"moved_in_date": dt.date.today().isoformat(), "tenure": "monthly_rent", "monthly_rent": 450_000,
                   "lease_deposit": 10_000_000, "living_apart_from_parents": True, "korean_national": True,
                   "earned_income": 0, "business_income": 1_300_000, "public_pension_income": 0,
                   "residence_value": 10_000_000, "other_property_value": 0, "financial_assets": 0,
                   "vehicle_value": 0, "debts": 0, "owns_vehicle": False}  # fmt: skip
        # A recognised income of 1,300,000 (the deposit is below the basic deduction): above housing benefit's 48 %
        # of the median but within youth rent support's 60 %: one review case each.

        def rent_case(view: JSON) -> bool:
            return settled_round(view) and bool(programs(view)["youth_monthly_rent_support"].get("case"))

        first = api.register(district="11440", language="ko", birth_date="2001-06-01")
        view = api.view_when(api.apply(first, "moving_in", answers), first.auth, rent_case, what="the first case")
        assert programs(view)["housing_benefit"]["outcome"] == "ineligible"
        assert programs(view)["youth_monthly_rent_support"]["case"]["office_code"] == "WEST-HOUSING"
        eventually(
            lambda: not api.ok("routing", "GET", "/v1/offices/WEST-HOUSING", admin)["load"]["has_room"],
            what="WEST-HOUSING full",
        )

        second = api.register(district="11440", language="ko", birth_date="2000-09-15")
        view = api.view_when(api.apply(second, "moving_in", answers), second.auth, rent_case, what="the second case")
        case = programs(view)["youth_monthly_rent_support"]["case"]
        assert case["office_code"] == "CENTRAL-HOUSING", "the least-loaded neighbour with room"
        routing = api.ok("routing", "GET", f"/v1/cases/{case['case_id']}", _staff(api, "CENTRAL-HOUSING"))["routing"]
        assert routing["rule"].startswith("overflow")
        assert "WEST-HOUSING" in routing["explanation"]
        considered = {c["office_code"]: c for c in routing["candidates"]}
        assert considered["WEST-HOUSING"]["has_room"] is False
        assert considered["CENTRAL-HOUSING"]["has_room"] is True
    finally:
        api.ok("routing", "PUT", "/v1/offices/WEST-HOUSING", admin, json=original)


# ---------------------------------------------------------------------------------------------- 4. department facts


def test_a_department_s_fact_changes_an_outcome_only_where_the_resident_consented(api: Api) -> None:
    consenting = api.register(district="11140", birth_date="1982-11-30")
    api.consent(consenting, department_data__tax=True)
    withholding = api.register(district="11140", birth_date="1983-01-20")
    api.consent(withholding, proactive_screening=True)
    declared = {**JOB_LOSS, "crisis_type": "main_earner_job_loss", "household_assets": 30_000_000,
                "public_pension_income": 0}  # fmt: skip
    applications = {r.id: api.apply(r, "job_loss", declared) for r in (consenting, withholding)}
    for resident in (consenting, withholding):
        view = api.view_when(applications[resident.id], resident.auth, settled_round)
        missing = {m["name"] for m in programs(view)["emergency_welfare"]["missing"]}
        assert {"earned_income", "business_income"} <= missing

    tax = api.token(Role.PARTNER, partner_id=TAX_SOURCE)
    observed = dt.datetime.now(dt.UTC).isoformat()
    results = {}
    for resident in (consenting, withholding):
        reported = [{"name": "earned_income", "value": 1_500_000, "observed_at": observed},
                    {"name": "business_income", "value": 0, "observed_at": observed}]  # fmt: skip
        report = {"resident_id": str(resident.id), "source": "hometax", "facts": reported}
        results[resident.id] = api.ok("eligibility", "POST", "/v1/facts", tax, json=report)
    assert results[consenting.id]["new_rounds"] == 1
    assert results[withholding.id]["new_rounds"] == 0

    view = api.view_when(applications[consenting.id], consenting.auth, lambda v: settled_round(v, 2))
    assert view["determination"]["trigger"] == "facts_reported"
    emergency = programs(view)["emergency_welfare"]
    assert emergency["outcome"] == "eligible"
    income = next(c for c in emergency["criteria"] if "household_income" in c["values"])
    assert income["values"]["household_income"] == 1_500_000
    assert income["sources"]["household_income"] == "derived:declared+department:tax+registry"
    wages = next(line for line in income["workings"]["household_income"] if line["item"] == "earned_income")
    assert (wages["amount"], wages["source"]) == (1_500_000, "department:tax")

    other = api.view(applications[withholding.id], withholding.auth)
    assert other["determination"]["round"] == 1, "without consent the tax office's figure is not used"
    assert programs(other)["emergency_welfare"]["outcome"] == "needs_information"


# ---------------------------------------------------------------------------------------------- 5. withdrawal


def test_withdrawing_mid_way_closes_open_cases_and_silences_further_messages(api: Api) -> None:
    resident = api.register(district="11440", birth_date="1979-07-07")
    application = api.apply(resident, "job_loss", {**JOB_LOSS, **JOB_LOSS_DETAILS})

    def open_cases(view: JSON) -> list[JSON]:
        return [p["case"] for p in view["programs"] if (p.get("case") or {}).get("status") == "open"]

    view = api.view_when(application, resident.auth, lambda v: len(open_cases(v)) >= 2, what="open cases")
    cases = open_cases(view)
    eventually(lambda: any(m["kind"] == "case.routed" for m in api.inbox(resident, application)), what="routed msg")

    api.ok("intake", "POST", f"/v1/applications/{application}/withdraw", resident.auth,
           json={"reason": "I found a new job."})  # fmt: skip
    ids = {c["case_id"] for c in cases}

    def all_closed(view: JSON) -> bool:
        ours = [p["case"] for p in view["programs"] if (p.get("case") or {}).get("case_id") in ids]
        return all(case["status"] == "closed" for case in ours)

    view = api.view_when(application, resident.auth, all_closed, what="every open case closed")
    assert view["status"] == "withdrawn"
    for case in cases:
        staff = _staff(api, case["office_code"])
        detail = api.ok("routing", "GET", f"/v1/cases/{case['case_id']}", staff)
        assert (detail["status"], detail["closed_reason"]) == ("closed", "withdrawn")
        late = api.request("routing", "POST", f"/v1/cases/{case['case_id']}/claim", staff)
        assert late.status_code == 409, "a closed case takes no more work"

    # One confirmation of the withdrawal, then nothing more: the case closures send no message.
    confirmed = eventually(
        lambda: [m for m in api.inbox(resident, application) if m["kind"] == "application.withdrawn"],
        what="the withdrawal confirmed",
    )
    assert len(confirmed) == 1
    before = api.inbox(resident, application)
    timeline = api.view(application, resident.auth)["timeline"]
    assert sum(1 for t in timeline if t["type"] == "case.closed") == len(cases)
    # A barrier: notify takes events in stream order, so once a later application's "received" message is there,
    # everything about the withdrawn one (the case closures included) has been through notify.
    later = api.apply(resident, "turning_65", {})
    eventually(lambda: api.inbox(resident, later), what="the later application's message")
    after = api.inbox(resident, application)
    assert [m["id"] for m in after] == [m["id"] for m in before], "nothing more about the withdrawn application"
    assert max(after, key=lambda m: m["created_at"])["kind"] == "application.withdrawn"


# ---------------------------------------------------------------------------------------------- 6. a partner's service


def test_a_caseworker_refers_a_resident_to_an_ngo_only_with_their_consent(
    api: Api, partner_endpoint: WebhookEndpoint
) -> None:
    # The NGO (seeded with the referral grants) publishes an offering in routing and subscribes a webhook to referrals.
    ngo = api.token(Role.PARTNER, partner_id="saebom-ngo")
    code = f"jobs-{dt.datetime.now(dt.UTC):%H%M%S%f}"
    offering = api.ok(
        "routing", "PUT", f"/v1/partners/saebom-ngo/offerings/{code}", ngo,
        json={"name": {"ko": "새봄 재취업 상담", "en": "Saebom back-to-work counselling"},
              "service_type": "employment_support", "districts": ["11440"], "languages": ["ko", "en"],
              "capacity": 3, "conditions": {"ko": "실직 가구", "en": "Households that lost their income"}},
    )  # fmt: skip
    referral_types = ["referral.created", "referral.accepted", "referral.completed"]
    subscription = api.ok(
        "notify", "POST", "/v1/subscriptions", ngo,
        json={"transport": "webhook", "event_types": referral_types, "url": partner_endpoint.url},
    )  # fmt: skip

    resident = api.register(district="11440", language="en", birth_date="1984-07-19")
    application = api.apply(resident, "job_loss", {**JOB_LOSS, **JOB_LOSS_DETAILS})
    view = api.view_when(
        application, resident.auth, lambda v: bool((programs(v).get("emergency_welfare") or {}).get("case")),
        what="a case for emergency welfare",
    )  # fmt: skip
    case = programs(view)["emergency_welfare"]["case"]
    caseworker = _staff(api, case["office_code"], name="yoon")

    # Offered, but the resident has not consented to the NGO: no referral, nothing reaches it.
    offered = api.ok("routing", "GET", f"/v1/cases/{case['case_id']}/offerings", caseworker)
    assert [(o["id"], o["resident_consented"]) for o in offered if o["code"] == code] == [(offering["id"], False)]
    refused = api.request("routing", "POST", f"/v1/cases/{case['case_id']}/referrals", caseworker,
                          json={"offering_id": offering["id"]})  # fmt: skip
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:onestop:problem:consent-required"

    # The resident consents in intake; routing hears of it; the caseworker refers them and a place is held.
    api.consent(resident, **{"partner__saebom-ngo": True})
    eventually(
        lambda: [o for o in api.ok("routing", "GET", f"/v1/cases/{case['case_id']}/offerings", caseworker)
                 if o["code"] == code and o["resident_consented"]],
        what="routing knows the consent",
    )  # fmt: skip
    referral = api.ok(
        "routing", "POST", f"/v1/cases/{case['case_id']}/referrals", caseworker,
        json={"offering_id": offering["id"]}, headers={"Idempotency-Key": f"refer-{resident.id}"},
    )  # fmt: skip
    assert api.ok("routing", "GET", f"/v1/partners/saebom-ngo/offerings/{code}", ngo)["available"] == 2

    # The NGO hears of it by its signed webhook: the pseudonymous id and its offering, nothing else of the resident.
    def delivered(kind: str) -> Delivery | None:
        return next(
            (d for d in partner_endpoint.deliveries
             if d.event["type"] == f"onestop.{kind}" and d.event["data"]["referral_id"] == referral["id"]),
            None,
        )  # fmt: skip

    created = eventually(lambda: delivered("referral.created"), what="the referral delivered to the NGO")
    assert verify_standard_webhook(subscription["secret"], created)
    assert set(created.event["data"]) == {"referral_id", "offering_code", "service_type", "resident_id", "created_at"}
    assert created.event["data"]["resident_id"] == str(resident.id)
    assert resident.email not in created.body.decode()

    # The NGO accepts and, later, reports the outcome; the place is free again; the resident sees it all.
    api.ok("routing", "POST", f"/v1/referrals/{referral['id']}/accept", ngo)
    api.ok("routing", "POST", f"/v1/referrals/{referral['id']}/complete", ngo, json={"outcome": "served"})
    assert api.ok("routing", "GET", f"/v1/partners/saebom-ngo/offerings/{code}", ngo)["available"] == 3
    eventually(lambda: delivered("referral.completed"), what="the outcome echoed to the NGO")
    view = api.view_when(
        application, resident.auth,
        lambda v: [r["status"] for r in v["referrals"]] == ["completed"], what="the referral in the one status",
    )  # fmt: skip
    shown = view["referrals"][0]
    assert (shown["offering_name"]["en"], shown["outcome"], shown["case_id"]) == (
        "Saebom back-to-work counselling", "served", case["case_id"],
    )  # fmt: skip
    assert [t["type"] for t in view["timeline"] if t["type"].startswith("referral.")] == [
        "referral.created", "referral.accepted", "referral.completed",
    ]  # fmt: skip
