"""The routing service's tables: offices, the applications it has heard of, cases with their history, SLA breaches,
partners' offerings and the referrals to them, what routing learnt from intake's events (residents' consents, their
feedback), the residents who asked for erasure, and the audit log of staff reads."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.audit import AuditLog
from shared.tables import NAMING_CONVENTION, BigId, ServiceModels, platform_tables


class Base(ServiceModels, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


platform = platform_tables(Base.metadata)
audit_log = AuditLog(platform)


class CaseStatus:
    """A case is *active* while open, assigned or waiting on the resident; decided and closed are final."""

    OPEN = "open"
    ASSIGNED = "assigned"
    WAITING_ON_RESIDENT = "waiting_on_resident"
    DECIDED = "decided"
    CLOSED = "closed"

    ACTIVE = (OPEN, ASSIGNED, WAITING_ON_RESIDENT)
    FINAL = (DECIDED, CLOSED)
    ALL = (OPEN, ASSIGNED, WAITING_ON_RESIDENT, DECIDED, CLOSED)


APPLICATION, OUTREACH = "application", "outreach"


class Office(Base):
    __tablename__ = "offices"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name_ko: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    departments: Mapped[list[str]]
    # Jurisdiction: the districts (administrative codes) whose residents this office serves for its departments.
    districts: Mapped[list[str]]
    languages: Mapped[list[str]]
    neighbours: Mapped[list[str]]
    supervisors: Mapped[list[str]]
    caseworker_hours_week: Mapped[int] = mapped_column(Integer)
    # The weighted load (sum of the case weights of open cases) at which the office counts as full.
    active_case_ceiling: Mapped[float] = mapped_column(Float)
    # City-wide office taking a department's cases for districts no local office serves for it.
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class ApplicationRecord(Base):
    """What routing knows of an application: the newest evaluation round applied, and whether it was withdrawn."""

    __tablename__ = "applications"

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID]
    last_round: Mapped[int] = mapped_column(Integer, default=0)
    withdrawn_at: Mapped[dt.datetime | None]
    # How the resident applied (application.submitted, or their feedback): open data counts take-up per channel.
    channel: Mapped[str | None] = mapped_column(String(10))
    # The life event the resident applied for (application.submitted): a crisis one (a job lost, a death in the
    # family) is a flag for integrated case management (households.py).
    life_event: Mapped[str | None] = mapped_column(String(60))
    updated_at: Mapped[dt.datetime]


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # One case per application and program, whatever the redeliveries.
        UniqueConstraint("application_id", "program_code", name="uq_cases_application_program"),
        # The queue: one office's cases by status, priority and due date.
        Index("ix_cases_queue", "office_code", "status", "priority", "due_date"),
        # The SLA timer: active cases by due date.
        Index("ix_cases_status_due", "status", "due_date"),
        # A resident's cases, and their active ones (households, erasure). With the status in it, SQLite's planner
        # takes this index for "these residents' active cases": with the resident's alone it took ix_cases_status_due
        # and read every active case of every resident, a batch's transaction at a time (routing's longest stalls).
        Index("ix_cases_resident_status", "resident_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # application: a program of an application; outreach: a visit to a vulnerable resident who left an offer
    # unanswered (outreach.py), about the offer's program, with no application (yet).
    kind: Mapped[str] = mapped_column(String(16), default="application", server_default="application")
    application_id: Mapped[uuid.UUID | None]
    opportunity_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    resident_id: Mapped[uuid.UUID]
    program_code: Mapped[str] = mapped_column(String(100))
    program_name_ko: Mapped[str] = mapped_column(String(300))
    program_name_en: Mapped[str] = mapped_column(String(300))
    department: Mapped[str] = mapped_column(String(40))
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"))
    status: Mapped[str] = mapped_column(String(30))
    priority: Mapped[int] = mapped_column(Integer)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)

    # The newest determination applied to the case.
    round: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(30))
    rule_version: Mapped[int] = mapped_column(Integer)
    missing: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_period: Mapped[str | None] = mapped_column(String(10))
    sla_days: Mapped[int] = mapped_column(Integer)
    case_weight: Mapped[float] = mapped_column(Float)
    overflow_allowed: Mapped[bool] = mapped_column(Boolean)

    # The resident's context (pseudonymous: no name, no contact details).
    district_code: Mapped[str] = mapped_column(String(10))
    preferred_language: Mapped[str] = mapped_column(String(8))
    vulnerability: Mapped[list[str]]
    interpreter_needed: Mapped[bool] = mapped_column(Boolean, default=False)

    # The routing decision: the rule, its explanation, every candidate with its load and ceiling.
    routing: Mapped[dict[str, Any]]

    # SLA
    application_date: Mapped[dt.date] = mapped_column(Date)
    routed_on: Mapped[dt.date] = mapped_column(Date)
    due_date: Mapped[dt.date] = mapped_column(Date)
    paused_since: Mapped[dt.date | None] = mapped_column(Date)
    paused_working_days: Mapped[int] = mapped_column(Integer, default=0)
    breached_on: Mapped[dt.date | None] = mapped_column(Date)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    escalated_at: Mapped[dt.datetime | None]

    assignee: Mapped[str | None] = mapped_column(String(255))
    assigned_at: Mapped[dt.datetime | None]

    decision: Mapped[str | None] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(60))
    decision_note: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[dt.datetime | None]
    decided_on: Mapped[dt.date | None] = mapped_column(Date)
    closed_reason: Mapped[str | None] = mapped_column(String(40))
    closed_at: Mapped[dt.datetime | None]

    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    # Every write is "UPDATE ... WHERE version = <the version read>": a concurrent change makes it touch no row.
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}

    @property
    def is_active(self) -> bool:
        return self.status in CaseStatus.ACTIVE

    @property
    def is_outreach(self) -> bool:
        return self.kind == OUTREACH


class CaseEntry(Base):
    """One line of a case's history: who did what, when, with the details (notes are entries too)."""

    __tablename__ = "case_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]]


