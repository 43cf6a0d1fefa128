"""The faces identified as a person are found by the person's id when the person is deleted
(app/gallery/people.py delete_people: those faces become unknown and are forgotten).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IDENTIFIED_AS = "(attributes -> 'identity' ->> 'person_id')"


def upgrade() -> None:
    op.create_index(
        "ix_detections_identity_person",
        "detections",
        [sa.text(IDENTIFIED_AS)],
        postgresql_where=sa.text(f"{IDENTIFIED_AS} IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_detections_identity_person", table_name="detections")
