"""One household, one plan, across the whole platform: two people registered in one household (세대) apply to
different departments — one of them after losing a job — and integrated case management (통합사례관리) takes the
household on by itself; the lead claims it and sets a plan; each member's one status at intake shows the household
case, and each member is told in their own language; then closure."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.auth import Role
from tests.e2e.support import JSON, Api, Resident, eventually, settled_round
from tests.e2e.test_journeys import JOB_LOSS, JOB_LOSS_DETAILS

pytestmark = pytest.mark.e2e

CLERK = {"offices": ["MAPO-CSC"], "subject": "caseworker:counter-mapo"}


def register_at_counter(api: Api, household_key: str, *, name: str, language: str, birth_date: str) -> Resident:
    """Staff register the resident at a counter with the household the registry lists them in."""
    email = f"{uuid.uuid4().hex[:10]}@residents.example.kr"
    body = {"name": name, "birth_date": birth_date, "district_code": "11440", "address": "1 Worldcup-ro, Seoul",
            "registry_household": household_key, "email": email, "preferred_language": language,
            "preferred_channels": ["inbox", "email"]}  # fmt: skip
    created = api.ok("intake", "POST", "/v1/residents", api.token(Role.CASEWORKER, **CLERK), json=body)
    resident_id = uuid.UUID(created["id"])
    return Resident(resident_id, api.token(Role.RESIDENT, resident_id=resident_id), email, language)


def household_of(api: Api, resident: Resident, application: str, ready: str = "open") -> JSON:
    def shown(view: JSON) -> bool:
        return bool(view.get("household_case")) and view["household_case"]["status"] == ready

    view = api.view_when(application, resident.auth, shown, what=f"the household case {ready} in the status")
    household: JSON = view["household_case"]
    return household


def told(api: Api, resident: Resident, kind: str) -> JSON:
    [message] = eventually(lambda: [m for m in api.inbox(resident) if m["kind"] == kind] or None, what=kind)
    return message


def test_a_household_is_taken_on_whole_planned_for_and_closed(api: Api) -> None:
    key = f"1144012-{uuid.uuid4().hex[:6]}"
    mother = register_at_counter(api, key, name="Park Eunji", language="en", birth_date="1990-05-14")
    father = register_at_counter(api, key, name="Lee Minho", language="ko", birth_date="1987-09-21")

    # The mother gives birth: cases in several departments, but nothing calls for integrated case management yet.
    birth = {"child_birth_date": (dt.date.today() - dt.timedelta(days=9)).isoformat(), "birth_order": 2,
             "newborns": 1, "korean_national": True, "birth_registered": True, "earned_income": 0,
             "business_income": 0, "public_pension_income": 0, "employment_status": "unemployed"}  # fmt: skip
    births = api.apply(mother, "birth", birth)

    def open_case(view: JSON) -> bool:
        return settled_round(view) and any((p.get("case") or {}).get("status") == "open" for p in view["programs"])

    view = api.view_when(births, mother.auth, open_case, what="an open case of the mother's")
    assert view["household_case"] is None

    # The father loses his job (a crisis): the household — both of them — is taken on by itself.
    job_loss = api.apply(father, "job_loss", {**JOB_LOSS, **JOB_LOSS_DETAILS})
    household = household_of(api, father, job_loss)
    assert household_of(api, mother, births)["id"] == household["id"]
    assert household["office_code"] == "MAPO-HOPE"
    assert household["office_name"]["en"] == "Mapo-gu Integrated Case Management Team"
    hid = household["id"]

    # Each member is told, in their own language.
    assert "Mapo-gu Integrated Case Management Team" in told(api, mother, "household_case.opened")["body"]
    opened = told(api, father, "household_case.opened")
    assert (opened["language"], "마포구 희망복지지원단" in opened["body"]) == ("ko", True)

    # A caseworker of the team claims it and becomes its lead: both members are in it, the rule's reasons shown.
    lead = api.token(Role.CASEWORKER, offices=["MAPO-HOPE"], subject="caseworker:hope-mapo-kim")
    claimed = api.ok("routing", "POST", f"/v1/household-cases/{hid}/claim", lead)
    assert claimed["lead"] == "caseworker:hope-mapo-kim"
    assert {m["resident_id"] for m in claimed["members"]} == {str(mother.id), str(father.id)}
    assert claimed["trigger"] == "automatic"
    assert claimed["opened_reason"]["life_events"] == ["job_loss"]
    father_case = next(p["case"] for p in api.view(job_loss, father.auth)["programs"] if p.get("case"))

    # The lead sets the plan: the household's needs, a goal, the services to reach it.
    soon = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    plan = {
        "needs": [{"domain": "income", "assessment": "The main earner lost his job", "member_id": str(father.id)},
                  {"domain": "care", "assessment": "A newborn and a second child at home"}],
        "goals": [{"key": "income", "domain": "income", "text": "A stable income", "owner": "caseworker:hope-mapo-kim",
                   "target_date": soon}],
        "services": [{"goal": "income", "kind": "program", "description": "Emergency support while he looks for work",
                      "owner": "caseworker:hope-mapo-kim", "due_on": soon, "case_id": father_case["case_id"]}],
    }  # fmt: skip
    planned = api.ok("routing", "PUT", f"/v1/household-cases/{hid}/plan", lead, json=plan)
    assert planned["plan_version"] == 1
    for member, application in ((mother, births), (father, job_loss)):
        api.view_when(application, member.auth, lambda v: (v["household_case"] or {}).get("plan_version") == 1,
                      what="the plan's version in the status")  # fmt: skip
    assert "income, care" in told(api, mother, "household_case.plan_changed")["body"]
    assert "소득, 돌봄" in told(api, father, "household_case.plan_changed")["body"]

    # Closure: both statuses show it with the check to come; both are told.
    closed = api.ok("routing", "POST", f"/v1/household-cases/{hid}/close", lead,
                    json={"outcome": "goals_met", "note": "Back in work; childcare arranged"})  # fmt: skip
    for member, application in ((mother, births), (father, job_loss)):
        shown = household_of(api, member, application, "closed")
        assert (shown["outcome"], shown["follow_up_check_on"]) == ("goals_met", closed["follow_up_check_on"])
    assert "the goals we set together were met" in told(api, mother, "household_case.closed")["body"]
    assert told(api, father, "household_case.closed")["language"] == "ko"
