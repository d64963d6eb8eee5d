"""The intake service's tables: residents and their consents, the representatives they name and the authorities they
give at a counter, applications, the status view assembled from downstream events (determinations, cases, referrals
to partners, notifications, the timeline), feedback, the access log, and a resident's requests about their data
(exports, erasure)."""

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
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.audit import AuditLog
from shared.tables import NAMING_CONVENTION, BigId, ServiceModels, platform_tables


class Base(ServiceModels, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


platform = platform_tables(Base.metadata)
audit_log = AuditLog(platform)


# ---------------------------------------------------------------------------------------------- residents


class Resident(Base):
    """A resident's record. The id is the pseudonymous id every event carries; the rest stays in intake.

    Erased (``erased_at``), the record is a stub: its personal columns are null — the contact details only once the
    resident was told the result (``erasure.py``) — and it stays only while records the law keeps point at it. No
    query made for a caller finds an erased resident (``repository.resident_scope``): the columns below are typed
    for a live record, which is all the rest of intake ever sees."""

    __tablename__ = "residents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=True)
    birth_date: Mapped[dt.date] = mapped_column(Date, nullable=True)
    district_code: Mapped[str] = mapped_column(String(5), nullable=True)
    address: Mapped[str] = mapped_column(String(500), nullable=True)
    household: Mapped[list[Any]] = mapped_column(JSON, nullable=True)
    # The household (세대) the registry lists the resident in: its key as the registry gives it (staff copy it), and
    # the pseudonymous id events carry for it (``RegistryHousehold``). Residents with the same id live together.
    registry_household: Mapped[str | None] = mapped_column(String(40))
    household_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    preferred_language: Mapped[str] = mapped_column(String(2), nullable=True)
    preferred_channels: Mapped[list[Any]] = mapped_column(JSON, nullable=True)
    vulnerability: Mapped[list[Any]] = mapped_column(JSON, nullable=True)
    # Increases with every change; resident.updated carries it so consumers keep the newest.
    version: Mapped[int] = mapped_column(Integer)
    consent_version: Mapped[int] = mapped_column(Integer, default=0)
    registered_by: Mapped[str] = mapped_column(String(255))
    assisted: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    erased_at: Mapped[dt.datetime | None]


class RegistryHousehold(Base):
    """The pseudonymous id of a registered household (세대): a random id for each registry key, made the first time a
    resident is registered in it, so that the key itself never leaves intake."""

    __tablename__ = "registry_households"

    registry_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True)
    created_at: Mapped[dt.datetime]


class Consent(Base):
    """The current answer for one purpose."""

    __tablename__ = "consents"

    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(100), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[dt.datetime]


class ConsentChange(Base):
    """Every change of a consent, kept for good: who changed what, when."""

    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(100))
    granted: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[dt.datetime]
    changed_by: Mapped[str] = mapped_column(String(255))
    changed_by_role: Mapped[str] = mapped_column(String(20))


# ---------------------------------------------------------------------------------------------- acting for a resident


class Representation(Base):
    """A representative the resident named (a family member, a legal guardian, a care worker): they sign in as
    themselves (a resident token of their own: ``representative_id``) and act for the resident within the scopes,
    through ``expires_on`` (a date in the city). Revoked, it is kept: the access log points at it."""

    __tablename__ = "representations"
    __table_args__ = (Index("ix_representations_representative_resident", "representative_id", "resident_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    representative_id: Mapped[uuid.UUID]
    # How the resident names them, and what they are to the resident (family | legal_guardian | care_worker).
    representative_name: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(20))
    expires_on: Mapped[dt.date] = mapped_column(Date)
    # 1 when named, 2 when revoked: representation.changed carries it so a consumer keeps the newest.
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(255))
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(255))

    scope_rows: Mapped[list[RepresentationScope]] = relationship(
        order_by="RepresentationScope.scope", lazy="selectin", cascade="all, delete-orphan"
    )

    @property
    def scopes(self) -> list[str]:
        return [row.scope for row in self.scope_rows]

    def active_on(self, today: dt.date) -> bool:
        return self.revoked_at is None and self.expires_on >= today


