"""Who may do what: every endpoint against every kind of caller.

Residents, partners and other services never see queues or cases (403, whatever the case). A caseworker or a
supervisor of another office gets 404 for a case (its existence is not revealed) and 403 for another office's queue
or capacity (offices are public). Only admins change offices.

Partners' offerings and referrals: a partner sees and changes only its own offerings and answers only the referrals
to it (another partner gets 404); staff refer only for cases of their offices and see only those cases' referrals;
only the partner answers a referral."""

from __future__ import annotations

import uuid
from typing import Any

from tests.services.routing.support import cases_of, consents, determined, feed, offering_body, program, put_offering
from tests.support.services import RunningService

CALLERS = ("nobody", "resident", "partner", "other_partner", "service", "caseworker", "other_caseworker",
           "supervisor", "other_supervisor", "admin")  # fmt: skip


def headers(service: RunningService, caller: str, resident_id: uuid.UUID) -> dict[str, str]:
    if caller == "nobody":
        return {}
    claims: dict[str, dict[str, Any]] = {
        "resident": {"role": "resident", "resident_id": resident_id},  # the very resident of the case
        "partner": {"role": "partner", "partner_id": "bank"},
        "other_partner": {"role": "partner", "partner_id": "other-bank"},
        "service": {"role": "service", "service": "notify"},
        "caseworker": {"role": "caseworker", "subject": "caseworker:alice", "offices": ["JONGNO-CSC"]},
        "other_caseworker": {"role": "caseworker", "subject": "caseworker:dan", "offices": ["MAPO-CSC"]},
        "supervisor": {"role": "supervisor", "offices": ["JONGNO-CSC"]},
        "other_supervisor": {"role": "supervisor", "offices": ["MAPO-CSC"]},
        "admin": {"role": "admin"},
    }
    values = dict(claims[caller])
    return service.auth(values.pop("role"), **values)


def expect(default: int, **overrides: int) -> dict[str, int]:
    expected = {caller: default for caller in CALLERS} | {"nobody": 401}
    expected.update(overrides)
    return expected


OUTSIDERS = {"resident": 403, "partner": 403, "other_partner": 403, "service": 403}
# Partners' own objects: the partner itself and admins; another partner does not find them.
PARTNER_OWN = {"partner": 200, "other_partner": 404, "admin": 200}
STAFF_OK = {"caseworker": 200, "supervisor": 200, "admin": 200}


