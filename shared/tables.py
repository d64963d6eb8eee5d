"""The tables every service has beside its own: outbox, inbox, dead letters and idempotency keys.

They are defined on each service's own ``MetaData`` (each service has its own database and Alembic history).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
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
)

# SQLite only auto-increments an "INTEGER PRIMARY KEY"; PostgreSQL wants a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class PlatformTables:
    outbox: Table
    inbox: Table
    dead_letters: Table
    idempotency_keys: Table


def platform_tables(metadata: MetaData) -> PlatformTables:
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
    )
    # The relay asks for the unpublished rows, oldest first.
    Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.id)

    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False, index=True),
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
        Column("failed_at", DateTime(timezone=True), nullable=False),
        Column("replayed_at", DateTime(timezone=True), nullable=True),
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
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
    )
    return PlatformTables(outbox, inbox, dead_letters, idempotency_keys)
