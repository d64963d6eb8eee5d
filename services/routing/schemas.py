"""Request and response bodies of the routing API."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.events import (
    Decision,
    DeclineReason,
    Department,
    HouseholdCaseOutcome,
    Localized,
    NeedDomain,
    OutreachVisitOutcome,
    ReferralOutcome,
    ServiceType,
)

OFFICE_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9-]{1,39}$"
DISTRICT_PATTERN = r"^[0-9]{5}$"
# Partner ids as notify grants them (they are NATS subject tokens); an offering's code is the partner's own name for it.
PARTNER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,39}$"
OFFERING_CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,59}$"

OfficeCode = Annotated[str, StringConstraints(pattern=OFFICE_CODE_PATTERN)]
# Integrated case management (통합사례관리) is no department of programs and cases: only offices handle it, and
# only household cases go there (households.py).
CASE_MANAGEMENT = "case_management"
OfficeDepartment = Department | Literal["case_management"]
DistrictCode = Annotated[str, StringConstraints(pattern=DISTRICT_PATTERN)]
LanguageCode = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]
StaffSubject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(values: list[Any], what: str) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat")
    return values


# ================================================================================================ offices


class OfficeKind(StrEnum):
    COMMUNITY_SERVICE_CENTRE = "community_service_centre"
    WELFARE_OFFICE = "welfare_office"
    HEALTH_CENTRE = "health_centre"
    TAX_OFFICE = "tax_office"
    HOUSING_OFFICE = "housing_office"
    EMPLOYMENT_CENTRE = "employment_centre"
    CIVIL_REGISTRY_DESK = "civil_registry_desk"
    CITY_HALL = "city_hall"
    # The district's integrated case-management office (희망복지지원단, 사회보장급여법 제42조의2): household cases.
    CASE_MANAGEMENT_OFFICE = "case_management_office"


class OfficeName(Input):
    ko: Name
    en: Name


class OfficeCapacity(Input):
    caseworker_hours_week: int = Field(ge=0, le=100_000, description="Caseworker hours available a week")
    active_case_ceiling: float = Field(
        ge=0, le=100_000, description="Weighted load (sum of case weights of open cases) at which the office is full"
    )


class OfficeIn(Input):
    """An office as an administrator defines it (``PUT /v1/offices/{code}`` replaces it whole)."""

    name: OfficeName
    kind: OfficeKind
    departments: list[OfficeDepartment] = Field(min_length=1, max_length=7)
    districts: list[DistrictCode] = Field(default=[], max_length=100, description="District codes it serves")
    languages: list[LanguageCode] = Field(min_length=1, max_length=20, description="ISO 639-1 codes")
    capacity: OfficeCapacity
    neighbours: list[OfficeCode] = Field(default=[], max_length=20, description="Offices that may take its overflow")
    supervisors: list[StaffSubject] = Field(default=[], max_length=50, description="Staff subjects escalations reach")
    fallback: bool = Field(
        default=False, description="Takes its departments' cases for districts that no office serves for them"
    )

    @field_validator("departments", "districts", "languages", "neighbours", "supervisors")
    @classmethod
    def no_repeats(cls, values: list[Any]) -> list[Any]:
        return _unique(values, "entries")


class OfficeSeed(OfficeIn):
    code: OfficeCode


class OfficeLoad(BaseModel):
    open_cases: int
    weighted_load: float
    utilisation: float | None = Field(description="weighted_load / active_case_ceiling")
    has_room: bool


class OfficeOut(BaseModel):
    code: str
    name: OfficeName
    kind: OfficeKind
    departments: list[OfficeDepartment]
    districts: list[str]
    languages: list[str]
    capacity: OfficeCapacity
    neighbours: list[str]
    fallback: bool
    supervisors: list[str] | None = Field(default=None, description="Shown to staff only")
    load: OfficeLoad | None = Field(default=None, description="Shown to staff only")
    updated_at: dt.datetime


# ================================================================================================ cases


class CaseStatusName(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    WAITING_ON_RESIDENT = "waiting_on_resident"
    DECIDED = "decided"
    CLOSED = "closed"


class QueueSort(StrEnum):
    """The orders an office's queue is read in, each paged by its own cursor (the case id breaks every tie)."""

    URGENCY = "urgency"  # priority, highest first; then due date, earliest first
    DUE = "due"  # due date, earliest first; then priority, highest first
    NEWEST = "newest"  # the most recently created case first


