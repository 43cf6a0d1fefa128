"""The unfinished jobs are found without reading the finished ones: partial indexes for the
reconciler (oldest first), a node's backlog (counted for every frame it sends) and /metrics.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app/models.py UNFINISHED_JOBS says it (a migration keeps its own copy: it must not change
# when the model does).
UNFINISHED = "status IN ('queued', 'running')"


def upgrade() -> None:
    # Each build reads the jobs table once and holds off writes to it meanwhile: at a million
    # jobs kept, the longest INSERT during the two builds waited 86-99 ms (0.2 s of build; with
    # CONCURRENTLY 5-6 ms, 0.45 s: not worth a migration outside its transaction). The indexes
    # themselves are small, unfinished jobs being few.
    op.create_index(
        "ix_jobs_unfinished", "jobs", ["created_at"], postgresql_where=sa.text(UNFINISHED)
    )
    op.create_index(
        "ix_jobs_unfinished_node",
        "jobs",
        ["node_id"],
        postgresql_where=sa.text(f"node_id IS NOT NULL AND {UNFINISHED}"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_node", table_name="jobs")
    op.drop_index("ix_jobs_unfinished", table_name="jobs")
