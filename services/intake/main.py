"""App factory of the intake service (``uvicorn --factory services.intake.main:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services import intake as package
from services.intake.api import ROUTERS
from services.intake.catalogue import catalogue_client
from services.intake.handlers import subscriptions
from services.intake.models import platform
from services.intake.settings import IntakeSettings
from shared.service import ServiceDefinition, create_service_app

NAME = "intake"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: IntakeSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME,
        title="OneStop intake",
        description=package.__doc__ or "",
        tables=platform,
        routers=ROUTERS,
        subscriptions=subscriptions,
        background=lambda runtime: catalogue_client(runtime, settings),
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    return create_service_app(definition(settings), settings)
