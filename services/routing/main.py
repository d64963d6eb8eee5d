"""App factory of the routing service (``uvicorn --factory services.routing.main:create_app``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services import routing as package
from services.routing import resident_data
from services.routing.api import (
    cases_router,
    households_router,
    offices_router,
    partners_router,
    referrals_router,
    residents_router,
    statistics_router,
)
from services.routing.context import RoutingContext
from services.routing.handlers import subscriptions
from services.routing.models import platform
from services.routing.outreach import outreach_timer
from services.routing.settings import RoutingSettings
from services.routing.timer import sla_timer
from shared.runtime import Runtime, ServiceDefinition
from shared.service import create_service_app

NAME = "routing"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: RoutingSettings) -> ServiceDefinition[RoutingContext]:
    @contextlib.asynccontextmanager
    async def context(runtime: Runtime) -> AsyncIterator[RoutingContext]:
        ctx = RoutingContext.build(settings, runtime.outbox)
        runtime.housekeeping.register("erasure", lambda now: resident_data.purge(runtime.db, ctx.clock, now))
        async with sla_timer(runtime, ctx) as timer, outreach_timer(runtime, ctx) as visits:
            ctx.timer = timer
            ctx.outreach = visits
            yield ctx

    return ServiceDefinition(
        name=NAME,
        title="OneStop routing",
        description=package.__doc__ or "",
        tables=platform,
        routers=[
            offices_router,
            cases_router,
            households_router,
            partners_router,
            referrals_router,
            statistics_router,
            residents_router,
        ],
        context=context,
        subscriptions=subscriptions,
    )


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    return create_service_app(definition(settings), settings)
