"""The eligibility service's tables: the catalogue (programs, rule versions, reference tables), what is known of
residents (the registry projection, consents, department facts), applications and their determinations, the offices
their cases are in, screenings, and the audit log of staff reading personal data."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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

# ---------------------------------------------------------------------------------------------- the catalogue


class ProgramRow(Base):
    __tablename__ = "programs"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    department: Mapped[str] = mapped_column(String(32), index=True)
    # The program's attributes (names, life events, automatic, SLA, overflow, weight ...): specs.ProgramAttributes.
    attributes: Mapped[dict[str, Any]]
    origin: Mapped[str] = mapped_column(String(16))  # seed | api
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class RuleVersionRow(Base):
    """A version of a program's rule. Never edited once in force; a newer version replaces it from its own date."""

    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("program_code", "version", name="uq_rule_versions_program_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    program_code: Mapped[str] = mapped_column(ForeignKey("programs.code"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[dt.date] = mapped_column(Date)
    effective_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # The whole version (specs.VersionSpec as JSON) and its hash.
    document: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    # The hash of the YAML version it was seeded from (so a re-seed recognises it even if its date had to move).
    seed_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    origin: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    # A version not yet in force may be replaced by a newer PUT; it is kept, marked, for the record.
    superseded_at: Mapped[dt.datetime | None]

    @property
    def superseded(self) -> bool:
        return self.superseded_at is not None


class MedianIncomeRow(Base):
    """기준 중위소득 by year and household size (versioned reference data)."""

    __tablename__ = "median_incomes"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_size: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[dt.date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(Text)


class CatalogueStateRow(Base):
    """One row whose revision grows with every change of the catalogue, so each process knows to reload."""

    __tablename__ = "catalogue_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- residents and facts


class ResidentRow(Base):
    """The latest registry facts (``resident.updated``) and consents (``consent.changed``) of a resident."""

    __tablename__ = "residents"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    registry_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    birth_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    district_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    household: Mapped[list[Any] | None]
    vulnerability: Mapped[list[Any] | None]
    preferred_language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    registry_updated_at: Mapped[dt.datetime | None]
    consent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    consents: Mapped[dict[str, Any] | None]
    consent_changed_at: Mapped[dt.datetime | None]
    proactive_screening: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class DepartmentFactRow(Base):
    """A fact a department reported about a resident, with its source, observation time and validity."""

    __tablename__ = "department_facts"
    __table_args__ = (
        UniqueConstraint("report_id", "name", name="uq_department_facts_report_name"),
        # A screening reads every fact of a page of residents in resident order. PostgreSQL reads the heap pages the
        # index points to in bulk (a bitmap scan); SQLite would look each fact up in the table, one random read per
        # fact, so on SQLite the index holds every column the screening reads (a covering index: one ordered scan).
        # A JSON column cannot be a key of a PostgreSQL B-tree, hence one index per backend (migration 0009).
        Index("ix_department_facts_resident_name", "resident_id", "name").ddl_if(dialect="postgresql"),
        Index(
            "ix_department_facts_resident_covering",
            "resident_id",
            "name",
            "department",
            "observed_at",
            "valid_until",
            "value",
        ).ddl_if(dialect="sqlite"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[uuid.UUID]
    resident_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[Any] = mapped_column(JSON)
    department: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(100))
    observed_at: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime | None]
    reported_at: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- applications


class ApplicationRow(Base):
    """What eligibility knows of an application: its life event, date, declared answers and evaluation rounds.

    ``pending`` rows hold answers or a withdrawal that arrived before the submission itself (events may be
    reordered); the submission completes them."""

    __tablename__ = "applications"

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | open | withdrawn
    life_event: Mapped[str | None] = mapped_column(String(32), nullable=True)
    application_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    declared: Mapped[dict[str, Any]]
    # When each declared answer was given (ISO times), so a late redelivery never overwrites a newer answer.
    answered_at: Mapped[dict[str, Any]]
    resident_context: Mapped[dict[str, Any] | None]
    # The programs an application filed by accepting an offer is judged for (null: its life event's).
    programs: Mapped[list[Any] | None]
    round: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[dt.datetime | None]
    withdrawn_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]


class EvaluationRoundRow(Base):
    """One evaluation of an application: one ``eligibility.determined`` (its id is the determination id)."""

    __tablename__ = "evaluation_rounds"
    __table_args__ = (UniqueConstraint("application_id", "round", name="uq_evaluation_rounds_application_round"),)

    determination_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.application_id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(32))
    evaluated_at: Mapped[dt.datetime]


