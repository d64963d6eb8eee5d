"""Settings of the intake service: ``ONESTOP_INTAKE_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_INTAKE_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/intake.db"
