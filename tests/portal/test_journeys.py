"""The portal in a real browser against the real platform: a resident files a birth application and reads the
outcomes; a caseworker claims and decides; the resident finds the decision in the inbox; another resident gets "not
found" for that page; a form with bad input shows the field's error and writes nothing; a lost race is explained; a
resident answers screening's near-miss questions on the page, then declines one offer it found (a reason asked for)
and accepts another with one confirmation; the lead of a household case (통합사례관리) reads its page, and a
department's case page says who leads it; every page passes axe-core (WCAG 2.1 AA) at 375 px; a journey by keyboard
alone; the English switch.

The tests run in order and share the platform (and the birth application the first one files)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from playwright.sync_api import Locator, expect

from shared.auth import Role
from tests.e2e.support import Api
from tests.portal.support import (
    BIRTH_RESIDENT,
    BIRTH_RESIDENT_ID,
    DESKTOP,
    OFFERED_RESIDENT,
    OFFERED_RESIDENT_ID,
    OTHER_RESIDENT,
    Portal,
    eventually,
)

pytestmark = pytest.mark.e2e

STATE: dict[str, Any] = {}


def resident_auth(api: Api) -> dict[str, str]:
    return api.token(Role.RESIDENT, resident_id=BIRTH_RESIDENT_ID)


def applications(api: Api) -> list[dict[str, Any]]:
    page = api.ok("intake", "GET", "/v1/applications", resident_auth(api), params={"resident_id": BIRTH_RESIDENT_ID})
    return list(page["items"])


def test_a_resident_files_a_birth_application_and_reads_the_outcomes(portal: Portal, api: Api) -> None:
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, BIRTH_RESIDENT)
        portal.check(page)
        portal.open(page, "/apply")
        portal.check(page)
        portal.open(page, "/apply/birth")
        portal.check(page)
        # What the government holds is not asked, and the page says why.
        not_asked = page.locator("section.not-asked")
        assert "주민등록 정보로 확인합니다." in not_asked.inner_text()
        assert page.locator("#fact-district_code").count() == 0
        application_id = portal.file_birth(page, double_click=True)
        # The double click filed one application (one Idempotency-Key for the review's submission).
        assert [a["id"] for a in applications(api)] == [application_id]
        STATE["application"] = application_id

        def outcomes() -> bool:
            page.reload()
            # Every program's outcome, and the cases routed to offices.
            return page.locator("li.program .badge.outcome-eligible").count() > 0 and (
                page.locator("li.program dl.case-facts").count() > 0
            )

        eventually(outcomes, what="the outcomes and cases on the status page")
        portal.check(page)
        text = page.locator("main").inner_text()
        # Each outcome explained in plain words: an automatic grant (decided at once), a question still open.
        assert "자격이 되어 자동으로 지급이 결정되었습니다." in text or "담당 부서가 지급을 결정했습니다." in text
        assert "판단에 필요한 정보가 부족합니다." in text
        assert "담당 사무소" in text
        assert "진행 기록" in text


def test_a_form_with_bad_input_shows_the_fields_error_and_writes_nothing(portal: Portal, api: Api) -> None:
    before = len(applications(api))
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, BIRTH_RESIDENT)
        page.goto(f"{portal.url}/apply/birth")
        page.fill("#fact-newborns", "twins")
        response = page.expect_response(lambda r: r.url.endswith("/apply/birth/review"))
        with response as info:
            page.locator("form[action='/apply/birth/review'] button[type=submit]").click()
        assert info.value.status == 422
        field = page.locator("#fact-newborns")
        assert field.get_attribute("aria-invalid") == "true"
        assert field.input_value() == "twins"  # what was typed stays, to be corrected
        error = page.locator("#fact-newborns-error")
        assert "숫자로 적어 주세요." in error.inner_text()
        assert "fact-newborns-error" in (field.get_attribute("aria-describedby") or "")
        assert page.locator("#error-summary a[href='#fact-newborns']").count() == 1
        portal.check(page)
    assert len(applications(api)) == before


def _open_cases(api: Api) -> list[dict[str, Any]]:
    """The application's cases waiting for a caseworker, each with its program's name."""
    view = api.view(STATE["application"], resident_auth(api))
    return [
        {**p["case"], "program_name": p["program_name"]}
        for p in view["programs"]
        if p["case"] and p["case"]["status"] == "open"
    ]


def test_a_caseworker_claims_and_decides(portal: Portal, api: Api) -> None:
    cases = eventually(lambda: _open_cases(api), what="a case for a caseworker")
    case = cases[0]
    office = case["office_code"]
    STATE["decided_program"] = case["program_name"]["ko"]
    with portal.context(DESKTOP) as context:
        page = context.new_page()
        portal.sign_in(page, f"caseworker-{office.lower()}")
        assert page.url.endswith(f"/work/queue/{office}")
        portal.check(page)
        # The order chosen is routing's own (pages included), not a reordering of one page.
        staff = api.token(Role.CASEWORKER, offices=[office])
        for sort in ("due", "newest", "urgency"):
            page.select_option("#sort", sort)
            page.locator("form.filters button[type=submit]").click()
            page.wait_for_url(re.compile(f"sort={sort}"))

            def in_routings_order(sort: str = sort) -> bool:
                shown = page.locator("#queue-results tbody a[href^='/work/cases/']").evaluate_all(
                    "links => links.map(a => a.getAttribute('href'))"
                )
                found = api.ok("routing", "GET", f"/v1/queues/{office}", staff, params={"sort": sort, "limit": 20})
                if shown == [f"/work/cases/{c['id']}" for c in found["items"]]:
                    return True
                page.reload()  # a case routed meanwhile: compare again
                return False

            eventually(in_routings_order, what=f"the queue sorted by {sort} as routing sorts it")
        portal.check(page)
        # A cursor routing refuses (made for another order, or none at all) starts the chosen order from its first page.
        page.goto(f"{portal.url}/work/queue/{office}?sort=newest&cursor=not-a-cursor")
        assert "sort=newest" in page.url
        assert "cursor=" not in page.url
        assert page.locator("#sort").input_value() == "newest"
        page.goto(f"{portal.url}/work/queue/{office}")
        page.locator(f"a[href='/work/cases/{case['case_id']}']").click()
        page.wait_for_url(f"**/work/cases/{case['case_id']}")
        portal.check(page)
        assert page.locator("#criteria-caption").count() == 1  # each criterion with its values and sources
        page.locator("form[action$='/claim'] button").click()
        page.wait_for_url("**?done=claim")
        page.locator("summary", has_text="결정하기").click()
        page.check("input[name=decision][value=approved]")
        page.select_option("#reason_code", "criteria_met")
        page.fill("#decide-note", "서류 확인 완료")
        page.locator("form[action$='/decide'] button[type=submit]").click()
        page.wait_for_url("**?done=decide")
        portal.check(page)
        assert "결정됨" in page.locator("dl.facts-row").inner_text()
    staff = api.token(Role.CASEWORKER, offices=[office])
    decided = api.ok("routing", "GET", f"/v1/cases/{case['case_id']}", staff)
    assert decided["status"] == "decided"
    assert decided["decision"]["reason_code"] == "criteria_met"


def test_the_resident_finds_the_decision_in_the_inbox(portal: Portal) -> None:
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, BIRTH_RESIDENT)

        def decided_messages() -> Locator:
            return page.locator("li.message", has_text=STATE["decided_program"]).filter(
                has=page.locator("h2", has_text="신청하신 지원이 결정되었습니다")
            )

        def decision_message() -> bool:
            # Other programs' decisions may arrive first: wait for this program's message itself.
            page.goto(f"{portal.url}/inbox")
            return decided_messages().count() > 0

        eventually(decision_message, what="the decision in the inbox")
        portal.check(page)
        decided = decided_messages()
        assert decided.count() == 1
        # The message's link opens the application in the portal.
        assert f"{portal.url}/applications/{STATE['application']}" in decided.inner_text()
        decided.locator("form[action$='/read'] button").click()
        page.wait_for_load_state()
        for path in ("/opportunities", "/consents", "/access-log", "/my"):
            page.goto(f"{portal.url}{path}")
            portal.check(page)
        # The caseworker's reads of the resident's case are in their access log? (routing audits its own reads;
        # intake's log shows staff reads of the application: the page lists what intake recorded.)
        assert page.locator("h1").inner_text() == "나의 신청"


def test_another_resident_gets_not_found_for_that_page(portal: Portal) -> None:
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, OTHER_RESIDENT)
        response = page.goto(f"{portal.url}/applications/{STATE['application']}")
        assert response is not None
        assert response.status == 404
        assert page.locator("h1").inner_text() == "찾을 수 없습니다"
        assert STATE["application"][:8] not in page.locator("main").inner_text()
        portal.check(page)


def test_a_lost_race_is_explained_not_an_error_page(portal: Portal, api: Api) -> None:
    case = eventually(lambda: next(iter(_open_cases(api)), None), what="another open case")
    office = case["office_code"]
    with portal.context(DESKTOP) as context:
        page = context.new_page()
        portal.sign_in(page, f"caseworker-{office.lower()}")
        page.goto(f"{portal.url}/work/cases/{case['case_id']}")
        # Another caseworker of the office claims it first, while this page is open.
        rival = api.token(Role.CASEWORKER, offices=[office], subject="staff:rival", name="Rival")
        api.ok("routing", "POST", f"/v1/cases/{case['case_id']}/claim", rival)
        with page.expect_response(lambda r: r.url.endswith("/claim")) as info:
            page.locator("form[action$='/claim'] button").click()
        assert info.value.status == 409
        alert = page.locator("#conflict")
        assert "staff:rival 님이 이 사건을 먼저 맡았습니다." in alert.inner_text()
        assert "요청하신 처리는 하지 않았습니다." in alert.inner_text()
        portal.check(page)


def test_supervisor_and_administrator_pages(portal: Portal) -> None:
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, "supervisor-mapo")
        assert page.url.endswith("/supervise")
        chart = page.locator("svg.capacity-chart")
        assert chart.get_attribute("role") == "img"
        assert chart.locator("rect").count() > 0
        # Programs by their names in the page's language, never their codes (the journeys above made cases).
        legend = page.locator("ul.legend li")
        assert legend.count() > 1, "the earlier journeys' cases are in the chart"
        assert not re.search(r"\b[a-z]+(?:_[a-z0-9]+)+\b", page.locator("main").inner_text())
        portal.check(page)
        for path in ("/supervise/assign", "/supervise/breaches"):
            page.goto(f"{portal.url}{path}")
            portal.check(page)
        portal.sign_out(page)
        portal.sign_in(page, "admin")
        assert page.url.endswith("/admin")
        portal.check(page)
        page.goto(f"{portal.url}/admin/offices")
        portal.check(page)
        page.fill("#MAPO-CSC-active_case_ceiling", "lots")
        page.locator("#office-MAPO-CSC form button").click()
        assert page.locator("#MAPO-CSC-active_case_ceiling").get_attribute("aria-invalid") == "true"
        portal.check(page)


def test_a_journey_by_keyboard_alone(portal: Portal) -> None:
    with portal.context() as context:
        page = context.new_page()
        page.goto(f"{portal.url}/")

        def tab_to(selector: str, limit: int = 80) -> None:
            for _ in range(limit):
                page.keyboard.press("Tab")
                if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
                    return
            raise AssertionError(f"Tab never reached {selector} on {page.url}")

        tab_to("a[href='/signin']")
        page.keyboard.press("Enter")
        page.wait_for_url("**/idp/authorize**")
        tab_to(f"button[value='{OTHER_RESIDENT}']")
        page.keyboard.press("Enter")
        page.wait_for_url("**/my")
        tab_to("a[href='/apply']")
        page.keyboard.press("Enter")
        page.wait_for_url("**/apply")
        tab_to("a[href='/apply/moving_in']")
        page.keyboard.press("Enter")
        page.wait_for_url("**/apply/moving_in")
        tab_to("form[action='/apply/moving_in/review'] button[type=submit]")
        page.keyboard.press("Enter")
        page.wait_for_url("**/apply/moving_in/review")
        tab_to("form[action='/apply/moving_in/submit'] button")
        page.keyboard.press("Enter")
        page.wait_for_url("**/applications/*")
        assert page.locator("h1").inner_text().startswith("전입")


def test_korean_by_default_english_on_a_switch(portal: Portal) -> None:
    with portal.context() as context:
        page = context.new_page()
        page.goto(f"{portal.url}/")
        assert page.locator("html").get_attribute("lang") == "ko"
        page.locator("a[hreflang=en]").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("h1").inner_text() == "Apply once for a life event"
        portal.sign_in(page, BIRTH_RESIDENT)
        page.goto(f"{portal.url}/applications/{STATE['application']}")
        assert page.locator("h1").inner_text() == "Your application: Birth of a child"
        portal.check(page)


def test_a_resident_declines_one_offer_with_a_reason_and_accepts_another_with_one_confirmation(
    portal: Portal, api: Api
) -> None:
    auth = api.token(Role.RESIDENT, resident_id=OFFERED_RESIDENT_ID)
    path = f"/v1/residents/{OFFERED_RESIDENT_ID}/opportunities"

    def standing() -> list[dict[str, Any]]:
        return list(api.ok("intake", "GET", path, auth, params={"status": "offered"}))

    # Screening asked them one question for each of two programs (a near miss); their answers, given on the
    # opportunities page, screen them again and the two programs are offered.
    answers = {"korean_national": "yes", "civil_servant": "no"}

    def asked() -> list[dict[str, Any]] | None:
        found = api.ok("intake", "GET", f"/v1/residents/{OFFERED_RESIDENT_ID}/questions", auth,
                       params={"status": "open"})  # fmt: skip
        mine = [q for q in found if q["fact"]["name"] in answers]
        return mine if {q["fact"]["name"] for q in mine} == set(answers) else None

    questions = eventually(asked, timeout=90, what="the near misses' questions")
    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, OFFERED_RESIDENT)
        page.goto(f"{portal.url}/opportunities")
        portal.check(page)
        first = page.locator(f"#question-{questions[0]['id']}")
        assert questions[0]["why"]["ko"] in first.inner_text()
        # No answer chosen: the question says so, and nothing is written.
        with page.expect_response(lambda r: r.url.endswith(f"/questions/{questions[0]['id']}/answer")) as info:
            first.locator("button[type=submit]").click()
        assert info.value.status == 422
        assert page.locator(f"#question-{questions[0]['id']} .has-error").count() == 1
        portal.check(page)
        assert len(asked() or []) == 2
        for question in questions:
            item = page.locator(f"#question-{question['id']}")
            item.locator(f"input[value={answers[question['fact']['name']]}]").check()
            item.locator("button[type=submit]").click()
            item.wait_for(state="detached")
            page.wait_for_load_state()
            expect(page.locator("p.notice.success")).to_have_count(1)
        assert asked() is None, "both questions answered"
        offers = eventually(lambda: o if len(o := standing()) >= 2 else None, timeout=90, what="offers screening found")
        declining, accepting = offers[0], offers[1]
        page.goto(f"{portal.url}/opportunities")
        assert page.locator("li.offer").count() >= 2
        item = page.locator(f"#offer-{declining['id']}")
        assert declining["program_name"]["ko"] in item.inner_text()
        portal.check(page)

        # Declining asks why: without a reason the field says so, and nothing is written.
        with page.expect_response(lambda r: r.url.endswith(f"/opportunities/{declining['id']}/decline")) as info:
            item.locator("form.decline button[type=submit]").click()
        assert info.value.status == 422
        assert page.locator(f"#reason-{declining['id']}").get_attribute("aria-invalid") == "true"
        portal.check(page)
        assert declining["id"] in {o["id"] for o in standing()}
        page.select_option(f"#reason-{declining['id']}", "already_receiving")
        page.locator(f"#offer-{declining['id']} form.decline button[type=submit]").click()
        page.wait_for_url("**/opportunities?declined=1")
        assert page.locator(f"#offer-{declining['id']}").count() == 0
        declined = api.ok("intake", "GET", path, auth, params={"status": "declined"})
        assert [(o["id"], o["decline_reason"]) for o in declined] == [(declining["id"], "already_receiving")]

        # One confirmation files the application for the offered program; its page opens.
        page.locator(f"#offer-{accepting['id']} form[action$='/accept'] button").click()
        page.wait_for_url("**/applications/*")
        application_id = page.url.rsplit("/", 1)[1].split("?")[0]
        (accepted,) = api.ok("intake", "GET", path, auth, params={"status": "accepted"})
        assert (accepted["id"], accepted["application_id"]) == (accepting["id"], application_id)
        portal.check(page)


def test_the_lead_works_a_household_case_and_departments_see_who_leads_it(portal: Portal, api: Api) -> None:
    """Integrated case management (통합사례관리): the birth resident's household taken on by the district's team; its
    lead's page shows the members with their department cases (the resident agreed), the plan, follow-ups, and the
    history; a department's case page says who leads it, and links to it for whoever may open it."""
    lead = api.token(Role.CASEWORKER, offices=["MAPO-HOPE"], subject="staff:mapo-hope")
    resident = resident_auth(api)
    api.ok("intake", "PUT", f"/v1/residents/{BIRTH_RESIDENT_ID}/consents", resident,
           json={"consents": {"case_management": True}})  # fmt: skip
    opened = api.ok("routing", "POST", "/v1/household-cases", lead,
                    json={"members": [BIRTH_RESIDENT_ID], "reason": "Newborn, a parent out of work"})  # fmt: skip
    hid = opened["id"]
    api.ok("routing", "POST", f"/v1/household-cases/{hid}/claim", lead)
    soon = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    plan = {"needs": [{"domain": "care", "assessment": "신생아 돌봄 부담"}],
            "goals": [{"key": "care", "domain": "care", "text": "아이돌봄 서비스 연계", "owner": "staff:mapo-hope",
                       "target_date": soon}],
            "services": [{"goal": "care", "kind": "referral", "description": "아이돌봄 서비스",
                          "owner": "staff:mapo-hope", "due_on": soon, "service_type": "childcare"}]}  # fmt: skip
    api.ok("routing", "PUT", f"/v1/household-cases/{hid}/plan", lead, json=plan)
    api.ok("routing", "POST", f"/v1/household-cases/{hid}/follow-ups", lead, json={"purpose": "가정 방문"})
    eventually(
        lambda: api.ok("routing", "GET", f"/v1/household-cases/{hid}", lead)["members"][0]["cases"],
        what="the member's department cases, once routing holds the consent",
    )
    case = next(p["case"] for p in api.view(STATE["application"], resident)["programs"] if p["case"])

    with portal.context() as context:
        page = context.new_page()
        portal.sign_in(page, "caseworker-mapo-hope")
        page.goto(f"{portal.url}/work/households/{hid}")
        assert "가구 통합사례관리 — 마포구 희망복지지원단" in page.locator("h1").inner_text()
        assert page.locator("#member-1-caption").count() == 1, "the lead sees the member's department cases"
        assert "아이돌봄 서비스" in page.locator("section[aria-labelledby=plan-title]").inner_text()
        assert "가정 방문" in page.locator("main").inner_text()
        assert "계획 변경" in page.locator("ol.timeline").inner_text()
        portal.check(page)
        portal.sign_out(page)
        # The department's caseworker sees who leads it, without a way into it; the administrator follows the link.
        portal.sign_in(page, f"caseworker-{case['office_code'].lower()}")
        page.goto(f"{portal.url}/work/cases/{case['case_id']}")
        assert "staff:mapo-hope" in page.locator("#household-ref").inner_text()
        assert page.locator("#household-ref a").count() == 0
        response = page.goto(f"{portal.url}/work/households/{hid}")
        assert response is not None
        assert response.status == 404
        portal.sign_out(page)
        portal.sign_in(page, "admin")
        page.goto(f"{portal.url}/work/cases/{case['case_id']}")
        page.locator("#household-ref a").click()
        page.wait_for_url(f"**/work/households/{hid}")
        portal.check(page)
    with portal.context(DESKTOP, language="en") as context:
        page = context.new_page()
        portal.sign_in(page, "caseworker-mapo-hope")
        page.goto(f"{portal.url}/work/households/{hid}")
        assert page.locator("h1").inner_text() == "Household case — Mapo-gu Integrated Case Management Team"
        assert "The shared plan" in page.locator("main").inner_text()
        portal.check(page)
