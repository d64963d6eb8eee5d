"""partner feeds follow each resident's consent: grant purposes, the partners' consumer's own consent copy, withdrawn
deliveries (and NATS copies), the aggregate feed's periods and counts

Existing grants get the purpose ``notification`` (no amounts): an administrator restates ``payment`` where a partner
needs amounts. Partner consents notify already heard of (the residents' consumer kept them) are copied for the
partners' consumer, so that nothing a resident consented to stops at the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("partner_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=16), nullable=False, server_default="notification"))
    with op.batch_alter_table("partner_grants", schema=None) as batch_op:
        batch_op.alter_column("purpose", server_default=None)

    op.create_table(
        "partner_consents",
        sa.Column("resident_id", sa.Uuid(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resident_id", name=op.f("pk_partner_consents")),
    )
    _copy_partner_consents()

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transport", sa.String(length=8), nullable=False, server_default="webhook"))
        batch_op.add_column(sa.Column("resident_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_resident_id"), ["resident_id"], unique=False)
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.alter_column("transport", server_default=None)

    op.create_table(
        "aggregate_periods",
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("period_start", name=op.f("pk_aggregate_periods")),
    )
    with op.batch_alter_table("aggregate_periods", schema=None) as batch_op:
        batch_op.create_index("ix_aggregate_periods_unpublished", ["published_at", "period_end"], unique=False)
    op.create_table(
        "aggregate_counts",
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("district_code", sa.String(length=16), nullable=False),
        sa.Column("program_code", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["period_start"],
            ["aggregate_periods.period_start"],
            name=op.f("fk_aggregate_counts_period_start_aggregate_periods"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "period_start", "district_code", "program_code", "outcome", name=op.f("pk_aggregate_counts")
        ),
    )


def _copy_partner_consents() -> None:
    residents = sa.table(
        "residents",
        sa.column("resident_id", sa.Uuid()),
        sa.column("consents", sa.JSON()),
        sa.column("consent_version", sa.Integer()),
    )
    partner_consents = sa.table(
        "partner_consents",
        sa.column("resident_id", sa.Uuid()),
        sa.column("purposes", sa.JSON()),
        sa.column("version", sa.Integer()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for resident_id, consents, version in bind.execute(
        sa.select(residents.c.resident_id, residents.c.consents, residents.c.consent_version)
    ):
        purposes = sorted(p for p, granted in (consents or {}).items() if granted is True and p.startswith("partner:"))
        if purposes:
            rows.append({"resident_id": resident_id, "purposes": purposes, "version": version, "updated_at": now})
    if rows:
        bind.execute(sa.insert(partner_consents), rows)


def downgrade() -> None:
    op.drop_table("aggregate_counts")
    with op.batch_alter_table("aggregate_periods", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregate_periods_unpublished")
    op.drop_table("aggregate_periods")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_resident_id"))
        batch_op.drop_column("withdrawn_at")
        batch_op.drop_column("resident_id")
        batch_op.drop_column("transport")
    op.drop_table("partner_consents")
    with op.batch_alter_table("partner_grants", schema=None) as batch_op:
        batch_op.drop_column("purpose")
