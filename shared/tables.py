"""The tables every service has beside its own: outbox, inbox, dead letters, idempotency keys and the audit log.

They are defined on each service's own ``MetaData`` (each service has its own database and Alembic history).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.engine import Dialect

# Constraint names every service's metadata uses, so that migrations name (and can later drop) them the same way
# on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is timezone-aware UTC in Python on every backend. SQLite keeps no offset, so values are
    converted to UTC on the way in and marked UTC on the way out; comparisons in SQL then agree on both backends.
    A naive datetime is refused: its zone is unknown."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class ServiceModels:
    """Mix into each service's declarative base (``class Base(ServiceModels, DeclarativeBase)``): a ``Mapped[...]``
    column of these Python types gets the same SQL type in every service — timestamps are timezone-aware UTC
    (:class:`UTCDateTime`) on SQLite and PostgreSQL alike, ids are UUIDs, structures are JSON."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime,
        uuid.UUID: Uuid,
        dict[str, Any]: JSON,
        list[Any]: JSON,
        list[str]: JSON,
    }


# SQLite only auto-increments an "INTEGER PRIMARY KEY"; PostgreSQL wants a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class PlatformTables:
    outbox: Table
    inbox: Table
    dead_letters: Table
    idempotency_keys: Table
    audit_log: Table


def platform_tables(metadata: MetaData) -> PlatformTables:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("published_at", UTCDateTime, nullable=True),
        # The stream sequence JetStream acknowledged it under: the reconciler looks there (shared/reconciler.py).
        Column("stream_seq", BigInteger, nullable=True),
    )
    # The relay asks for the unpublished rows, oldest first.
    Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.id)

    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("handled_at", UTCDateTime, nullable=False, index=True),
        PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )

    dead_letters = Table(
        "dead_letters",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("consumer", String(100), nullable=False, index=True),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("subject", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("error", Text, nullable=False),
        Column("deliveries", Integer, nullable=False),
        Column("failed_at", UTCDateTime, nullable=False),
        Column("replayed_at", UTCDateTime, nullable=True),
        Column("replay_error", Text, nullable=True),
    )

    idempotency_keys = Table(
        "idempotency_keys",
        metadata,
        Column("principal", String(255), nullable=False),
        Column("key", String(255), nullable=False),
        Column("method", String(10), nullable=False),
        Column("path", String(500), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("response", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False, index=True),
        PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
    )
    # Who read or changed a resident's personal data (shared.audit): written in the transaction of the access.
    audit_log = Table(
        "audit_log",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False, index=True),
        Column("actor", String(255), nullable=False),
        Column("actor_role", String(32), nullable=False),
        Column("actor_name", String(200), nullable=True),
        Column("offices", JSON, nullable=False),
        Column("action", String(64), nullable=False),
        Column("record_type", String(64), nullable=False),
        Column("record_id", String(64), nullable=True),
        Column("resident_id", Uuid, nullable=True),
        Column("purpose", String(255), nullable=False),
        # Someone acting for a resident (a representative they named, counter staff under the authority the resident
        # gave): on whose behalf, and under which authority (its kind and the id of its record in intake).
        Column("on_behalf_of", Uuid, nullable=True),
        Column("authority_kind", String(32), nullable=True),
        Column("authority_id", String(64), nullable=True),
    )
    Index("ix_audit_log_resident_at", audit_log.c.resident_id, audit_log.c.at)
    return PlatformTables(outbox, inbox, dead_letters, idempotency_keys, audit_log)
