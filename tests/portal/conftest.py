"""The whole platform with the portal, as separate processes, started once for the portal's tests; a real chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from onestop.runner import Platform
from tests.e2e.support import Api
from tests.portal.support import Portal, chromium, portal_url, start_platform


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