class RepresentationScope(Base):
    """One thing a representative may do: apply, answer, withdraw, consent, read_messages. A row each, so that a
    query can ask "may this caller see that resident's applications" in SQL."""

    __tablename__ = "representation_scopes"

    representation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("representations.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(20), primary_key=True)


class CounterAuthority(Base):
    """How a resident agreed, at an office's counter, that its staff act for them: a form they signed or their ID
    checked, with a reference (the form's number, the kind of ID seen — never the ID's number). Valid in that office
    through ``valid_until`` unless revoked; kept for good, as the access log points at it."""

    __tablename__ = "counter_authorities"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str] = mapped_column(String(100))
    office_code: Mapped[str] = mapped_column(String(50))
    valid_until: Mapped[dt.date] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime]
    recorded_by: Mapped[str] = mapped_column(String(255))
    recorded_by_name: Mapped[str | None] = mapped_column(String(200))
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(255))

    def active_on(self, today: dt.date) -> bool:
        return self.revoked_at is None and self.valid_until >= today


# ---------------------------------------------------------------------------------------------- applications


class Application(Base):
    __tablename__ = "applications"
    __table_args__ = (Index("ix_applications_resident_submitted", "resident_id", "submitted_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"))
    life_event: Mapped[str] = mapped_column(String(50))
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(10))
    application_date: Mapped[dt.date] = mapped_column(Date)
    submitted_at: Mapped[dt.datetime] = mapped_column(index=True)
    filed_by: Mapped[str | None] = mapped_column(String(255))
    # The overall status, derived from the parts and stored so that lists can filter on it.
    status: Mapped[str] = mapped_column(String(20), index=True)
    withdrawn_at: Mapped[dt.datetime | None]
    withdrawal_reason: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[dt.datetime]


class Determination(Base):
    """The newest eligibility round of an application (a late, lower round never replaces it)."""

    __tablename__ = "determinations"

    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), primary_key=True)
    determination_id: Mapped[uuid.UUID]
    round: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(30))
    evaluated_at: Mapped[dt.datetime]
    programs: Mapped[list[Any]] = mapped_column(JSON)


class Case(Base):
    """What the resident may know of a case in a department's office, assembled from routing's events in whatever
    order they arrive. Each field remembers the time of the event that set it, so an older event never overwrites a
    newer one."""

    __tablename__ = "cases"

    case_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    program_code: Mapped[str] = mapped_column(String(100))
    department: Mapped[str] = mapped_column(String(30))
    office_code: Mapped[str] = mapped_column(String(50))
    office_name: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    office_at: Mapped[dt.datetime]
    # When the office name and due date were last set (by case.routed or case.transferred).
    routing_at: Mapped[dt.datetime | None]
    due_date: Mapped[dt.date | None] = mapped_column(Date)
    priority: Mapped[int | None] = mapped_column(Integer)
    automatic: Mapped[bool | None] = mapped_column(Boolean)
    routed_at: Mapped[dt.datetime | None]
    # open | closed (as routed) | decided | closed; decided and closed are final.
    state: Mapped[str] = mapped_column(String(20))
    state_at: Mapped[dt.datetime]
    assigned: Mapped[bool] = mapped_column(Boolean, default=False)
    assigned_at: Mapped[dt.datetime | None]
    info_questions: Mapped[list[Any] | None] = mapped_column(JSON)
    info_requested_at: Mapped[dt.datetime | None]
    info_answered_at: Mapped[dt.datetime | None]
    decision: Mapped[str | None] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(100))
    decision_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[dt.datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(String(50))
    closed_at: Mapped[dt.datetime | None]
    escalated_at: Mapped[dt.datetime | None]
    sla_breached_at: Mapped[dt.datetime | None]
    first_seen_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Referral(Base):
    """A referral of the resident to a partner's service (routing's ``referral.*`` events), as the resident sees it:
    whichever event arrives first creates it; a later state never gives way to an earlier one."""

    __tablename__ = "referrals"

    referral_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    case_id: Mapped[uuid.UUID]
    program_code: Mapped[str] = mapped_column(String(100))
    partner_id: Mapped[str] = mapped_column(String(40))
    offering_name: Mapped[dict[str, Any]] = mapped_column(JSON)
    service_type: Mapped[str] = mapped_column(String(40))
    # referred | accepted | declined | completed; declined and completed are final.
    status: Mapped[str] = mapped_column(String(20))
    status_at: Mapped[dt.datetime]
    decline_reason: Mapped[str | None] = mapped_column(String(30))
    outcome: Mapped[str | None] = mapped_column(String(30))
    referred_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]


