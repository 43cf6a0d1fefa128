"""When a node's face crops were last allowed: its frames from before (still queued when the
policy changed) keep none, as the policy applies from the node's next frame.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: allowed since the node was made (or not allowed at all: store_face_crops says).
    op.add_column("nodes", sa.Column("face_crops_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("nodes", "face_crops_since")
