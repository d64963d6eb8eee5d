"""the platform audit log replaces intake's access log (the same entries, in the same order)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from shared.migrations import audit_log_rows, drop_audit_log, move_into_audit_log

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("at", "actor", "actor_role", "actor_name", "offices", "action", "record_type", "record_id", "purpose")

ACCESS_LOG = sa.table(
    "access_log",
    sa.column("id", sa.BigInteger()),
    sa.column("resident_id", sa.Uuid()),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String()),
    sa.column("actor_role", sa.String()),
    sa.column("actor_name", sa.String()),
    sa.column("offices", sa.JSON()),
    sa.column("action", sa.String()),
    sa.column("record_type", sa.String()),
    sa.column("record_id", sa.String()),
    sa.column("purpose", sa.String()),
)


def _entry(row: sa.RowMapping) -> dict[str, Any]:
    return {**{name: row[name] for name in COLUMNS}, "resident_id": row["resident_id"]}


def upgrade() -> None:
    move_into_audit_log(ACCESS_LOG, ["ix_access_log_resident_at"], _entry)


def downgrade() -> None:
    entries = audit_log_rows()
    rows = op.get_bind().execute(
        sa.select(entries).where(entries.c.resident_id.is_not(None)).order_by(sa.column("id"))
    ).mappings().all()
    op.create_table('access_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resident_id', sa.Uuid(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('actor_role', sa.String(length=20), nullable=False),
    sa.Column('actor_name', sa.String(length=200), nullable=True),
    sa.Column('offices', sa.JSON(), nullable=False),
    sa.Column('action', sa.String(length=50), nullable=False),
    sa.Column('record_type', sa.String(length=50), nullable=False),
    sa.Column('record_id', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_access_log_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_log'))
    )
    op.create_index('ix_access_log_resident_at', 'access_log', ['resident_id', 'at'], unique=False)
    if rows:
        op.bulk_insert(ACCESS_LOG, [_entry(row) for row in rows])
    drop_audit_log()
