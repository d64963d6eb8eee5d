"""cases by resident and status (one index for a resident's cases and their active ones)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 11:20:00.000000

Without statistics SQLite's planner took ix_cases_status_due for "these residents' active cases" and read every
active case; with the status beside the resident it takes this one. It also serves what ix_cases_resident_id served.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_resident_status', ['resident_id', 'status'], unique=False)
        batch_op.drop_index('ix_cases_resident_id')


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_resident_id', ['resident_id'], unique=False)
        batch_op.drop_index('ix_cases_resident_status')
