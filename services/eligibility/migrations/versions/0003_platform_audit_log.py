"""the platform audit log replaces eligibility's own (the same entries, in the same order)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from shared.migrations import drop_audit_log, move_into_audit_log

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = sa.table(
    "audit_log",
    sa.column("id", sa.BigInteger()),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String()),
    sa.column("role", sa.String()),
    sa.column("action", sa.String()),
    sa.column("object_type", sa.String()),
    sa.column("object_id", sa.String()),
    sa.column("purpose", sa.String()),
)


def _entry(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "at": row["at"],
        "actor": row["actor"],
        "actor_role": row["role"],
        "actor_name": None,
        "offices": [],
        "action": row["action"],
        "record_type": row["object_type"],
        "record_id": row["object_id"],
        "resident_id": None,
        "purpose": row["purpose"],
    }


def upgrade() -> None:
    move_into_audit_log(OLD, ["ix_audit_log_object_id", "ix_audit_log_at"], _entry)


def downgrade() -> None:
    # The entries are not carried back: the earlier table cannot hold what the platform log records.
    drop_audit_log()
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False)
    op.create_index('ix_audit_log_object_id', 'audit_log', ['object_id'], unique=False)
