"""App factory of the eligibility service (``uvicorn --factory services.eligibility.main:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services import eligibility as package
from services.eligibility.api import router
from services.eligibility.handlers import subscriptions
from services.eligibility.models import platform
from services.eligibility.settings import EligibilitySettings
from shared.service import ServiceDefinition, create_service_app

NAME = "eligibility"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: EligibilitySettings) -> ServiceDefinition:
    return ServiceDefinition(
        name=NAME,
        title="OneStop eligibility",
        description=package.__doc__ or "",
        tables=platform,
        routers=[router],
        subscriptions=subscriptions,
    )


def create_app(settings: EligibilitySettings | None = None) -> FastAPI:
    settings = settings or EligibilitySettings()
    return create_service_app(definition(settings), settings)