class SlaBreach(Base):
    """A breach is recorded once per case and due date; the unique key makes the timer's event fire exactly once."""

    __tablename__ = "sla_breaches"
    __table_args__ = (UniqueConstraint("case_id", "due_date", name="uq_sla_breaches_case_due"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"))
    office_code: Mapped[str] = mapped_column(String(40))
    due_date: Mapped[dt.date] = mapped_column(Date)
    breached_on: Mapped[dt.date] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime]


class Offer(Base):
    """What routing knows of an offer intake put before a resident (``opportunity.*``): where the resident lives and
    whether they are one to visit, the office that would take an application (expected demand), what became of it
    (take-up), and the outreach it may call for."""

    __tablename__ = "offers"
    __table_args__ = (
        Index("ix_offers_status_outreach_due", "status", "outreach_due_on"),
        Index("ix_offers_program_district", "program_code", "district_code"),
    )

    opportunity_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    program_code: Mapped[str] = mapped_column(String(100))
    program_name_ko: Mapped[str] = mapped_column(String(300))
    program_name_en: Mapped[str] = mapped_column(String(300))
    department: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_period: Mapped[str | None] = mapped_column(String(10))
    district_code: Mapped[str] = mapped_column(String(10))
    preferred_language: Mapped[str] = mapped_column(String(8))
    vulnerability: Mapped[list[str]]
    # The office an application for the program would go to (its department, the resident's district).
    office_code: Mapped[str | None] = mapped_column(String(40))
    offered_on: Mapped[dt.date] = mapped_column(Date)
    expires_on: Mapped[dt.date] = mapped_column(Date)
    # offered | accepted | declined | expired
    status: Mapped[str] = mapped_column(String(10))
    status_at: Mapped[dt.datetime]
    application_id: Mapped[uuid.UUID | None]
    # For a resident to visit: the last working day they have to answer before an outreach case opens.
    outreach_due_on: Mapped[dt.date | None] = mapped_column(Date)
    outreach_case_id: Mapped[uuid.UUID | None]
    updated_at: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- what intake told


class ResidentConsents(Base):
    """A resident's current consents as intake's ``consent.changed`` told them (the highest version wins): a referral
    to a partner needs the resident's ``partner:<partner id>``."""

    __tablename__ = "resident_consents"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    consents: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime]

    def consented(self, purpose: str) -> bool:
        return self.consents.get(purpose) is True


