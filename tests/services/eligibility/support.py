"""Helpers of the eligibility tests: the real service (migrated, seeded from the YAML catalogue), today as it dates
things, and routing's case events for a case of an application."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shared.auth import TokenIssuer
from shared.clock import Clock
from shared.events import CaseRouted, CaseTransferred, Localized
from tests.support.services import RunningService, running_service

PARTNERS = {"nts": "tax", "ssis": "welfare", "moi": "civil_registry"}


def today() -> dt.date:
    """Today in Seoul, as the service dates things."""
    return Clock("Asia/Seoul").today()


@contextlib.asynccontextmanager
async def eligibility_service(
    *, database_url: str, nats_url: str, prefix: str, keys_dir: Path, issuer: TokenIssuer, **overrides: Any
) -> AsyncIterator[RunningService]:
    """The eligibility service on a migrated database seeded from the YAML catalogue, on the real NATS."""
    overrides.setdefault("partner_departments", PARTNERS)
    # Screening runs by itself only where a test says so; elsewhere a test runs the scheduler's passes (``tick``).
    overrides.setdefault("screening_schedule", False)
    async with running_service(
        "eligibility", database_url=database_url, nats_url=nats_url, prefix=prefix, keys_dir=keys_dir, issuer=issuer,
        seed=True, **overrides,
    ) as service:  # fmt: skip
        yield service


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
