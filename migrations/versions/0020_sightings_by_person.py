"""A person's sightings by one index: (person_id, seen_at, detection_id) with node_id beside
them, instead of person_id alone. A person's card (GET /v1/people, /v1/people/{id}) reads its
newest sightings, its count, first and last seen, and its faces by source; with person_id alone
each read every sighting's row, and the unnamed people biggest first (the residents nobody
named, seen the most) paid for all of theirs: a page of 20 took ~1.1 s over HTTP at a million
unknown faces with clusters of 20,000 (bench/people_page.py). The newest sightings now come
from the index's end, the rest from the index alone. It still serves what person_id's index
did (a deleted person's faces, ON DELETE CASCADE).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_unknown_faces_person_seen",
        "unknown_faces",
        ["person_id", "seen_at", "detection_id"],
        postgresql_include=["node_id"],
    )
    op.drop_index("ix_unknown_faces_person_id", table_name="unknown_faces")


def downgrade() -> None:
    op.create_index("ix_unknown_faces_person_id", "unknown_faces", ["person_id"])
    op.drop_index("ix_unknown_faces_person_seen", table_name="unknown_faces")
