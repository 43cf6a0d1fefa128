"""A person's sightings by one index: (person_id, seen_at, detection_id) instead of person_id
alone. A person's card (GET /v1/people, /v1/people/{id}) reads its newest sightings and its
first and last seen (and, until 0021's tallies, its count and sources); with person_id alone
each read every sighting's row, and the unnamed people biggest first (the residents nobody
named, seen the most) paid for all of theirs. The newest sightings now come from the index's
end, first and last seen from its two ends. Measured with bench/people_page.py as it was at
this migration (6fa10a0, when the index also carried node_id for the sources; a million
unknown faces, clusters of up to 20,000): a page of 20 unnamed people 264 ms of Postgres CPU
against 580 with person_id's index, the biggest one's card 6 against 20. It still serves what
person_id's index did (a deleted person's faces, ON DELETE CASCADE).

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
    )
    op.drop_index("ix_unknown_faces_person_id", table_name="unknown_faces")


def downgrade() -> None:
    op.create_index("ix_unknown_faces_person_id", "unknown_faces", ["person_id"])
    op.drop_index("ix_unknown_faces_person_seen", table_name="unknown_faces")
