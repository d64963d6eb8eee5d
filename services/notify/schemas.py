"""Request and response bodies of the notify API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.notify.schedule import is_known_zone

EventTypeName = Annotated[str, Field(min_length=3, max_length=80, pattern=r"^[a-z][a-z0-9_.]*$")]
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["22:00"])]
ChannelName = Literal["inbox", "email", "sms"]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    @classmethod
    def from_row(cls, row: object, **computed: Any) -> Self:
        """This body for a row: each field from the row's attribute of the same name, unless ``computed`` gives it
        (what the row holds under another name, or does not hold at all)."""
        return cls.model_validate(
            {name: computed[name] if name in computed else getattr(row, name) for name in cls.model_fields}
        )


# ================================================================================================ residents


class QuietHours(Input):
    """Local times (HH:MM) between which no SMS is sent; may cross midnight. An SMS due then waits until the end."""

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    def times(self) -> tuple[dt.time, dt.time]:
        return dt.time.fromisoformat(self.start), dt.time.fromisoformat(self.end)


class PreferencesIn(Input):
    """A resident's own choices; a field left null falls back to what the resident told intake."""

    channels: list[ChannelName] | None = Field(
        default=None,
        max_length=3,
        description="Where messages are pushed besides the in-app inbox, which always keeps a copy.",
    )
    language: Literal["ko", "en"] | None = None
    quiet_hours: QuietHours | None = None
    timezone: str | None = Field(default=None, min_length=1, max_length=64, examples=["Asia/Seoul"])

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("channels must not repeat")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not is_known_zone(value):
            raise ValueError("unknown time zone (use an IANA name such as Asia/Seoul)")
        return value


class PreferencesOut(Output):
    resident_id: uuid.UUID
    channels: list[str] | None
    language: str | None
    quiet_hours: QuietHours | None
    timezone: str | None
    updated_at: dt.datetime | None


class InboxMessage(Output):
    id: uuid.UUID
    kind: str = Field(description="The event the message is about, e.g. eligibility.determined")
    application_id: uuid.UUID | None
    language: str
    title: str
    body: str
    link: str
    created_at: dt.datetime
    read_at: dt.datetime | None


class InboxPage(Output):
    items: list[InboxMessage]
    unread: int
    next_before: dt.datetime | None = Field(description="Pass as ?before= for the next (older) page")


class AuthorityOut(Output):
    kind: str = Field(description="representative")
    id: str = Field(description="The representation's id (intake's GET /v1/residents/{id}/representations)")


class AccessLogEntry(Output):
    at: dt.datetime
    actor: str
    actor_role: str
    actor_name: str | None
    action: str
    record_type: str
    record_id: str | None
    purpose: str
    on_behalf_of: uuid.UUID | None
    authority: AuthorityOut | None


class AccessLogPage(Output):
    items: list[AccessLogEntry] = Field(description="Newest first")
    next_cursor: str | None


class LetterOut(Output):
    id: uuid.UUID = Field(description="The letter's id (its delivery's)")
    notification_id: uuid.UUID
    resident_id: uuid.UUID
    kind: str
    language: str
    file_name: str = Field(description="The PDF under <data_dir>/post (GET /v1/letters/{id}/pdf)")
    pages: int
    status: Literal["to_send", "sent"]
    created_at: dt.datetime
    sent_at: dt.datetime | None
    sent_by: str | None


class NotificationDeliveryOut(Output):
    id: uuid.UUID
    notification_id: uuid.UUID
    resident_id: uuid.UUID
    application_id: uuid.UUID | None
    kind: str
    channel: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None


# ================================================================================================ partners


GrantPurposeName = Literal["payment", "notification", "outreach", "statistics"]


class GrantIn(Input):
    event_type: EventTypeName = Field(description="A partner-visible event type, e.g. case.decided")
    purpose: GrantPurposeName = Field(
        description=(
            "Why the partner receives it. Only payment needs amounts (a program's or a decision's amount); under "
            "notification or outreach they are left out. statistics: aggregate feeds only (no resident in them)."
        )
    )


class GrantsIn(Input):
    """The partner's complete grants: a type left out is revoked."""

    grants: list[GrantIn] = Field(
        max_length=50,
        examples=[[{"event_type": "case.decided", "purpose": "payment"}]],
    )


class GrantOut(Output):
    event_type: str
    purpose: str
    granted_at: dt.datetime
    granted_by: str


class PartnerOut(Output):
    id: str
    name: str
    grants: list[GrantOut]
    nats_user: str
    nats_subjects: str = Field(description="What the partner's NATS user may subscribe to")
    updated_at: dt.datetime
    updated_by: str


class SubscriptionIn(Input):
    transport: Literal["webhook", "nats"]
    event_types: list[EventTypeName] = Field(min_length=1, max_length=20)
    url: str | None = Field(default=None, min_length=1, max_length=2000, description="Webhook endpoint (http/https)")
    description: str | None = Field(default=None, max_length=200)


class SubscriptionOut(Output):
    id: uuid.UUID
    partner_id: str
    transport: str
    event_types: list[str]
    url: str | None
    description: str | None
    status: str
    consecutive_failures: int
    paused_reason: str | None
    paused_at: dt.datetime | None
    nats_subjects: list[str] = Field(description="For NATS subscriptions: where the events are published")
    previous_secret_expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str | None = Field(
        description="Webhooks: the signing secret (whsec_...). Shown only now; rotate to get a new one."
    )


class RotateSecretIn(Input):
    grace_seconds: int | None = Field(
        default=None, ge=0, le=7 * 24 * 3600, description="How long the old secret keeps signing (default: settings)"
    )


class RotatedSecret(Output):
    subscription_id: uuid.UUID
    secret: str
    previous_secret_expires_at: dt.datetime | None


class WebhookDeliveryOut(Output):
    id: uuid.UUID
    sequence: int
    subscription_id: uuid.UUID
    partner_id: str
    transport: str = Field(
        description="webhook; nats only for a NATS copy dropped before it was published (status withdrawn)"
    )
    event_id: str
    event_type: str
    status: str = Field(
        description=(
            "pending, failed (retrying), sent, dead (gave up), cancelled (subscription deleted or grant revoked), "
            "withdrawn (the resident withdrew their consent before it went out)"
        )
    )
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    withdrawn_at: dt.datetime | None
