"""registered households of residents; follow-up reminders

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('resident_households',
    sa.Column('resident_id', sa.Uuid(), nullable=False),
    sa.Column('household_id', sa.Uuid(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('resident_id', name=op.f('pk_resident_households'))
    )
    with op.batch_alter_table('resident_households', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resident_households_household_id'), ['household_id'], unique=False)
    with op.batch_alter_table('household_follow_ups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_on', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('household_follow_ups', schema=None) as batch_op:
        batch_op.drop_column('reminded_on')
    with op.batch_alter_table('resident_households', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resident_households_household_id'))

    op.drop_table('resident_households')
