"""Faces enrolled since a gallery's in-memory snapshot are found by (model, created_at)
(app/gallery/memory_index.py: identify reads them from Postgres until the index adds them).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_person_faces_model_created_at", "person_faces", ["model", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_person_faces_model_created_at", table_name="person_faces")
