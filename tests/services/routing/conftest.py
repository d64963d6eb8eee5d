"""Fixtures of the routing tests: the real service (migrated, offices seeded) on the real bus, its date pinned."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.auth import TokenIssuer
from tests.services.routing.support import routing_service
from tests.support.nats import NatsServer
from tests.support.services import RunningService


@pytest.fixture
def routing_today() -> dt.date:
    """Routing's "today" in a test; a module overrides this fixture for another date. The default is the Thursday
    before the long Chuseok weekend of 2025 (holidays and weekends right ahead)."""
    return dt.date(2025, 10, 2)


@pytest.fixture
async def routing(
    nats_server: NatsServer,
    bus_prefix: str,
    database_url: str,
    keys_dir: Path,
    issuer: TokenIssuer,
    routing_today: dt.date,
) -> AsyncIterator[RunningService]:
    async with routing_service(
        nats_url=nats_server.url, prefix=bus_prefix, database_url=database_url, keys_dir=keys_dir, issuer=issuer,
        today=routing_today.isoformat(),
    ) as service:  # fmt: skip
        yield service
