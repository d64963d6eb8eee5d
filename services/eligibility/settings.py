"""Settings of the eligibility service: ``ONESTOP_ELIGIBILITY_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EligibilitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_ELIGIBILITY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/eligibility.db"
