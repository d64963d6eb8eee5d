"""The notify service's tables.

What notify keeps about a resident is deliberately small: their own preferences, the consents intake announced, and
the messages it composed. Contact details (email, phone) are never stored: they are looked up from intake when a
message is sent.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.audit import AuditLog
from shared.events import partner_purpose
from shared.tables import NAMING_CONVENTION, BigId, ServiceModels, platform_tables


class Base(ServiceModels, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


platform = platform_tables(Base.metadata)
audit_log = AuditLog(platform)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ================================================================================================ residents


class ResidentChannel(StrEnum):
    INBOX = "inbox"
    EMAIL = "email"
    SMS = "sms"
    POST = "post"  # a printed letter (services/notify/letters.py)


class Preference(Base):
    """A resident's own choices; each one set here overrides intake's defaults (null: use intake's)."""

    __tablename__ = "preferences"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    channels: Mapped[list[str] | None]
    language: Mapped[str | None] = mapped_column(String(2))
    quiet_hours_start: Mapped[dt.time | None] = mapped_column(Time)
    quiet_hours_end: Mapped[dt.time | None] = mapped_column(Time)
    timezone: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime]


class ResidentState(Base):
    """What the events told notify about a resident: their consents and language (never contact details)."""

    __tablename__ = "residents"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    consents: Mapped[dict[str, Any]] = mapped_column(default=dict)
    consent_version: Mapped[int] = mapped_column(default=0)
    language: Mapped[str | None] = mapped_column(String(2))
    profile_version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[dt.datetime]

    def consented(self, purpose: str) -> bool:
        return self.consents.get(purpose) is True


class Representation(Base):
    """Who may act for a resident, as intake announced it (representation.changed): notify lets a representative in
    the ``read_messages`` scope read the resident's inbox through ``expires_on``. The highest version wins, so a
    revocation is never undone by an older event arriving late."""

    __tablename__ = "representations"
    __table_args__ = (Index("ix_representations_representative_resident", "representative_id", "resident_id"),)

    representation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID]
    representative_id: Mapped[uuid.UUID]
    scopes: Mapped[list[str]]
    expires_on: Mapped[dt.date] = mapped_column(Date)
    revoked_at: Mapped[dt.datetime | None]
    version: Mapped[int]
    updated_at: Mapped[dt.datetime]


class TrackedApplication(Base):
    """An application as far as messages are concerned: its last eligibility round and whether it was withdrawn."""

    __tablename__ = "applications"

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    life_event: Mapped[str | None] = mapped_column(String(64))
    last_round: Mapped[int] = mapped_column(default=0)
    withdrawn_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime]


class ApplicationProgram(Base):
    """One program of an application as the resident was last told about it, so a re-evaluation only mentions what
    changed, and later case messages can name the program and office."""

    __tablename__ = "application_programs"

    application_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    program_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    program_name: Mapped[dict[str, Any] | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    # A digest of the questions put to the resident: a new question is a change worth telling.
    signature: Mapped[str | None] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(default=0)
    office_code: Mapped[str | None] = mapped_column(String(64))
    office_name: Mapped[dict[str, Any] | None]
    updated_at: Mapped[dt.datetime]


class NotificationStatus(StrEnum):
    COLLECTING = "collecting"  # may still absorb related events (bundling window)
    READY = "ready"  # in the inbox; push channels not resolved yet (intake not asked yet, or unreachable)
    DISPATCHED = "dispatched"  # one delivery per push channel created
    SUPPRESSED = "suppressed"  # the application was withdrawn before it went out


class Notification(Base):
    """One message to one resident: one or more source events of one kind, rendered per channel and language."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    application_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[dt.datetime]
    released_at: Mapped[dt.datetime | None]
    next_step_at: Mapped[dt.datetime]
    step_attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None]
    read_at: Mapped[dt.datetime | None]

    items: Mapped[list[NotificationItem]] = relationship(
        back_populates="notification", order_by="NotificationItem.id", lazy="selectin", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_notifications_due", "status", "next_step_at"),)

    @property
    def source_event_ids(self) -> list[str]:
        return [item.source_event_id for item in self.items]


class NotificationItem(Base):
    """One source event's part of a notification. Its unique key makes a redelivered event a no-op."""

    __tablename__ = "notification_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    resident_id: Mapped[uuid.UUID]
    source_event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime]
    data: Mapped[dict[str, Any]]

    notification: Mapped[Notification] = relationship(back_populates="items")

    __table_args__ = (UniqueConstraint("source_event_id", "resident_id", name="uq_notification_items_source"),)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not tried yet (or retried by an admin)
    FAILED = "failed"  # the last attempt failed; another is scheduled
    SENT = "sent"
    DEAD = "dead"  # gave up; an admin may retry
    SUPPRESSED = "suppressed"  # not sent on purpose (the application was withdrawn)
    CANCELLED = "cancelled"  # not sent on purpose (the subscription was deleted, the grant revoked)
    WITHDRAWN = "withdrawn"  # not sent on purpose: the resident withdrew their consent to the partner


RETRYABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value)


