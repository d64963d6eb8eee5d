"""The four services, where they listen by default, and how to build, migrate and seed each; and the portal, the
fifth process, which serves pages and owns no data."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    port: int
    settings_path: str

    @property
    def app_factory(self) -> str:
        return f"services.{self.name}.main:create_app"

    @property
    def migrations(self) -> Path:
        return ROOT / "services" / self.name / "migrations"

    @property
    def env_prefix(self) -> str:
        return f"ONESTOP_{self.name.upper()}_"

    def settings_class(self) -> type[ServiceSettings]:
        cls: type[ServiceSettings] = _load(self.settings_path)
        return cls

    def settings(self, **overrides: Any) -> ServiceSettings:
        return self.settings_class()(**overrides)

    def seeder(self) -> Callable[[ServiceSettings], Coroutine[Any, Any, str]] | None:
        """``services.<name>.seed:seed`` if the service has seed data."""
        try:
            module = importlib.import_module(f"services.{self.name}.seed")
        except ModuleNotFoundError:
            return None
        seed: Callable[[ServiceSettings], Coroutine[Any, Any, str]] = module.seed
        return seed


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("intake", 8001, "services.intake.settings:IntakeSettings"),
    ServiceEntry("eligibility", 8002, "services.eligibility.settings:EligibilitySettings"),
    ServiceEntry("routing", 8003, "services.routing.settings:RoutingSettings"),
    ServiceEntry("notify", 8004, "services.notify.settings:NotifySettings"),
)
BY_NAME = {s.name: s for s in SERVICES}


@dataclass(frozen=True)
class PortalEntry:
    """The portal: no database, no bus, no migrations; it calls the four services over HTTP."""

    name: str = "portal"
    port: int = 8000
    app_factory: str = "services.portal.main:create_app"
    env_prefix: str = "ONESTOP_PORTAL_"

    def settings_class(self) -> type[BaseSettings]:
        cls: type[BaseSettings] = _load("services.portal.settings:PortalSettings")
        return cls


PORTAL = PortalEntry()