class ResidentFeedback(Base):
    """A resident's rating of an application (``feedback.given``; one per application). The comment stays in intake."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),)

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(10))
    given_at: Mapped[dt.datetime]
    recorded_at: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- partners as providers


class ReferralStatus:
    """A referral holds a place of its offering while referred or accepted; declined and completed give it back."""

    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COMPLETED = "completed"

    HOLDING = (REFERRED, ACCEPTED)
    ALL = (REFERRED, ACCEPTED, DECLINED, COMPLETED)


class Offering(Base):
    """What a partner (an NGO, a private provider) offers: a service in some districts and languages, with room for
    ``capacity`` residents at a time; ``places_taken`` counts the referrals holding a place."""

    __tablename__ = "offerings"
    __table_args__ = (
        UniqueConstraint("partner_id", "code", name="uq_offerings_partner_code"),
        CheckConstraint("places_taken >= 0", name="places_taken_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(40))
    code: Mapped[str] = mapped_column(String(60))
    name_ko: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    service_type: Mapped[str] = mapped_column(String(40), index=True)
    districts: Mapped[list[str]]
    languages: Mapped[list[str]]
    conditions_ko: Mapped[str] = mapped_column(Text)
    conditions_en: Mapped[str] = mapped_column(Text)
    capacity: Mapped[int] = mapped_column(Integer)
    places_taken: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(255))

    @property
    def available(self) -> int:
        return max(self.capacity - self.places_taken, 0)


class Referral(Base):
    """A resident referred by a caseworker, with the resident's consent, to a partner's offering."""

    __tablename__ = "referrals"
    __table_args__ = (Index("ix_referrals_partner_status", "partner_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    offering_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("offerings.id"), index=True)
    partner_id: Mapped[str] = mapped_column(String(40))
    offering_code: Mapped[str] = mapped_column(String(60))
    service_type: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    application_id: Mapped[uuid.UUID]
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    program_code: Mapped[str] = mapped_column(String(100))
    # Where the case was when the referral was made (the case may move on; open data keeps this).
    office_code: Mapped[str] = mapped_column(String(40))
    district_code: Mapped[str] = mapped_column(String(10))
    language: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20))
    referred_by: Mapped[str] = mapped_column(String(255))
    referred_on: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime]
    responded_at: Mapped[dt.datetime | None]
    decline_reason: Mapped[str | None] = mapped_column(String(30))
    outcome: Mapped[str | None] = mapped_column(String(30))
    completed_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]
    # A partner's answers race nothing but a retry; the version check still makes two at once a 409.
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}

    @property
    def holds_place(self) -> bool:
        return self.status in ReferralStatus.HOLDING


# ---------------------------------------------------------------------------------------------- erasure


class ResidentHousehold(Base):
    """The registered household (세대) a resident lives in, by the pseudonymous id intake keeps for it, as the latest
    event about the resident carried it (``ResidentContext.household_id``): residents with the same id live together,
    and integrated case management takes them on together."""

    __tablename__ = "resident_households"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    household_id: Mapped[uuid.UUID] = mapped_column(index=True)
    seen_at: Mapped[dt.datetime]


class ResidentErasure(Base):
    """A resident who asked for erasure (``resident.erasure_requested``): what was erased and what is kept, until when
    (retention.yaml). While it stays, an event about the resident arriving late is not stored again."""

    __tablename__ = "resident_erasures"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    erasure_id: Mapped[uuid.UUID]
    requested_at: Mapped[dt.datetime]
    erased_at: Mapped[dt.datetime]
    erased: Mapped[dict[str, Any]]
    kept: Mapped[list[Any]]


# ---------------------------------------------------------------------------------------------- household cases


class HouseholdCaseStatus:
    """A household case is open (waiting for a lead), active (a lead works it) or closed (with an outcome)."""

    OPEN = "open"
    ACTIVE = "active"
    CLOSED = "closed"

    RUNNING = (OPEN, ACTIVE)
    ALL = (OPEN, ACTIVE, CLOSED)


class HouseholdCase(Base):
    """A household's integrated case (통합사례관리): one per household, in the district's integrated case-management
    office. It holds no copy of its members' department cases: they are read from ``cases`` by the members' ids."""

    __tablename__ = "household_cases"
    __table_args__ = (Index("ix_household_cases_office_status", "office_code", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    district_code: Mapped[str] = mapped_column(String(10))
    preferred_language: Mapped[str] = mapped_column(String(8))
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"))
    # The routing decision that chose the office (policy.route, department ``case_management``).
    routing: Mapped[dict[str, Any]]
    case_weight: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(10))
    # automatic | caseworker; why (the departments and flags that met the rule, or the caseworker's reason)
    trigger: Mapped[str] = mapped_column(String(12))
    opened_by: Mapped[str] = mapped_column(String(255))
    opened_reason: Mapped[dict[str, Any]]
    opened_at: Mapped[dt.datetime]
    opened_on: Mapped[dt.date] = mapped_column(Date)
    lead: Mapped[str | None] = mapped_column(String(255))
    lead_assigned_at: Mapped[dt.datetime | None]
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    # The shared plan as last written (needs by domain, goals, services); every version is in the history.
    plan: Mapped[dict[str, Any]]
    plan_version: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(20))
    closure_note: Mapped[str | None] = mapped_column(Text)
    closed_by: Mapped[str | None] = mapped_column(String(255))
    closed_at: Mapped[dt.datetime | None]
    closed_on: Mapped[dt.date | None] = mapped_column(Date)
    follow_up_check_on: Mapped[dt.date | None] = mapped_column(Date)
    follow_up_check_id: Mapped[uuid.UUID | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}

    @property
    def is_running(self) -> bool:
        return self.status in HouseholdCaseStatus.RUNNING


class HouseholdMember(Base):
    """A resident of a household case. ``open_resident_id`` is the resident's id while the case runs and NULL after:
    its unique key makes a resident a member of one running household case at most (one per household)."""

    __tablename__ = "household_members"
    __table_args__ = (UniqueConstraint("household_case_id", "resident_id", name="uq_household_members_case_resident"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    household_case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("household_cases.id"), index=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    open_resident_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    added_by: Mapped[str] = mapped_column(String(255))
    added_at: Mapped[dt.datetime]


class HouseholdEntry(Base):
    """One line of a household case's history, append-only: opened, lead, plan versions, follow-ups, conferences,
    escalations, closure."""

    __tablename__ = "household_case_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    household_case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("household_cases.id"), index=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]]


class HouseholdFollowUp(Base):
    """A scheduled follow-up of a household case, due within its own SLA in working days; one missed is recorded
    once (``missed_on``) and escalated to the office's supervisors."""

    __tablename__ = "household_follow_ups"
    __table_args__ = (Index("ix_household_follow_ups_open_due", "done_at", "missed_on", "due_date"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    household_case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("household_cases.id"), index=True)
    # follow_up (scheduled by the lead) | closure_check (the check months after closure)
    kind: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))
    scheduled_on: Mapped[dt.date] = mapped_column(Date)
    sla_working_days: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[dt.date] = mapped_column(Date)
    done_at: Mapped[dt.datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[str | None] = mapped_column(Text)
    missed_on: Mapped[dt.date | None] = mapped_column(Date)
    # The working day the lead was reminded it falls due (once, before it can be missed).
    reminded_on: Mapped[dt.date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}


class HouseholdConference(Base):
    """A case conference (사례회의) on a household case: who took part, what was decided, the actions agreed."""

    __tablename__ = "household_conferences"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    household_case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("household_cases.id"), index=True)
    held_on: Mapped[dt.date] = mapped_column(Date)
    participants: Mapped[list[Any]]
    decisions: Mapped[list[Any]]
    actions: Mapped[list[Any]]
    recorded_by: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[dt.datetime]
