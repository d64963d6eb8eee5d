"""Fixtures of the intake tests: the eligibility catalogue it reads (one fixture, ``eligibility_url``, so it can be
switched to the real eligibility service), and intake itself running against the real NATS and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.auth import Role, TokenIssuer, TokenVerifier
from tests.services.intake.eligibility_standin import create_standin
from tests.support.http import serve
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service


def standin_verifier(keys_dir: Path) -> TokenVerifier:
    return TokenVerifier(
        issuer="onestop-embedded",
        audience="onestop",
        algorithms=["EdDSA"],
        public_key_pem=(keys_dir / "issuer.pub.pem").read_bytes(),
    )


@pytest.fixture
async def eligibility_url(keys_dir: Path) -> AsyncIterator[str]:
    """Where intake finds eligibility's ``GET /v1/life-events`` and ``GET /v1/fact-types`` (real HTTP)."""
    async with serve(create_standin(standin_verifier(keys_dir))) as url:
        yield url


@pytest.fixture
def intake_token(issuer: TokenIssuer) -> str:
    return issuer.mint(Role.SERVICE, service="intake")


@pytest.fixture
async def intake(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    eligibility_url: str,
    intake_token: str,
) -> AsyncIterator[RunningService]:
    async with running_service(
        "intake",
        database_url=database_url,
        nats_url=nats_server.url,
        prefix=bus_prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        eligibility_url=eligibility_url,
        service_token=intake_token,
    ) as service:
        yield service
