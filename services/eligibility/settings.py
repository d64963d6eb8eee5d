"""Settings of the eligibility service: ``ONESTOP_ELIGIBILITY_...`` environment variables (or ``.env``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.events import Department
from shared.settings import ServiceSettings

CATALOGUE_DIR = Path(__file__).parent / "catalogue"


class EligibilitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_ELIGIBILITY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/eligibility.db"

    # The YAML catalogue seed.py loads (programs, fact types, reference tables, life events).
    catalogue_dir: Path = CATALOGUE_DIR
    # Which department each partner reports facts for (POST /v1/facts), e.g. {"nts": "tax", "nhis": "health"}.
    partner_departments: dict[str, Department] = Field(default_factory=dict)
    # Proactive screening: opportunities (and their events) written per statement, and the most residents one
    # screening may cover.
    screening_batch_size: int = Field(default=500, ge=1, le=10_000)
    screening_max_residents: int = Field(default=1_000_000, ge=1)
    # Residents judged together in columns (the vectorised path reads, resolves and judges a page at a time).
    screening_page_size: int = Field(default=200_000, ge=1, le=2_000_000)
    # Screening that runs by itself (scheduler.py): whether its loop runs, how often it looks for due work, and how
    # long a process holds the right to run screenings without renewing it (between pages).
    screening_schedule: bool = True
    screening_check_interval_seconds: float = Field(default=30.0, gt=0)
    screening_lease_seconds: float = Field(default=300.0, ge=5)
    # Facts a near miss never asks about unprompted: health data is sensitive (개인정보 보호법 제23조, 민감정보), so a
    # resident tells it in an application of their own, not in answer to a screening's question.
    screening_unasked_facts: frozenset[str] = frozenset({"geriatric_disease"})