async def test_the_authorization_matrix(routing: RunningService) -> None:
    resident_id = uuid.uuid4()
    app = uuid.uuid4()
    await feed(
        routing,
        determined(app, [program("to_read"), program("to_claim"), program("to_assign")], resident_id=resident_id),
    )
    cases = {code: str(c.id) for code, c in (await cases_of(routing, app)).items()}
    # The resident consented to the partner; the partner offers a service in the resident's district.
    await feed(routing, consents(resident_id, 1, bank=True))
    offering = await put_offering(routing, "bank", "advice", offering_body(service_type="financial_counselling"))
    created = await routing.client.post(
        f"/v1/cases/{cases['to_read']}/referrals",
        json={"offering_id": offering["id"]},
        headers=routing.auth("caseworker", offices=["JONGNO-CSC"]),
    )
    assert created.status_code == 201, created.text
    referral = created.json()["id"]
    office = (await routing.client.get("/v1/offices/JONGNO-CSC", headers=routing.auth("admin"))).json()
    office_body = {k: office[k] for k in ("name", "kind", "departments", "districts", "languages", "capacity",
                                          "neighbours", "supervisors", "fallback")}  # fmt: skip
    decide = {"decision": "denied", "reason_code": "duplicate_benefit", "note": "n"}

    matrix: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        ("GET", "/v1/offices", None, expect(200)),
        ("GET", "/v1/offices/JONGNO-CSC", None, expect(200)),
        ("PUT", "/v1/offices/JONGNO-CSC", office_body, expect(403, admin=200)),
        ("GET", "/v1/open-data", None, expect(200)),
        ("GET", "/v1/open-data/cases", None, expect(200)),
        ("GET", "/v1/open-data/referrals", None, expect(200)),
        ("GET", "/v1/open-data/feedback", None, expect(200)),
        ("GET", "/v1/reason-codes", None, expect(200, **OUTSIDERS)),
        ("GET", "/v1/queues/JONGNO-CSC", None, expect(403, **STAFF_OK)),
        ("GET", "/v1/queues/MAPO-CSC", None, expect(403, other_caseworker=200, other_supervisor=200, admin=200)),
        ("GET", f"/v1/cases/{cases['to_read']}", None, expect(404, **OUTSIDERS, **STAFF_OK)),
        (
            "POST",
            f"/v1/cases/{cases['to_read']}/notes",
            {"text": "n"},
            expect(404, **OUTSIDERS, caseworker=201, supervisor=201, admin=201),
        ),
        # Actions: 403 and 404 never depend on the case's state; a caseworker may not decide an unclaimed case
        # (409); callers marked 0 are allowed but skipped, as they would change what later rows rely on.
        (
            "POST",
            f"/v1/cases/{cases['to_read']}/decide",
            decide,
            expect(404, **OUTSIDERS, caseworker=409, supervisor=0, admin=0),
        ),
        (
            "POST",
            f"/v1/cases/{cases['to_assign']}/assign",
            {"assignee": "caseworker:bo"},
            expect(404, **OUTSIDERS, caseworker=403, supervisor=200, admin=200),
        ),
        (
            "POST",
            f"/v1/cases/{cases['to_claim']}/claim",
            None,
            expect(404, **OUTSIDERS, caseworker=200, supervisor=0, admin=0),
        ),
        ("GET", "/v1/capacity", None, expect(403, supervisor=200, other_supervisor=200, admin=200)),
        # Offerings: the partner's own.
        ("GET", "/v1/partners/bank/offerings", None, expect(403, **PARTNER_OWN)),
        ("GET", "/v1/partners/bank/offerings/advice", None, expect(403, **PARTNER_OWN)),
        (
            "PUT",
            "/v1/partners/bank/offerings/advice",
            offering_body(service_type="financial_counselling", capacity=9),
            expect(403, **PARTNER_OWN),
        ),
        # Referring: staff of the case's office. Referred once (above), a second referral to the offering is a 409.
        ("GET", f"/v1/cases/{cases['to_read']}/offerings", None, expect(404, **OUTSIDERS, **STAFF_OK)),
        ("GET", f"/v1/cases/{cases['to_read']}/referrals", None, expect(404, **OUTSIDERS, **STAFF_OK)),
        (
            "POST",
            f"/v1/cases/{cases['to_read']}/referrals",
            {"offering_id": offering["id"]},
            expect(404, **OUTSIDERS, caseworker=409, supervisor=409, admin=409),
        ),
        # Referrals: the partner referred to, and staff of the case's office.
        ("GET", "/v1/referrals", None, expect(403, partner=200, other_partner=200, admin=200)),
        (
            "GET",
            f"/v1/referrals/{referral}",
            None,
            expect(404, resident=403, service=403, partner=200, **STAFF_OK),
        ),
        # Only the partner referred to answers; its answers follow the referral's state (accepted: not declinable).
        ("POST", f"/v1/referrals/{referral}/accept", None, expect(403, partner=200, other_partner=404)),
        ("POST", f"/v1/referrals/{referral}/decline", {"reason": "other"}, expect(403, partner=409, other_partner=404)),
        (
            "POST",
            f"/v1/referrals/{referral}/complete",
            {"outcome": "served"},
            expect(403, partner=200, other_partner=404),
        ),
        ("GET", "/v1/capacity?office=JONGNO-CSC", None, expect(403, supervisor=200, admin=200)),
        # A resident's whole part of their export: theirs (and intake's, gathering it: tests/services/routing/
        # test_rights.py); nobody else finds the resident.
        ("GET", f"/v1/residents/{resident_id}/data", None, expect(404, resident=200)),
        ("GET", f"/v1/residents/{uuid.uuid4()}/data", None, expect(404)),
    ]
    failures = []
    for method, path, body, expected in matrix:
        for caller, status in expected.items():
            if status == 0:
                continue  # allowed, but it would change the state the next rows rely on
            response = await routing.client.request(
                method, path, json=body, headers=headers(routing, caller, resident_id)
            )
            if response.status_code != status:
                failures.append(f"{method} {path} as {caller}: {response.status_code}, expected {status}")
            elif status >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert failures == []

    # What outsiders do see of an office leaves out the staff (supervisors) and the load.
    public = (await routing.client.get("/v1/offices/JONGNO-CSC", headers=headers(routing, "partner", app))).json()
    assert (public["supervisors"], public["load"]) == (None, None)
    staff = (await routing.client.get("/v1/offices/JONGNO-CSC", headers=headers(routing, "caseworker", app))).json()
    assert staff["supervisors"] == ["staff:jongno-csc-lead"]
    assert staff["load"]["open_cases"] == 3  # open or assigned, all three count


