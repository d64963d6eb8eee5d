"""on SQLite, the index of department facts by resident covers every column a screening reads (one ordered scan of a
page's facts instead of a lookup in the table per fact); PostgreSQL keeps its index

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["resident_id", "name", "department", "observed_at", "valid_until", "value"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("department_facts", schema=None) as batch_op:
        batch_op.create_index("ix_department_facts_resident_covering", COLUMNS, unique=False)
        batch_op.drop_index("ix_department_facts_resident_name")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("department_facts", schema=None) as batch_op:
        batch_op.create_index("ix_department_facts_resident_name", ["resident_id", "name"], unique=False)
        batch_op.drop_index("ix_department_facts_resident_covering")
