"""App factory of the intake service (``uvicorn --factory services.intake.main:create_app``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services import intake as package
from services.intake import erasure
from services.intake.api import ROUTERS
from services.intake.catalogue import catalogue_client
from services.intake.context import IntakeContext
from services.intake.expiry import offer_expiry
from services.intake.exports import export_worker
from services.intake.handlers import subscriptions
from services.intake.models import platform
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.runtime import Runtime, ServiceDefinition
from shared.service import create_service_app

NAME = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: IntakeSettings) -> ServiceDefinition[IntakeContext]:
    @contextlib.asynccontextmanager
    async def context(runtime: Runtime) -> AsyncIterator[IntakeContext]:
        clock = Clock.from_settings(settings)
        runtime.housekeeping.register("erasure", lambda now: erasure.purge(runtime.db, settings, clock, now))
        async with catalogue_client(settings) as catalogue, export_worker(runtime.db, settings) as exports:
            ctx = IntakeContext(settings, runtime.outbox, clock, catalogue, exports)
            async with offer_expiry(runtime, ctx) as expiry:
                ctx.expiry = expiry
                yield ctx

    return ServiceDefinition(
        name=NAME,
        title="OneStop intake",
        description=package.__doc__ or "",
        tables=platform,
        routers=ROUTERS,
        context=context,
        subscriptions=subscriptions,
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    return create_service_app(definition(settings), settings)
