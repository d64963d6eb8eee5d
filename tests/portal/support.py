"""Driving the portal in a real browser (Playwright from PyPI, Debian's chromium) against the real platform, and
checking every page with axe-core (WCAG 2.1 A and AA) and at a phone's width. ``make screenshots`` uses it too."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from onestop.registry import PORTAL, SERVICES
from onestop.runner import Platform, PlatformConfig, unused_port

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
WCAG_21_AA = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    "resultTypes": ["violations"],
}
T = TypeVar("T")

# The demo people (services/portal/demo_people.yaml) the journeys sign in as.
BIRTH_RESIDENT = "resident-birth"
BIRTH_RESIDENT_ID = "6f1d3c9a-2b1e-4c55-9a0e-10a1b1e0b001"
OTHER_RESIDENT = "resident-moving-in"
OFFERED_RESIDENT = "resident-job-loss"
OFFERED_RESIDENT_ID = "6f1d3c9a-2b1e-4c55-9a0e-10a1b1e0b003"


def platform_config(var_dir: Path) -> PlatformConfig:
    """The whole platform with the portal, on free ports, with notify's timers short enough for journeys."""
    return PlatformConfig(
        var_dir=var_dir,
        nats_port=unused_port(),
        nats_http_port=None,
        ports={**{s.name: unused_port() for s in SERVICES}, PORTAL.name: unused_port()},
        ready_timeout=120,
        overrides={
            "notify": {"worker_interval_seconds": 0.2, "bundle_window_seconds": 1.0, "retry_base_seconds": 0.5},
            # The demo residents who consent are screened soon after they are registered (their offers' page).
            "eligibility": {"screening_check_interval_seconds": 1.0},
            "routing": {"sla_check_interval_seconds": 1.0},
        },
    )


@contextmanager
def chromium() -> Iterator[tuple[Playwright, Browser]]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        raise RuntimeError("Debian's chromium is not installed (make browser installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield playwright, browser
        finally:
            browser.close()


def eventually(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout}s: {what}; last seen: {str(last)[:500]}")


class Portal:
    """The portal at ``url``, as people use it."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        self.url = url
        self.axe = Axe()

    def context(self, viewport: dict[str, int] = PHONE, language: str | None = None) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        if language:
            context.add_cookies([{"name": "onestop_lang", "value": language, "url": self.url}])
        return context

    def sign_in(self, page: Page, person: str) -> None:
        """Through the portal's sign-in: the OIDC provider's page, a person chosen, back to the portal."""
        page.goto(f"{self.url}/signin")
        page.locator(f"button[name=person][value='{person}']").click()
        page.wait_for_load_state()
        assert not page.url.startswith(f"{self.url}/idp"), page.url

    def open(self, page: Page, path: str) -> None:
        """Go to ``path`` and expect the page itself, not an error page: else the assertion shows what was shown."""
        response = page.goto(f"{self.url}{path}")
        assert response is not None, path
        shown = page.locator("main").inner_text()[:800]
        assert response.ok, f"{path}: {response.status} at {page.url}\n{shown}"

    def sign_out(self, page: Page) -> None:
        page.locator("form[action='/signout'] button").click()
        page.wait_for_url(f"{self.url}/")

    def check(self, page: Page) -> None:
        """No WCAG 2.1 A/AA violation axe-core can find, and nothing wider than the window (375 px on a phone)."""
        violations = self.axe.run(page, options=WCAG_21_AA).response["violations"]
        assert violations == [], [(v["id"], v["help"], [n["target"] for n in v["nodes"][:3]]) for v in violations]
        width = page.evaluate("document.documentElement.scrollWidth")
        viewport = page.viewport_size
        assert viewport is not None
        assert width <= viewport["width"], f"{page.url} is {width}px wide"

    # ------------------------------------------------------------------------------------------ journeys

    def file_birth(self, page: Page, *, double_click: bool = True) -> str:
        """A birth application through the pages: the questions, the review, and submit (double-clicked)."""
        page.goto(f"{self.url}/apply")
        page.locator("a[href='/apply/birth']").click()
        page.wait_for_url("**/apply/birth")
        born = (dt.date.today() - dt.timedelta(days=6)).isoformat()
        page.fill("#fact-child_birth_date", born)
        page.fill("#fact-newborns", "1")
        page.fill("#fact-birth_order", "1")
        page.check("#fact-korean_national")
        page.check("#fact-birth_registered")
        page.select_option("#fact-employment_status", "employed")
        page.locator("form[action='/apply/birth/review'] button[type=submit]").click()
        page.wait_for_url("**/apply/birth/review")
        submit = page.locator("form[action='/apply/birth/submit'] button[type=submit]")
        if double_click:
            submit.dblclick()
        else:
            submit.click()
        page.wait_for_url("**/applications/*")
        return page.url.rsplit("/", 1)[1].split("?")[0]


def warnings_logged(var_dir: Path, *, per_process: int = 30) -> str:
    """The platform's warnings and errors, the last ``per_process`` of each process: what a failed journey's report
    shows beside the assertion (a service that timed out or refused says so here, the page only says it failed)."""
    out: list[str] = []
    for log in sorted((var_dir / "logs").glob("*.log")):
        lines = [
            line
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if '"level":"warning"' in line
            or '"level":"error"' in line
            or '"level":"critical"' in line
            or " WARNING " in line
            or " ERROR " in line
        ]
        if lines:
            out += [f"--- {log.name}", *lines[-per_process:]]
    return "\n".join(out)


def start_platform(var_dir: Path) -> Platform:
    platform = Platform(platform_config(var_dir))
    platform.start()
    return platform


def portal_url(platform: Platform) -> str:
    return platform.url(PORTAL.name)
