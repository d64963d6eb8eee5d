"""Settings of the routing service: ``ONESTOP_ROUTING_...`` environment variables (or ``.env``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.events import Department, Vulnerability
from shared.settings import ServiceSettings

PACKAGE_DIR = Path(__file__).resolve().parent


class RoutingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ONESTOP_ROUTING_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/routing.db"

    # The offices the seed loads (only offices missing from the database are added; admins edit the rest via PUT).
    offices_file: Path = PACKAGE_DIR / "offices.yaml"

    # The working-day calendar: a country's public holidays (the `holidays` package) plus local closure days.
    holiday_country: str = Field(default="KR", min_length=2, max_length=3)
    extra_closure_dates: list[dt.date] = []

    # SLA timer: how often it looks for breached cases.
    sla_check_interval_seconds: float = Field(default=60.0, gt=0)
    # A case whose due date is this many working days away or fewer is raised in priority.
    due_soon_working_days: int = Field(default=2, ge=0, le=30)
    # A breached case is escalated with a new promise to the resident: a result within this many working days.
    sla_breach_grace_working_days: int = Field(default=5, ge=1, le=60)

    # Statistics
    capacity_window_days: int = Field(default=28, ge=1, le=366)
    # Open data never shows a count below this (1..k-1 are suppressed; zero is shown).
    open_data_min_count: int = Field(default=5, ge=1)
    # Take-up (found eligible, applied, granted per program and district) says who was found eligible for what, so
    # its groups are held to the minimum of the aggregate partner feed (notify's aggregate_min_group).
    take_up_min_group: int = Field(default=10, ge=1)

    # Outreach to the vulnerable (outreach.py): a resident flagged with one of these who has not answered an offer
    # within this many working days becomes an outreach case of the department's office for their district, to be
    # visited within the SLA. Service choices (찾아가는 보건복지서비스), not statutory periods.
    outreach_vulnerabilities: frozenset[Vulnerability] = frozenset(
        {Vulnerability.ELDERLY_ALONE, Vulnerability.DISABILITY, Vulnerability.SINGLE_PARENT, Vulnerability.CRISIS}
    )
    outreach_after_working_days: int = Field(default=10, ge=1, le=120)
    outreach_sla_working_days: int = Field(default=10, ge=1, le=120)
    outreach_department: Department = Department.WELFARE
    outreach_case_weight: float = Field(default=1.0, gt=0)
    outreach_check_interval_seconds: float = Field(default=300.0, gt=0)
    # What residents said is shown only for groups of at least this many (a count below it is suppressed, and so are
    # the rates over it).
    open_data_feedback_min_group_size: int = Field(default=10, ge=1)
    # The datasets' metadata: who publishes them and under which licence.
    open_data_publisher: str = "OneStop one-stop public services"
    open_data_licence: str = "Korea Open Government Licence Type 1 (공공누리 제1유형): free use with attribution"
    open_data_licence_url: str = "https://www.kogl.or.kr/info/licenseType1.do"

    # Integrated case management of households (households.py; 사회보장급여법 제42조의2 통합사례관리). A household is
    # taken on by rule when its members have active cases in at least this many departments and a flag below. The
    # number and the flags are the city's choice (the Act leaves selection to the 희망복지지원단's assessment).
    household_min_departments: int = Field(default=2, ge=2, le=6)
    # Any registry vulnerability or a crisis a caseworker or department flagged (Vulnerability.CRISIS) ...
    household_flags: frozenset[Vulnerability] = frozenset(Vulnerability)
    # ... or an application for a crisis life event (intake's life events: losing a job, a death in the family).
    household_crisis_life_events: frozenset[str] = frozenset({"job_loss", "death_in_family"})
    # A household case's weight in the integrated case-management office's load (policy.route, like any case).
    household_case_weight: float = Field(default=3.0, gt=0)
    # A follow-up is due within this many working days of being scheduled unless the lead sets its own SLA.
    household_follow_up_sla_working_days: int = Field(default=10, ge=1, le=120)
    # After closure the household is checked on again after this many months (사후관리; a service choice).
    household_follow_up_check_months: int = Field(default=3, ge=1, le=24)
