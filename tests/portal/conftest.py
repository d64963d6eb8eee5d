"""The whole platform with the portal, as separate processes, started once for the portal's tests; a real chromium."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from playwright.sync_api import Browser

from onestop.runner import Platform
from tests.e2e.support import Api
from tests.portal.support import Portal, chromium, portal_url, start_platform, warnings_logged


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = start_platform(tmp_path_factory.mktemp("var"))
    yield platform
    platform.stop()


@pytest.fixture(scope="package")
def api(platform: Platform) -> Api:
    return Api(platform)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with chromium() as (_, browser):
        yield browser


@pytest.fixture(scope="package")
def portal(platform: Platform, browser: Browser) -> Portal:
    return Portal(browser, portal_url(platform))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, None]:
    """A failed journey's report carries what the platform warned about (an upstream's timeout, a refusal)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    platform = getattr(item, "funcargs", {}).get("platform")
    if report.failed and isinstance(platform, Platform):
        report.sections.append(("the platform's warnings", warnings_logged(platform.var) or "(none)"))
