"""App factory of the routing service (``uvicorn --factory services.routing.main:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services import routing as package
from services.routing.models import platform
from services.routing.settings import RoutingSettings
from shared.service import ServiceDefinition, create_service_app

NAME = "routing"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: RoutingSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME,
        title="OneStop routing",
        description=package.__doc__ or "",
        tables=platform,
        routers=[],
    )


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()
    return create_service_app(definition(settings), settings)
