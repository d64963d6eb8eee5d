"""The platform as production runs it, on this machine: a 3-node JetStream cluster with R3 streams, PostgreSQL, two
processes of every service and of the portal, a real SMTP relay and a partner's webhook endpoint; supervised as
`onestop run` does.

Timers are scaled down with the faults (seconds, not minutes): a claim held by a killed replica expires after 20 s
instead of 2 minutes, webhook retries back off to at most 1 s and never give up within the test's outage. The
guarantees under test do not depend on these figures; only how long the test waits does."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig
from onestop.supervisor import RestartPolicy
from tests.chaos.workload import PartnerEndpoint
from tests.support.smtp import MailServer, mail_server

SMTP_USER, SMTP_PASSWORD = "onestop", "relay-password"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    with mail_server(tmp_path, user=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


@pytest.fixture
def partner() -> Iterator[PartnerEndpoint]:
    endpoint = PartnerEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def production_like(tmp_path: Path, smtp: MailServer) -> Iterator[Platform]:
    postgres_dir = Path(tempfile.mkdtemp(prefix="onestop-chaos-pg-"))  # reachable by the postgres user
    everyone: dict[str, object] = {}
    config = PlatformConfig.on_free_ports(
        tmp_path / "var",
        cluster=True,
        postgres=True,
        postgres_dir=postgres_dir,
        portal=True,
        replicas=2,
        ready_timeout=240,
        env_file=None,
        # The faults kill the same node several times within minutes, on purpose: not a crash loop.
        restart=RestartPolicy(max_crashes=50),
        overrides={
            **{s.name: dict(everyone) for s in SERVICES},
            "routing": {**everyone, "sla_check_interval_seconds": 1.0},
            "notify": {
                **everyone,
                "smtp_host": smtp.host,
                "smtp_port": smtp.port,
                "smtp_username": SMTP_USER,
                "smtp_password": SMTP_PASSWORD,
                "smtp_validate_certs": False,
                "webhook_allowed_networks": ["127.0.0.1/32"],
                # One message per event (no bundling by arrival time), so a fault-free run fixes the counts.
                "bundle_window_seconds": 0.0,
                "worker_interval_seconds": 0.2,
                "claim_lease_seconds": 20.0,
                "retry_base_seconds": 0.5,
                "retry_max_seconds": 2.0,
                "webhook_timeout_seconds": 2.0,
                "webhook_retry_base_seconds": 0.2,
                "webhook_retry_max_seconds": 1.0,
                "webhook_max_attempts": 100,
                "webhook_pause_after_failures": 100_000,
            },
        },
    )
    platform = Platform(config)
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
        shutil.rmtree(postgres_dir, ignore_errors=True)