async def test_the_outreach_rows_of_the_matrix(routing: RunningService) -> None:
    """An outreach case is a case of its office like any other (404 elsewhere, 403 for outsiders); only its office's
    staff record a visit, the caseworker once they claimed it; take-up is open data."""
    import datetime as dt

    from tests.services.routing.support import context
    from tests.services.routing.test_outreach import OFFERED, offered, outreach_cases, sweep

    alone = offered(district="11110", vulnerability=("elderly_alone",))
    await feed(routing, alone)
    ctx = context(routing)
    due = ctx.calendar.add_working_days(OFFERED, ctx.settings.outreach_after_working_days)
    assert await sweep(routing, ctx.calendar.add_working_days(due, 1)) == 1
    case = str((await outreach_cases(routing))[alone.opportunity_id].id)
    visit = {"outcome": "will_apply", "note": "She will apply online with her daughter."}
    decide = {"decision": "approved", "reason_code": "criteria_met", "note": "n"}
    matrix: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        ("GET", "/v1/outreach-outcomes", None, expect(200, **OUTSIDERS)),
        ("GET", "/v1/open-data/take_up", None, expect(200)),
        ("GET", f"/v1/cases/{case}", None, expect(404, **OUTSIDERS, **STAFF_OK)),
        ("POST", f"/v1/cases/{case}/decide", decide,
         expect(404, **OUTSIDERS, caseworker=409, supervisor=409, admin=409)),
        ("POST", f"/v1/cases/{case}/visit", visit, expect(404, **OUTSIDERS, caseworker=409, supervisor=0, admin=0)),
    ]  # fmt: skip
    failures = []
    resident_id = alone.resident_id
    for method, path, body, expected in matrix:
        for caller, status in expected.items():
            if status == 0:
                continue
            response = await routing.client.request(
                method, path, json=body, headers=headers(routing, caller, resident_id)
            )
            if response.status_code != status:
                failures.append(f"{method} {path} as {caller}: {response.status_code}, expected {status}")
            elif status >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert failures == []
    recorded = await routing.client.post(f"/v1/cases/{case}/visit", json=visit,
                                         headers=headers(routing, "supervisor", resident_id))  # fmt: skip
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["status"] == "closed"
    assert dt.date.fromisoformat(recorded.json()["history"][-1]["details"]["visited_on"]) == ctx.clock.today()


HOUSEHOLD_CALLERS: dict[str, dict[str, Any]] = {
    "resident": {"role": "resident"},  # a member of the household
    "partner": {"role": "partner", "partner_id": "bank"},
    "service": {"role": "service", "service": "notify"},
    "department_caseworker": {"role": "caseworker", "subject": "caseworker:alice", "offices": ["JONGNO-CSC"]},
    "department_supervisor": {"role": "supervisor", "subject": "staff:jongno-csc-lead", "offices": ["JONGNO-CSC"]},
    "lead": {"role": "caseworker", "subject": "caseworker:mina", "offices": ["JONGNO-HOPE"]},
    "office_caseworker": {"role": "caseworker", "subject": "caseworker:joon", "offices": ["JONGNO-HOPE"]},
    "supervisor": {"role": "supervisor", "subject": "staff:jongno-hope-lead", "offices": ["JONGNO-HOPE"]},
    "other_district": {"role": "supervisor", "subject": "staff:mapo-hope-lead", "offices": ["MAPO-HOPE"]},
    "admin": {"role": "admin"},
}


