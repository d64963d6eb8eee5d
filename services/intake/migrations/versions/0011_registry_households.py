"""registered households: the registry key on the resident and its pseudonymous id

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('registry_households',
    sa.Column('registry_key', sa.String(length=40), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('registry_key', name=op.f('pk_registry_households')),
    sa.UniqueConstraint('id', name=op.f('uq_registry_households_id'))
    )
    with op.batch_alter_table('residents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('registry_household', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('household_id', sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f('ix_residents_household_id'), ['household_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('residents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_residents_household_id'))
        batch_op.drop_column('household_id')
        batch_op.drop_column('registry_household')

    op.drop_table('registry_households')