class ApplicationOffice(Base):
    """Every office a case of the application is or was in: what lets that office's staff read it."""

    __tablename__ = "application_offices"

    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), primary_key=True)
    office_code: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)


class Notification(Base):
    __tablename__ = "notifications"

    notification_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    channel: Mapped[str] = mapped_column(String(10))
    template: Mapped[str] = mapped_column(String(100))
    # sent | failed
    status: Mapped[str] = mapped_column(String(10))
    status_at: Mapped[dt.datetime]
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int | None] = mapped_column(Integer)
    source_event_ids: Mapped[list[Any]] = mapped_column(JSON)


class TimelineEntry(Base):
    """One thing that happened to an application; at most one entry per event id."""

    __tablename__ = "timeline_entries"
    __table_args__ = (Index("ix_timeline_entries_application_time", "application_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[dt.datetime]
    program_code: Mapped[str | None] = mapped_column(String(100))
    case_id: Mapped[uuid.UUID | None]
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),)

    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- proactive offers


class Opportunity(Base):
    """An offer put before a resident: screening found them eligible for a program they never applied to, and they
    consent to being told. Accepted (an application is filed), declined (with a reason) or expired; kept for good."""

    __tablename__ = "opportunities"
    __table_args__ = (
        UniqueConstraint("resident_id", "program_code", name="uq_opportunities_resident_program"),
        Index("ix_opportunities_status_expires", "status", "expires_on"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    program_code: Mapped[str] = mapped_column(String(100))
    program_name: Mapped[dict[str, Any]] = mapped_column(JSON)
    department: Mapped[str] = mapped_column(String(30))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_period: Mapped[str | None] = mapped_column(String(10))
    screening_id: Mapped[uuid.UUID]
    found_at: Mapped[dt.datetime]
    offered_at: Mapped[dt.datetime]
    # The last day it may be accepted (a date in the city): offered day + the intake setting offer_valid_days.
    expires_on: Mapped[dt.date] = mapped_column(Date)
    # offered | accepted | declined | expired
    status: Mapped[str] = mapped_column(String(10))
    responded_at: Mapped[dt.datetime | None]
    acted_as: Mapped[str | None] = mapped_column(String(20))
    acted_by: Mapped[str | None] = mapped_column(String(255))
    decline_reason: Mapped[str | None] = mapped_column(String(30))
    decline_note: Mapped[str | None] = mapped_column(String(500))
    expired_reason: Mapped[str | None] = mapped_column(String(20))
    application_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("applications.id"))
    updated_at: Mapped[dt.datetime]


class ScreeningQuestion(Base):
    """A near miss's one question (``screening.question_asked``): which fact, and why. Answered once; withdrawn when
    the resident withdraws their proactive-screening consent."""

    __tablename__ = "screening_questions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("residents.id"), index=True)
    program_code: Mapped[str] = mapped_column(String(100))
    program_name: Mapped[dict[str, Any]] = mapped_column(JSON)
    department: Mapped[str] = mapped_column(String(30))
    fact: Mapped[str] = mapped_column(String(100))
    fact_type: Mapped[str] = mapped_column(String(20))
    question: Mapped[dict[str, Any]] = mapped_column(JSON)
    choices: Mapped[list[Any] | None] = mapped_column(JSON)
    why: Mapped[dict[str, Any]] = mapped_column(JSON)
    asked_at: Mapped[dt.datetime]
    # open | answered | withdrawn
    status: Mapped[str] = mapped_column(String(10))
    answer: Mapped[Any] = mapped_column(JSON, nullable=True)
    answered_at: Mapped[dt.datetime | None]
    acted_as: Mapped[str | None] = mapped_column(String(20))
    acted_by: Mapped[str | None] = mapped_column(String(255))


# ---------------------------------------------------------------------------------------------- rights over one's data


class DataExport(Base):
    """A resident's request for everything held about them (개인정보 보호법 제35조, 제35조의2): gathered from every
    service by intake's export worker into one JSON document, kept ``export_retention_days`` for them to fetch."""

    __tablename__ = "data_exports"
    __table_args__ = (Index("ix_data_exports_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # pending | ready | failed
    status: Mapped[str] = mapped_column(String(10))
    requested_at: Mapped[dt.datetime]
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_by_role: Mapped[str] = mapped_column(String(20))
    authority_kind: Mapped[str | None] = mapped_column(String(32))
    authority_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None]
    # Per service: {"status": "gathered" | "unavailable", "error": ...}.
    parts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(500))
    completed_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]