class DeterminationRow(Base):
    """One program's determination in one round, with the rule version it was judged by and its explanation."""

    __tablename__ = "determinations"
    __table_args__ = (
        UniqueConstraint("application_id", "round", "program_code", name="uq_determinations_round_program"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.application_id"), index=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    round: Mapped[int] = mapped_column(Integer)
    program_code: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The whole ProgramDetermination (criteria, missing facts, error ...).
    determination: Mapped[dict[str, Any]]
    evaluated_at: Mapped[dt.datetime]


class CaseOfficeRow(Base):
    """Where each case of an application is now (``case.routed``, ``case.transferred``): what lets that office's
    caseworkers and supervisors read the application's determinations. A projection of routing's cases."""

    __tablename__ = "case_offices"

    case_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(index=True)
    office_code: Mapped[str] = mapped_column(String(50))
    # When the case came to this office (routed_at or transferred_at): an older event arriving late moves nothing.
    office_since: Mapped[dt.datetime]


# ---------------------------------------------------------------------------------------------- screenings


class ScreeningRow(Base):
    __tablename__ = "screenings"

    screening_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(255))
    as_of: Mapped[dt.date] = mapped_column(Date)
    programs: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(16))
    residents_screened: Mapped[int] = mapped_column(Integer, default=0)
    judgements: Mapped[int] = mapped_column(Integer, default=0)  # residents x programs
    evaluations: Mapped[int] = mapped_column(Integer, default=0)
    eligible_found: Mapped[int] = mapped_column(Integer, default=0)
    already_applied: Mapped[int] = mapped_column(Integer, default=0)
    already_notified: Mapped[int] = mapped_column(Integer, default=0)
    opportunities: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # manual (an administrator's call, answered when done), requested (the same, run in the background), full (the
    # catalogue changed), daily (dates crossed a boundary), incremental (facts changed). See screening_runs.py.
    kind: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual", index=True)
    trigger: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # How many residents the run set out to screen (known at its start), for its progress.
    residents_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    questions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class OpportunityRow(Base):
    """A program proactive screening found a resident eligible for; told once per resident and program."""

    __tablename__ = "opportunities"
    __table_args__ = (UniqueConstraint("resident_id", "program_code", name="uq_opportunities_resident_program"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    screening_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screenings.screening_id"), index=True)
    resident_id: Mapped[uuid.UUID]
    program_code: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    found_at: Mapped[dt.datetime]


class ScreeningQueueRow(Base):
    """A resident to screen again at the next incremental run: their registry facts, department facts, consents or
    answers changed. ``queued_at`` moves with every new reason, so a run only clears the mark it saw."""

    __tablename__ = "screening_queue"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    reasons: Mapped[list[Any]]
    queued_at: Mapped[dt.datetime] = mapped_column(index=True)


class ScreeningReviewRow(Base):
    """When each screened resident's dates next move a fact the proactive rules read (a birthday, a child's month,
    a new calendar month): the daily run screens those whose day has come."""

    __tablename__ = "screening_reviews"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    review_on: Mapped[dt.date] = mapped_column(Date, index=True)
    screened_on: Mapped[dt.date] = mapped_column(Date)


class ScreeningScheduleRow(Base):
    """The scheduler's memory (one row): what the last full run screened against, the last day the daily run ran,
    and which process holds the lease on running screenings now."""

    __tablename__ = "screening_schedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The proactive rule versions in force the last full run judged by (a version taking effect changes it).
    full_versions: Mapped[str | None] = mapped_column(String(64), nullable=True)
    daily_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[dt.datetime | None]


class ScreeningQuestionRow(Base):
    """A near miss: the one fact that could make a resident eligible for a program, asked once per program and
    fact. Answered, it is kept with the answer's time; settled when screening no longer needs it."""

    __tablename__ = "screening_questions"
    __table_args__ = (
        UniqueConstraint("resident_id", "program_code", "fact", name="uq_screening_questions_resident_program_fact"),
    )

    question_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    screening_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screenings.screening_id"), index=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    program_code: Mapped[str] = mapped_column(String(64))
    fact: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # open | answered
    asked_at: Mapped[dt.datetime]
    answered_at: Mapped[dt.datetime | None]


class ResidentAnswerRow(Base):
    """A fact the resident declared outside any application (an answer to a screening question): screening reads it,
    and so does every later application of theirs, unless the application declares the fact itself."""

    __tablename__ = "resident_answers"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    answered_at: Mapped[dt.datetime]
    question_id: Mapped[uuid.UUID | None]


# ---------------------------------------------------------------------------------------------- erasure


class ResidentErasureRow(Base):
    """A resident who asked for erasure (``resident.erasure_requested``): what was erased and what is kept, until when
    (retention.yaml). While it stays, an event or a department's report about the resident arriving late is not
    stored again."""

    __tablename__ = "resident_erasures"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    erasure_id: Mapped[uuid.UUID]
    requested_at: Mapped[dt.datetime]
    erased_at: Mapped[dt.datetime]
    # [{"application_id", "decided_on"}] from the request: the decision files kept.
    decision_files: Mapped[list[Any]]
    erased: Mapped[dict[str, Any]]
    kept: Mapped[list[Any]]
