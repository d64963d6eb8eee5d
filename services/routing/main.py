"""App factory of the routing service (``uvicorn --factory services.routing.main:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services import routing as package
from services.routing.api import cases_router, offices_router, statistics_router
from services.routing.handlers import subscriptions
from services.routing.models import platform
from services.routing.settings import RoutingSettings
from services.routing.timer import sla_timer
from shared.service import ServiceDefinition, create_service_app

NAME = "routing"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: RoutingSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME,
        title="OneStop routing",
        description=package.__doc__ or "",
        tables=platform,
        routers=[offices_router, cases_router, statistics_router],
        subscriptions=subscriptions,
        background=sla_timer,
    )


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    return create_service_app(definition(settings), settings)
