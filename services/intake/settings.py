"""Settings of the intake service: ``ONESTOP_INTAKE_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from typing import Literal

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

    # A resident's rights over their data (services/intake/exports.py, erasure.py). The services holding data about a
    # resident, each serving its part at ``GET /v1/residents/{id}/data`` and answering an erasure with
    # ``resident.erased``; their addresses are ``<name>_url``.
    resident_data_services: list[Literal["eligibility", "routing", "notify"]] = ["eligibility", "routing", "notify"]
    routing_url: str = "http://127.0.0.1:8003"
    notify_url: str = "http://127.0.0.1:8004"
    # The export worker: how often it looks for exports to gather, how long it waits for a service, how often it tries.
    export_interval_seconds: float = Field(default=2.0, gt=0)
    export_timeout_seconds: float = Field(default=10.0, gt=0)
    export_max_attempts: int = Field(default=6, ge=1, le=50)
    export_retry_seconds: float = Field(default=30.0, gt=0)
    # A document made for the resident is theirs to fetch for this long, then destroyed (it is a copy of everything).
    export_retention_days: int = Field(default=7, ge=1, le=30)
    # How long after an erasure completed the contact details stay, to tell the resident the result; and the longest
    # they stay after the request whatever happens (a service that never answers).
    erasure_notice_days: int = Field(default=7, ge=1, le=30)
    erasure_contact_max_days: int = Field(default=30, ge=1, le=90)
