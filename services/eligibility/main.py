"""App factory of the eligibility service (``uvicorn --factory services.eligibility.main:create_app``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services import eligibility as package
from services.eligibility.api import router
from services.eligibility.context import EligibilityContext
from services.eligibility.determinations import Eligibility
from services.eligibility.handlers import subscriptions
from services.eligibility.models import platform
from services.eligibility.screening import ScreeningMetrics
from services.eligibility.settings import EligibilitySettings
from shared.runtime import Runtime, ServiceDefinition
from shared.service import create_service_app

NAME = "eligibility"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: EligibilitySettings) -> ServiceDefinition[EligibilityContext]:
    @contextlib.asynccontextmanager
    async def context(runtime: Runtime) -> AsyncIterator[EligibilityContext]:
        metrics = ScreeningMetrics(runtime.metrics.registry)
        yield EligibilityContext(settings, Eligibility(settings, runtime.outbox, metrics))

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
