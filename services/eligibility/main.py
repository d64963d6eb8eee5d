"""App factory of the eligibility service (``uvicorn --factory services.eligibility.main:create_app``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services import eligibility as package
from services.eligibility import resident_data
from services.eligibility.api import router
from services.eligibility.context import EligibilityContext
from services.eligibility.determinations import Eligibility
from services.eligibility.handlers import subscriptions
from services.eligibility.models import platform
from services.eligibility.repository import Repository
from services.eligibility.scheduler import screening_scheduler
from services.eligibility.screening_metrics import ScreeningMetrics
from services.eligibility.settings import EligibilitySettings
from shared.clock import Clock
from shared.runtime import Runtime, ServiceDefinition
from shared.service import create_service_app

NAME = "eligibility"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: EligibilitySettings) -> ServiceDefinition[EligibilityContext]:
    @contextlib.asynccontextmanager
    async def context(runtime: Runtime) -> AsyncIterator[EligibilityContext]:
        clock = Clock.from_settings(settings)
        runtime.housekeeping.register("erasure", lambda now: resident_data.purge(runtime.db, clock, now))
        service = Eligibility(settings, runtime.outbox, ScreeningMetrics(runtime.metrics.registry))
        # The catalogue is compiled before the service serves: built on first use, it held the event loop for
        # 100-300 ms while requests and events waited.
        async with runtime.db.read_session() as session:
            await service.store.get(Repository(session))
        async with screening_scheduler(runtime.db, service) as scheduler:
            yield EligibilityContext(settings, service, scheduler)

    return ServiceDefinition(
        name=NAME,
        title="OneStop eligibility",
        description=package.__doc__ or "",
        tables=platform,
        routers=[router],
        context=context,
        subscriptions=subscriptions,
    )


def create_app(settings: EligibilitySettings | None = None) -> FastAPI:
    settings = settings or EligibilitySettings()
    return create_service_app(definition(settings), settings)