class Delivery(Base):
    """One notification on one channel. (notification, channel) is unique, and a notification's items are unique per
    (source event, resident): together, nothing is sent twice for the same event, recipient and channel."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    channel: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]

    # An inner join: a delivery always has its notification (and PostgreSQL refuses FOR UPDATE on an outer join).
    notification: Mapped[Notification] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (
        UniqueConstraint("notification_id", "channel", name="uq_deliveries_notification_channel"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )


class LetterStatus(StrEnum):
    TO_SEND = "to_send"  # printed to PDF, waiting for the office to print and post it
    SENT = "sent"  # the office posted it


class Letter(Base):
    """A notice on paper for a resident without a digital channel: the PDF ``file_name`` under ``<data_dir>/post``,
    listed for the office until it marks the letter sent. Its id is its delivery's."""

    __tablename__ = "letters"
    __table_args__ = (Index("ix_letters_status_created", "status", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    resident_id: Mapped[uuid.UUID] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(2))
    file_name: Mapped[str] = mapped_column(String(100))
    pages: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    sent_by: Mapped[str | None] = mapped_column(String(255))


# ================================================================================================ partners


class Partner(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(255))

    grants: Mapped[list[PartnerGrant]] = relationship(
        back_populates="partner", order_by="PartnerGrant.event_type", lazy="selectin", cascade="all, delete-orphan"
    )


class GrantPurpose(StrEnum):
    """Why a partner receives an event type, as the administrator stated it when granting it. The purpose decides
    what of the partner view it gets: only ``payment`` needs amounts."""

    PAYMENT = "payment"  # paying or expecting a benefit (a bank): amounts included
    NOTIFICATION = "notification"  # following the resident's case to tell or accompany them
    OUTREACH = "outreach"  # offering the resident further help
    STATISTICS = "statistics"  # planning from aggregate feeds (no resident in them)

    @property
    def needs_amounts(self) -> bool:
        return self is GrantPurpose.PAYMENT


class PartnerGrant(Base):
    """An event type an administrator allowed a partner to receive (its partner view), and for what purpose."""

    __tablename__ = "partner_grants"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[dt.datetime]
    granted_by: Mapped[str] = mapped_column(String(255))

    partner: Mapped[Partner] = relationship(back_populates="grants")


class PartnerConsent(Base):
    """The partner purposes a resident consents to (``partner:<id>``, ``partner:<id>:<event type>``), as the partners'
    consumer last heard them. That consumer keeps its own copy, so that a consent and the events behind it are applied
    in the order intake emitted them: nothing about a resident goes to a partner before their consent arrived."""

    __tablename__ = "partner_consents"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    purposes: Mapped[list[str]] = mapped_column(default=list)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[dt.datetime]

    def covers(self, partner_id: str, event_type: str) -> bool:
        granted = set(self.purposes)
        return partner_purpose(partner_id) in granted or partner_purpose(partner_id, event_type) in granted


class Transport(StrEnum):
    NATS = "nats"
    WEBHOOK = "webhook"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # deliveries queue up; nothing is sent until resumed
    DELETED = "deleted"


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    transport: Mapped[str] = mapped_column(String(8))
    event_types: Mapped[list[str]]
    url: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    # Webhook signing secrets (``whsec_...``). After a rotation the previous one keeps signing until it expires.
    secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[dt.datetime | None]
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    deleted_at: Mapped[dt.datetime | None]

    def signing_secrets(self, now: dt.datetime) -> list[str]:
        out = [self.secret] if self.secret else []
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            out.append(self.previous_secret)
        return out


class WebhookDelivery(Base):
    """One event for one webhook subscription. ``seq`` orders a subscription's deliveries: the next one waits until
    the one before was delivered or gave up.

    A NATS copy has no row while it waits in the outbox; when the resident withdraws their consent before it was
    published, the copy is dropped and recorded here (transport ``nats``, status ``withdrawn``) on the partner's NATS
    subscription, so the partner and administrators see the drop as they see a webhook's."""

    __tablename__ = "webhook_deliveries"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    subscription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subscriptions.id"))
    partner_id: Mapped[str] = mapped_column(String(40), index=True)
    transport: Mapped[str] = mapped_column(String(8), default=Transport.WEBHOOK.value)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    # The resident the event is about (null for an aggregate): a withdrawn consent finds what is queued for them.
    resident_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    # Emptied when the delivery is withdrawn: nothing about the resident is kept for the partner.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]
    withdrawn_at: Mapped[dt.datetime | None]

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_subscription_event"),
        Index("ix_webhook_deliveries_queue", "subscription_id", "status", "seq"),
    )


# ================================================================================================ aggregate feeds


class AggregatePeriod(Base):
    """A period of the aggregate feed: open while counts go in, published once (``aggregate.determinations_counted``)
    after it ended. A count arriving for a period already published goes into the next one."""

    __tablename__ = "aggregate_periods"

    period_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    period_end: Mapped[dt.datetime]
    published_at: Mapped[dt.datetime | None]

    __table_args__ = (Index("ix_aggregate_periods_unpublished", "published_at", "period_end"),)


class AggregateCount(Base):
    """How many determinations of one program, with one outcome, for residents of one district, in one period. No
    resident, no application: only the count."""

    __tablename__ = "aggregate_counts"

    period_start: Mapped[dt.datetime] = mapped_column(
        ForeignKey("aggregate_periods.period_start", ondelete="CASCADE"), primary_key=True
    )
    district_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    program_code: Mapped[str] = mapped_column(String(100), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)


# ================================================================================================ erasure


class ResidentErasure(Base):
    """A resident who asked for erasure (``resident.erasure_requested``). Notify erases in two consumers — the
    residents' (messages, preferences ...) and the partners' (consents to partners, what is queued for them) — each
    in stream order with the events it handles; whichever finishes second answers ``resident.erased``. While the row
    stays, nothing about the resident is stored again, and nothing more about them reaches a partner."""

    __tablename__ = "resident_erasures"

    resident_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    erasure_id: Mapped[uuid.UUID]
    requested_at: Mapped[dt.datetime]
    residents_erased_at: Mapped[dt.datetime | None]
    partners_erased_at: Mapped[dt.datetime | None]
    reported_at: Mapped[dt.datetime | None]
    erased: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kept: Mapped[list[Any]] = mapped_column(default=list)
