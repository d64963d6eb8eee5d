"""the outbox keeps the stream sequence each event was published under (the reconciler looks there)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.migrations import add_outbox_stream_sequence, drop_outbox_stream_sequence

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_stream_sequence()


def downgrade() -> None:
    drop_outbox_stream_sequence()
