"""Settings of the routing service: ``ONESTOP_ROUTING_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_ROUTING_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/routing.db"
