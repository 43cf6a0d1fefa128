"""jobs.purpose: why a job was made (detect, identify, compare, enroll); see app.models.JobPurpose

Gallery calls (identify, verify, face search and their DeepStack / CompreFace forms) keep their
jobs as history, marked, so that face search and stats counts leave them out. Jobs made before
this revision are all `detect`: nothing recorded which call made them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column(
            "purpose",
            sa.Enum(
                "detect",
                "identify",
                "compare",
                "enroll",
                name="job_purpose",
                native_enum=False,
                length=16,
            ),
            server_default="detect",
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("jobs", "purpose")