async def test_the_household_rows_of_the_matrix(routing: RunningService) -> None:
    """A household case is its integrated case-management office's: the lead and the office's supervisors act on it,
    another caseworker of the office reads it (without the members' department cases) but does not act, a
    department's staff and another district do not find it (404: they see on their case only that it exists and who
    leads it), residents, partners and services never see it (403)."""
    resident_id, app = uuid.uuid4(), uuid.uuid4()
    await feed(routing, determined(app, [program("w"), program("h", department="health")], resident_id=resident_id,
                                   vulnerability=("crisis",)))  # fmt: skip
    lead = HOUSEHOLD_CALLERS["lead"]
    claimed = await routing.client.post("/v1/household-cases", headers={})
    assert claimed.status_code == 401
    listing = await routing.client.get("/v1/household-cases", headers=routing.auth("admin"))
    [household] = listing.json()
    hid = household["id"]
    first = await routing.client.post(
        f"/v1/household-cases/{hid}/claim", headers=routing.auth("caseworker", subject=lead["subject"],
                                                                  offices=lead["offices"]))  # fmt: skip
    assert first.status_code == 200, first.text
    outsiders = {"resident": 403, "partner": 403, "service": 403}
    plan = {"needs": [{"domain": "income", "assessment": "a"}]}
    follow_up = {"purpose": "visit"}
    conference = {"held_on": "2025-10-02", "participants": [{"name": "a", "role": "lead"}, {"name": "b", "role": "r"}],
                  "decisions": ["d"]}  # fmt: skip

    def rows(default: int, **overrides: int) -> dict[str, int]:
        return {caller: default for caller in HOUSEHOLD_CALLERS} | {"nobody": 401} | overrides

    actors = {"lead": 200, "supervisor": 200, "admin": 200, "office_caseworker": 403}
    matrix: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        ("GET", "/v1/household-cases", None, rows(200, **outsiders)),
        ("GET", f"/v1/household-cases/{hid}", None, rows(404, **outsiders, lead=200, office_caseworker=200,
                                                          supervisor=200, admin=200)),
        ("PUT", f"/v1/household-cases/{hid}/plan", plan, rows(404, **outsiders, **actors)),
        ("POST", f"/v1/household-cases/{hid}/follow-ups", follow_up,
         rows(404, **outsiders, **actors | {"lead": 201, "supervisor": 201, "admin": 201})),
        ("POST", f"/v1/household-cases/{hid}/conferences", conference,
         rows(404, **outsiders, **actors | {"lead": 201, "supervisor": 201, "admin": 201})),
        ("POST", f"/v1/household-cases/{hid}/assign", {"lead": lead["subject"]},
         rows(404, **outsiders, lead=403, office_caseworker=403, supervisor=200, admin=200)),
        ("POST", f"/v1/household-cases/{hid}/claim", None, rows(404, **outsiders, lead=200, office_caseworker=409,
                                                                 supervisor=409, admin=409)),
        ("POST", f"/v1/household-cases/{hid}/close", {"outcome": "declined", "note": "n"},
         rows(404, **outsiders, lead=0, office_caseworker=403, supervisor=0, admin=0)),
    ]  # fmt: skip
    failures = []
    for method, path, body, expected in matrix:
        for caller, status in expected.items():
            if status == 0:
                continue
            claims = dict(HOUSEHOLD_CALLERS.get(caller, {}))
            role = claims.pop("role", None)
            if role == "resident":
                claims["resident_id"] = resident_id
            auth = routing.auth(role, **claims) if role else {}
            response = await routing.client.request(method, path, json=body, headers=auth)
            if response.status_code != status:
                failures.append(f"{method} {path} as {caller}: {response.status_code}, expected {status}")
            elif status >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert failures == []
    # The department's caseworker sees, on their own case, that the household case exists and who leads it.
    queue = await routing.client.get(
        "/v1/queues/JONGNO-CSC", headers=routing.auth("caseworker", offices=["JONGNO-CSC"])
    )
    case = await routing.client.get(f"/v1/cases/{queue.json()['items'][0]['id']}",
                                     headers=routing.auth("caseworker", offices=["JONGNO-CSC"]))  # fmt: skip
    assert case.json()["household"]["lead"] == lead["subject"]
