"""Where each merged-away person went: a job that identified them before the merge and writes
its result after it finds them gone, and names the one they were merged into (it forgot the
face, as a deleted person's). Deleting that person deletes the record (CASCADE).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "person_merges",
        sa.Column("person_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "into_id",
            UUID(as_uuid=True),
            sa.ForeignKey("people.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "merged_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_person_merges_into_id", "person_merges", ["into_id"])


def downgrade() -> None:
    op.drop_index("ix_person_merges_into_id", table_name="person_merges")
    op.drop_table("person_merges")
