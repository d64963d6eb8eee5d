"""Fixtures of the eligibility tests: the real service (migrated, seeded from the YAML catalogue) on the real bus."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from services.eligibility.main import MIGRATIONS
from services.eligibility.seed import seed
from shared.auth import TokenIssuer
from shared.events import CaseRouted, CaseTransferred, CloudEvent, EventData, Localized, new_event
from shared.migrations import upgrade
from tests.support.nats import NatsServer
from tests.support.services import RunningService, running_service, service_settings

PARTNERS = {"nts": "tax", "ssis": "welfare", "moi": "civil_registry"}
SEOUL = ZoneInfo("Asia/Seoul")


def today() -> dt.date:
    return dt.datetime.now(SEOUL).date()


@contextlib.asynccontextmanager
async def eligibility_service(
    *, database_url: str, nats_url: str, prefix: str, keys_dir: Path, issuer: TokenIssuer, **overrides: Any
) -> AsyncIterator[RunningService]:
    overrides.setdefault("partner_departments", PARTNERS)
    settings = service_settings(
        "eligibility", database_url=database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir, **overrides
    )
    await upgrade(settings.database_url, MIGRATIONS)
    await seed(settings)
    async with running_service(
        "eligibility",
        database_url=database_url,
        nats_url=nats_url,
        prefix=prefix,
        keys_dir=keys_dir,
        issuer=issuer,
        migrate=False,
        **overrides,
    ) as service:
        yield service


@pytest.fixture
async def eligibility(
    nats_server: NatsServer, bus_prefix: str, database_url: str, keys_dir: Path, issuer: TokenIssuer
) -> AsyncIterator[RunningService]:
    async with eligibility_service(
        database_url=database_url, nats_url=nats_server.url, prefix=bus_prefix, keys_dir=keys_dir, issuer=issuer
    ) as service:
        yield service


async def publish(service: RunningService, data: EventData, *, source: str = "/onestop/intake") -> CloudEvent:
    """Publish an event the way another service's outbox relay does (Nats-Msg-Id = event id)."""
    event = new_event(data, source=source)
    await service.runtime.bus.publish_event(event)
    return event


async def count(service: RunningService, model: Any, *where: Any) -> int:
    async with service.runtime.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def consumer_idle(service: RunningService, subscription: str = "events") -> bool:
    """Every event on the stream has been handled (and acknowledged) by one of eligibility's consumers."""
    bus = service.runtime.bus
    info = await bus.js.consumer_info(bus.stream, f"eligibility-{subscription}")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def case_routed(
    application_id: uuid.UUID, resident_id: uuid.UUID, office_code: str, *, case_id: uuid.UUID | None = None,
    at: dt.datetime | None = None,
) -> CaseRouted:  # fmt: skip
    """Routing's ``case.routed`` for a case of the application (the parts eligibility reads, and what it must)."""
    return CaseRouted(
        case_id=case_id or uuid.uuid4(), application_id=application_id, resident_id=resident_id,
        program_code="child_allowance", department="welfare", office_code=office_code,
        office_name=Localized(ko=office_code, en=office_code), status="open", priority=2, automatic=False,
        reason="the responsible office", routed_at=at or dt.datetime.now(dt.UTC),
    )  # fmt: skip


def case_transferred(routed: CaseRouted, office_code: str, *, at: dt.datetime | None = None) -> CaseTransferred:
    return CaseTransferred(
        **routed.model_dump(include={"case_id", "application_id", "resident_id", "program_code", "department"}),
        office_code=office_code, from_office_code=routed.office_code,
        office_name=Localized(ko=office_code, en=office_code), reason="closer to the resident",
        transferred_at=at or dt.datetime.now(dt.UTC),
    )  # fmt: skip
