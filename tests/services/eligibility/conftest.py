"""Fixtures of the eligibility tests: the real service (migrated, seeded from the YAML catalogue) on the real bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.auth import TokenIssuer
from tests.services.eligibility.support import eligibility_service
from tests.support.nats import NatsServer
from tests.support.services import RunningService


@pytest.fixture
async def eligibility(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer
) -> AsyncIterator[RunningService]:
    async with eligibility_service(
        database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer
    ) as service:
        yield service
