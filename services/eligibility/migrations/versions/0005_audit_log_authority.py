"""the audit log says on whose behalf and under which authority someone acted

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.migrations import add_audit_log_authority, drop_audit_log_authority

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_audit_log_authority()


def downgrade() -> None:
    drop_audit_log_authority()