class Candidate(BaseModel):
    office_code: str
    role: Literal["responsible", "fallback", "neighbour"]
    load: float
    ceiling: float
    has_room: bool
    speaks_language: bool


class RoutingOut(BaseModel):
    """Why the case is where it is."""

    office_code: str
    rule: str
    explanation: str
    district_code: str
    department: str
    language: str
    language_matched: bool
    overflow_allowed: bool
    candidates: list[Candidate]


class MissingOut(BaseModel):
    name: str
    type: str
    question: Localized
    asked_of: Literal["resident", "staff"]


class SlaOut(BaseModel):
    sla_days: int
    application_date: dt.date
    due_date: dt.date
    paused_since: dt.date | None = Field(description="Set while the case waits on the resident")
    paused_working_days: int = Field(description="Working days the clock has been paused in total (resumed pauses)")
    working_days_left: int | None = Field(
        description="Until the due date (negative when overdue); null when not running"
    )
    breached_on: dt.date | None


class DecisionOut(BaseModel):
    decision: Decision
    reason_code: str
    reason: Localized | None
    note: str | None
    amount: int | None
    automatic: bool
    decided_by: str
    decided_at: dt.datetime


class ResidentOut(BaseModel):
    resident_id: uuid.UUID
    district_code: str
    preferred_language: str
    vulnerability: list[str]


class HistoryEntry(BaseModel):
    at: dt.datetime
    actor: str
    action: str
    details: dict[str, Any]


class CaseSummary(BaseModel):
    id: uuid.UUID
    kind: Literal["application", "outreach"] = Field(
        description="application: a program of an application; outreach: a visit to a vulnerable resident who left "
        "an offer unanswered (about the offer's program)"
    )
    application_id: uuid.UUID | None = Field(description="The application (none for an outreach case)")
    opportunity_id: uuid.UUID | None = Field(description="The offer an outreach case follows up")
    program_code: str
    program_name: Localized
    department: Department
    office_code: str
    status: CaseStatusName
    priority: int = Field(description="1 routine, 2 elevated, 3 high, 4 urgent")
    due_date: dt.date
    assignee: str | None
    escalated: bool
    breached: bool
    interpreter_needed: bool
    automatic: bool
    created_at: dt.datetime


class HouseholdRef(BaseModel):
    """That the case's resident is in a household case, and who leads it: all a department sees of it."""

    id: uuid.UUID
    status: Literal["open", "active", "closed"]
    office_code: str
    office_name: Localized
    lead: str | None


class CaseOut(CaseSummary):
    resident: ResidentOut
    household: HouseholdRef | None = Field(
        default=None, description="The household case the resident is in (its details are the lead office's)"
    )
    round: int
    outcome: str
    missing: list[MissingOut]
    amount: int | None
    amount_period: str | None
    case_weight: float
    sla: SlaOut
    decision: DecisionOut | None
    closed_reason: str | None
    closed_at: dt.datetime | None
    routing: RoutingOut
    history: list[HistoryEntry]
    version: int
    updated_at: dt.datetime


