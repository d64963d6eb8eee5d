"""Settings of the intake service: ``ONESTOP_INTAKE_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_INTAKE_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/intake.db"

    # Eligibility owns the catalogue of life events, programs and fact types; intake reads it over HTTP.
    eligibility_url: str = "http://127.0.0.1:8002"
    # How long a fetched catalogue counts as fresh; a stale copy is still served while eligibility is down.
    catalogue_ttl_seconds: float = Field(default=60.0, gt=0)
    catalogue_timeout_seconds: float = Field(default=3.0, gt=0)

    # Proactive offers: how long an offer stands (days after it is made; the last day is shown as ``expires_on``) —
    # a service choice, not a statutory period — and how often expired offers are closed.
    offer_valid_days: int = Field(default=90, ge=1, le=3650)
    offer_check_interval_seconds: float = Field(default=300.0, gt=0)
    # From this age a resident whose household lists nobody counts as an older person living alone (독거노인: 만 65세
    # 이상, 노인복지법 제27조의2 — the age the basic pension and senior programs use too).
    elderly_age: int = Field(default=65, ge=1, le=120)
