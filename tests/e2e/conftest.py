"""The whole platform as separate processes (nats-server and the four services on free ports), started through the
same code path as `onestop run`, with timers shortened so that the journeys take seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, unused_port
from tests.e2e.support import Api, WebhookEndpoint, webhook_endpoint

# A partner that reports facts for the tax department (the National Tax Service's connector).
TAX_SOURCE = "nts"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    config = PlatformConfig(
        var_dir=tmp_path_factory.mktemp("var"),
        nats_port=unused_port(),
        nats_http_port=unused_port(),
        ports={s.name: unused_port() for s in SERVICES},
        ready_timeout=90,
        overrides={
            "eligibility": {"partner_departments": {TAX_SOURCE: "tax"}},
            "notify": {
                # The partner's endpoint in these tests is on this machine.
                "webhook_allowed_networks": ["127.0.0.1/32"],
                "worker_interval_seconds": 0.2,
                "bundle_window_seconds": 1.0,
                "retry_base_seconds": 0.5,
            },
            "routing": {"sla_check_interval_seconds": 1.0},
        },
    )
    platform = Platform(config)
    platform.start()
    yield platform
    platform.stop()


@pytest.fixture(scope="session")
def api(platform: Platform) -> Api:
    return Api(platform)


@pytest.fixture(scope="session")
def partner_endpoint() -> Iterator[WebhookEndpoint]:
    yield from webhook_endpoint()