class QueuePage(BaseModel):
    office_code: str
    sort: QueueSort
    items: list[CaseSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


# ------------------------------------------------------------------------------------------------ actions


class AssignIn(Input):
    assignee: StaffSubject = Field(description="The staff subject (token 'sub') of the caseworker")


class Question(Input):
    fact: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    text: Reason


class RequestInfoIn(Input):
    questions: list[Question] = Field(min_length=1, max_length=20)


class DecideIn(Input):
    decision: Decision
    reason_code: Annotated[str, StringConstraints(min_length=1, max_length=60)] = Field(
        description="One of GET /v1/reason-codes valid for the decision"
    )
    note: LongText
    amount: int | None = Field(default=None, ge=0, le=10**12, description="KRW granted (approvals only)")


class TransferIn(Input):
    office_code: OfficeCode
    reason: Reason


class EscalateIn(Input):
    reason: Reason


class NoteIn(Input):
    text: LongText


class ReasonCodeOut(BaseModel):
    code: str
    decision: Decision
    label: Localized


class VisitIn(Input):
    outcome: OutreachVisitOutcome = Field(description="One of GET /v1/outreach-outcomes")
    visited_on: dt.date | None = Field(default=None, description="The day of the visit (default: today)")
    note: LongText


class OutreachOutcomeOut(BaseModel):
    code: OutreachVisitOutcome
    label: Localized
    final: bool = Field(description="Closes the case; otherwise another visit is due")


# ================================================================================================ offerings, referrals


class OfferingName(Input):
    ko: Name
    en: Name


class OfferingConditions(Input):
    """Who the offering is for, as the partner states it (shown to caseworkers and, by name, to the resident)."""

    ko: LongText
    en: LongText


class OfferingIn(Input):
    """A partner's offering (``PUT /v1/partners/{partner_id}/offerings/{code}`` replaces it whole)."""

    name: OfferingName = Field(description="As residents see it, with the provider's name")
    service_type: ServiceType
    districts: list[DistrictCode] = Field(min_length=1, max_length=100, description="District codes it serves")
    languages: list[LanguageCode] = Field(min_length=1, max_length=20, description="ISO 639-1 codes it serves in")
    capacity: int = Field(ge=0, le=100_000, description="Residents it can take at a time (0: none for now)")
    conditions: OfferingConditions

    @field_validator("districts", "languages")
    @classmethod
    def no_repeats(cls, values: list[Any]) -> list[Any]:
        return _unique(values, "entries")


class OfferingOut(BaseModel):
    id: uuid.UUID
    partner_id: str
    code: str
    name: Localized
    service_type: ServiceType
    districts: list[str]
    languages: list[str]
    conditions: Localized
    capacity: int
    places_taken: int = Field(description="Held by referrals not yet declined or completed")
    available: int = Field(description="capacity - places_taken (never below 0)")
    updated_at: dt.datetime


class OfferingForCase(OfferingOut):
    """An offering with room for a case's resident, as the caseworker sees it."""

    resident_consented: bool = Field(
        description="The resident consented to this partner (partner:<id>); a referral needs it"
    )


class ReferralIn(Input):
    offering_id: uuid.UUID = Field(description="An offering of GET /v1/cases/{case_id}/offerings")


class DeclineIn(Input):
    reason: DeclineReason


class CompleteIn(Input):
    outcome: ReferralOutcome


class ReferralStatusName(StrEnum):
    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"


class ReferralOut(BaseModel):
    """A referral. A partner sees its own, with the resident's pseudonymous id and nothing else about them; staff see
    the case it belongs to as well."""

    id: uuid.UUID
    partner_id: str
    offering_id: uuid.UUID
    offering_code: str
    service_type: ServiceType
    resident_id: uuid.UUID
    status: ReferralStatusName
    created_at: dt.datetime
    responded_at: dt.datetime | None
    decline_reason: DeclineReason | None
    outcome: ReferralOutcome | None
    completed_at: dt.datetime | None
    case_id: uuid.UUID | None = Field(default=None, description="Shown to staff only")
    program_code: str | None = Field(default=None, description="Shown to staff only")
    office_code: str | None = Field(default=None, description="Shown to staff only")
    referred_by: str | None = Field(default=None, description="Shown to staff only")


# ================================================================================================ capacity, open data


class ProgramDemand(BaseModel):
    program_code: str
    department: Department
    open_cases: int
    waiting_on_resident: int
    weighted_load: float
    arrivals: int = Field(description="Cases routed here in the window")
    arrivals_per_day: float
    decided: int = Field(description="Cases decided in the window")
    median_working_days_to_decision: float | None
    sla_compliance: float | None = Field(description="Share of the window's decisions made by the due date")
    breached_open: int


class ExpectedDemand(BaseModel):
    """Applications the offers standing in the office's districts may bring: the offers still unanswered, and the
    share of answered offers that were accepted (city-wide, over every answered offer of the program, when there are
    at least the take-up minimum group of them)."""

    program_code: str
    department: Department
    standing_offers: int
    take_up_rate: float | None = Field(description="Accepted / answered offers of the program (null: too few yet)")
    expected_applications: float | None = Field(description="standing_offers x take_up_rate")
    expected_weighted_load: float | None = Field(description="expected_applications x the program's case weight")


class HouseholdCaseCount(BaseModel):
    district_code: str
    open: int = Field(description="Waiting for a lead")
    active: int = Field(description="Led")
    closed: int


class OfficeDemand(BaseModel):
    office_code: str
    name: OfficeName
    capacity: OfficeCapacity
    open_cases: int
    weighted_load: float
    utilisation: float | None
    over_capacity: bool
    arrivals_per_day: float
    weighted_load_per_caseworker_hour: float | None
    programs: list[ProgramDemand]
    expected_demand: list[ExpectedDemand] = Field(
        default_factory=list, description="What proactive offers standing in its districts may bring (per program)"
    )
    household_cases: list[HouseholdCaseCount] = Field(
        default_factory=list,
        description="Household cases (integrated case management) the office holds, per district; the running ones "
        "count in open_cases and weighted_load",
    )


class CapacityReport(BaseModel):
    window_days: int
    window_start: dt.date
    today: dt.date
    offices: list[OfficeDemand]


class DatasetField(BaseModel):
    """One column of a dataset and what it means (DCAT-style: a field of the distribution's schema)."""

    name: str
    title: str
    description: str
    type: Literal["string", "integer", "number"]
    nullable: bool = Field(description="May be null: suppressed, or a rate over a group too small to show")


class Licence(BaseModel):
    name: str
    url: str


class Distribution(BaseModel):
    """Where and in which format the dataset is served (dcat:Distribution)."""

    media_type: str
    access_url: str


class DatasetInfo(BaseModel):
    """A dataset's metadata, after DCAT: ``dataset`` is dct:identifier, ``title`` and ``description`` dct:title and
    dct:description, ``licence`` dct:license, ``update_frequency`` dct:accrualPeriodicity (EU frequency vocabulary),
    ``publisher`` dct:publisher, ``keywords`` dcat:keyword, ``fields`` the columns and their meaning,
    ``distributions`` dcat:distribution."""

    dataset: str
    title: Localized
    description: str
    keywords: list[str]
    publisher: str
    licence: Licence
    update_frequency: str = Field(description="How often it changes (dct:accrualPeriodicity)")
    update_frequency_uri: str
    min_group_size: int = Field(description="Counts below this are never shown (null); zero is shown")
    suppression: str
    columns: list[str] = Field(description="The field names, in order (the CSV header)")
    fields: list[DatasetField]
    distributions: list[Distribution]


class Dataset(DatasetInfo):
    generated_on: dt.date
    rows: list[dict[str, str | int | float | None]]


# ================================================================================================ household cases

GoalKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


class HouseholdOpenIn(Input):
    """A caseworker opens a household case: the household's members (residents routing knows of) and why."""

    members: list[uuid.UUID] = Field(min_length=1, max_length=20, description="The members' resident ids")
    reason: Reason

    @field_validator("members")
    @classmethod
    def no_repeats(cls, values: list[Any]) -> list[Any]:
        return _unique(values, "members")


class HouseholdMemberIn(Input):
    resident_id: uuid.UUID


class LeadIn(Input):
    lead: StaffSubject = Field(description="The staff subject of the lead caseworker (of the household case's office)")


class PlanNeed(Input):
    domain: NeedDomain
    assessment: Reason = Field(description="What the assessment found")
    member_id: uuid.UUID | None = Field(default=None, description="The member it concerns (none: the household)")


class PlanGoal(Input):
    key: GoalKey = Field(description="The goal's name within the plan; services name the goal they serve")
    domain: NeedDomain
    text: Reason
    owner: StaffSubject
    target_date: dt.date


class PlanService(Input):
    """A service towards a goal: a public program (its case, its application, or an offer to apply) or a referral to
    a partner (made, or a service type to refer to), with its owner and date."""

    goal: GoalKey
    kind: Literal["program", "referral"]
    description: Reason
    owner: StaffSubject
    due_on: dt.date
    case_id: uuid.UUID | None = None
    application_id: uuid.UUID | None = None
    opportunity_id: uuid.UUID | None = None
    referral_id: uuid.UUID | None = None
    service_type: ServiceType | None = None


class PlanIn(Input):
    """The whole plan (each write is a new version; the earlier ones stay in the history)."""

    needs: list[PlanNeed] = Field(min_length=1, max_length=30)
    goals: list[PlanGoal] = Field(default=[], max_length=30)
    services: list[PlanService] = Field(default=[], max_length=60)


class FollowUpIn(Input):
    purpose: Reason
    owner: StaffSubject | None = Field(default=None, description="Default: the lead")
    due_in_working_days: int | None = Field(
        default=None, ge=1, le=120, description="The follow-up's SLA (default: the setting)"
    )


class FollowUpDoneIn(Input):
    result: LongText


class ConferenceParticipant(Input):
    name: Name
    role: Name = Field(description="e.g. lead, welfare caseworker, partner, the resident")
    office_code: OfficeCode | None = None


class ConferenceAction(Input):
    text: Reason
    owner: StaffSubject
    due_on: dt.date


class ConferenceIn(Input):
    held_on: dt.date
    participants: list[ConferenceParticipant] = Field(min_length=2, max_length=30)
    decisions: list[Reason] = Field(min_length=1, max_length=30)
    actions: list[ConferenceAction] = Field(default=[], max_length=30)


class HouseholdCloseIn(Input):
    outcome: HouseholdCaseOutcome
    note: LongText


class DepartmentCaseOut(BaseModel):
    """A member's department case as the lead sees it (read from the case itself, never copied)."""

    case_id: uuid.UUID
    application_id: uuid.UUID | None
    program_code: str
    program_name: Localized
    department: Department
    office_code: str
    status: CaseStatusName
    due_date: dt.date
    assignee: str | None
    decision: Decision | None
    reason_code: str | None
    decided_on: dt.date | None


class HouseholdMemberOut(BaseModel):
    resident_id: uuid.UUID
    added_by: str
    added_at: dt.datetime
    consented: bool = Field(description="Whether the member consented to case_management (then their cases show)")
    cases: list[DepartmentCaseOut] | None = Field(
        description="The member's department cases; null without their consent or for a caller who is not the lead"
    )


class FollowUpOut(BaseModel):
    id: uuid.UUID
    kind: Literal["follow_up", "closure_check"]
    purpose: str
    owner: str | None
    scheduled_on: dt.date
    sla_working_days: int
    due_date: dt.date
    done_at: dt.datetime | None
    done_by: str | None
    result: str | None
    missed_on: dt.date | None


class ConferenceOut(BaseModel):
    id: uuid.UUID
    held_on: dt.date
    participants: list[ConferenceParticipant]
    decisions: list[str]
    actions: list[ConferenceAction]
    recorded_by: str
    recorded_at: dt.datetime


class HouseholdCaseSummary(BaseModel):
    id: uuid.UUID
    status: Literal["open", "active", "closed"]
    district_code: str
    office_code: str
    lead: str | None
    trigger: Literal["automatic", "caseworker"]
    escalated: bool
    members: int
    plan_version: int
    opened_at: dt.datetime
    closed_at: dt.datetime | None


class HouseholdCaseOut(BaseModel):
    id: uuid.UUID
    status: Literal["open", "active", "closed"]
    district_code: str
    office_code: str
    office_name: Localized
    lead: str | None
    trigger: Literal["automatic", "caseworker"]
    opened_by: str
    opened_at: dt.datetime
    opened_reason: dict[str, Any]
    routing: RoutingOut
    escalated: bool
    members: list[HouseholdMemberOut]
    plan: dict[str, Any] | None = Field(description="The current plan (needs, goals, services); null before the first")
    plan_version: int
    follow_ups: list[FollowUpOut]
    conferences: list[ConferenceOut]
    outcome: HouseholdCaseOutcome | None
    closure_note: str | None
    closed_at: dt.datetime | None
    follow_up_check_on: dt.date | None
    history: list[HistoryEntry]
    version: int
