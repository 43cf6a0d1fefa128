"""The faces whose runner-up was a person are found by the person's id when the person is
deleted (app/gallery/people.py delete_people: the name and id go from those faces too).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNER_UP = "(attributes -> 'runner_up' ->> 'person_id')"


def upgrade() -> None:
    op.create_index(
        "ix_detections_runner_up_person",
        "detections",
        [sa.text(RUNNER_UP)],
        postgresql_where=sa.text(f"{RUNNER_UP} IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_detections_runner_up_person", table_name="detections")
