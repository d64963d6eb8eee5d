"""Settings of the notify service: ``ONESTOP_NOTIFY_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_NOTIFY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/notify.db"