class ErasureRequest(Base):
    """A resident's request to erase their data (개인정보 보호법 제36조): intake erased its part at once; each other
    service answers with what it erased and kept (:class:`ErasureConfirmation`). Kept as the record that the request
    was handled (see retention.yaml); the contact details stay on the resident's stub until ``contact_kept_until``
    so that the resident can be told the result."""

    __tablename__ = "erasure_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    # in_progress | completed
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(String(500))
    requested_at: Mapped[dt.datetime]
    requested_on: Mapped[dt.date] = mapped_column(Date)
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_by_role: Mapped[str] = mapped_column(String(20))
    authority_kind: Mapped[str | None] = mapped_column(String(32))
    authority_id: Mapped[str | None] = mapped_column(String(64))
    # [{"application_id", "decided_on"}]: the applications whose decision files the law keeps.
    decision_files: Mapped[list[Any]] = mapped_column(JSON)
    completed_at: Mapped[dt.datetime | None]
    contact_kept_until: Mapped[dt.datetime]
    contact_erased_at: Mapped[dt.datetime | None]

    confirmations: Mapped[list[ErasureConfirmation]] = relationship(
        order_by="ErasureConfirmation.service", lazy="selectin", cascade="all, delete-orphan"
    )


class ErasureConfirmation(Base):
    """One service's answer to an erasure request (``resident.erased``): what it erased and what it keeps, until
    when. Intake's own is written with the request."""

    __tablename__ = "erasure_confirmations"

    erasure_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("erasure_requests.id"), primary_key=True)
    service: Mapped[str] = mapped_column(String(20), primary_key=True)
    # pending | erased
    status: Mapped[str] = mapped_column(String(10))
    erased: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kept: Mapped[list[Any]] = mapped_column(JSON, default=list)
    erased_at: Mapped[dt.datetime | None]


class HouseholdCaseStatus(Base):
    """A household case (integrated case management, routing's ``household_case.*`` events) as each member sees it in
    their status: whichever event arrives first creates the row; a closed one is never reopened by a late event."""

    __tablename__ = "household_cases"

    household_case_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)
    # open | closed (a lead working it is routing's business; the member sees the team and the plan's version)
    status: Mapped[str] = mapped_column(String(10))
    office_code: Mapped[str] = mapped_column(String(50))
    office_name: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    plan_version: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(20))
    follow_up_check_on: Mapped[dt.date | None] = mapped_column(Date)
    opened_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]
