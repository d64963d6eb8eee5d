"""``make screenshots``: docs/screenshots/*.png of every main page, taken in Debian's chromium from a platform started
for the purpose (in a temporary directory, on free ports), after a resident filed a birth application and a
caseworker took one of its cases."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page

from onestop.registry import ROOT
from shared.auth import Role
from tests.e2e.support import Api
from tests.portal.support import (
    BIRTH_RESIDENT,
    BIRTH_RESIDENT_ID,
    DESKTOP,
    PHONE,
    Portal,
    chromium,
    eventually,
    portal_url,
    start_platform,
)

OUT = ROOT / "docs" / "screenshots"


def shoot(page: Page, name: str, *, full: bool = True) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
    print(f"  docs/screenshots/{name}.png")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as var:
        platform = start_platform(Path(var))
        try:
            api = Api(platform)
            with chromium() as (_, browser):
                portal = Portal(browser, portal_url(platform))
                take(portal, api)
        finally:
            platform.stop()
    return 0


def take(portal: Portal, api: Api) -> None:
    with portal.context(DESKTOP) as context:
        page = context.new_page()
        page.goto(portal.url)
        shoot(page, "01-home")
        page.goto(f"{portal.url}/signin")
        shoot(page, "02-sign-in")
        page.locator(f"button[value='{BIRTH_RESIDENT}']").click()
        page.goto(f"{portal.url}/apply")
        shoot(page, "03-life-events")
        page.goto(f"{portal.url}/apply/birth")
        shoot(page, "04-questions")
        page.fill("#fact-newborns", "twins")
        page.locator("form[action='/apply/birth/review'] button[type=submit]").click()
        shoot(page, "05-questions-with-an-error", full=False)
        application = portal.file_birth(page, double_click=False)
        resident = api.token(Role.RESIDENT, resident_id=BIRTH_RESIDENT_ID)

        def routed() -> list[dict[str, object]]:
            view = api.view(application, resident)
            return [p["case"] for p in view["programs"] if p["case"] and p["case"]["status"] == "open"]

        cases = eventually(routed, timeout=60, what="cases routed")
        page.reload()
        shoot(page, "06-status")
        page.goto(f"{portal.url}/consents")
        shoot(page, "08-consents")
        portal.sign_out(page)

        case = cases[0]
        office = str(case["office_code"])
        portal.sign_in(page, f"caseworker-{office.lower()}")
        shoot(page, "09-queue")
        page.goto(f"{portal.url}/work/cases/{case['case_id']}")
        page.locator("form[action$='/claim'] button").click()
        page.wait_for_url("**?done=claim")
        page.locator("summary", has_text="결정하기").click()
        page.check("input[name=decision][value=approved]")
        page.select_option("#reason_code", "criteria_met")
        page.fill("#decide-note", "서류 확인 완료")
        page.locator("form[action$='/decide'] button[type=submit]").click()
        page.wait_for_url("**?done=decide")
        shoot(page, "10-case")
        portal.sign_out(page)

        portal.sign_in(page, "supervisor-mapo")
        shoot(page, "11-capacity")
        portal.sign_out(page)
        portal.sign_in(page, "admin")
        shoot(page, "12-dead-letters")
        page.goto(f"{portal.url}/admin/offices")
        shoot(page, "13-offices", full=False)
        portal.sign_out(page)

    with portal.context(PHONE) as context:
        page = context.new_page()
        portal.sign_in(page, BIRTH_RESIDENT)

        def decided() -> bool:
            page.goto(f"{portal.url}/inbox")
            return page.locator("article h2", has_text="신청하신 지원이 결정되었습니다").count() > 0

        eventually(decided, timeout=60, what="the decision in the inbox")
        shoot(page, "07-inbox-375px", full=False)


if __name__ == "__main__":
    sys.exit(main())
