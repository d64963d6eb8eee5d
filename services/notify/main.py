"""App factory of the notify service (``uvicorn --factory services.notify.main:create_app``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services import notify as package
from services.notify.api import ROUTERS
from services.notify.context import NotifyContext
from services.notify.handlers import subscriptions
from services.notify.models import platform
from services.notify.settings import NotifySettings
from services.notify.worker import running
from shared.runtime import ServiceDefinition
from shared.service import create_service_app

NAME = "notify"
MIGRATIONS = Path(__file__).parent / "migrations"


def definition(settings: NotifySettings) -> ServiceDefinition[NotifyContext]:
    return ServiceDefinition(
        name=NAME,
        title="OneStop notify",
        description=package.__doc__ or "",
        tables=platform,
        routers=list(ROUTERS),
        context=lambda runtime: running(runtime, settings),
        subscriptions=subscriptions,
    )


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    return create_service_app(definition(settings), settings)
