"""Sighting tallies: each person's count of unknown faces by source, kept by triggers on
unknown_faces (app/models.py SightingTally). GET /v1/people?named=false ranked the unnamed
people by counting every one's sightings at each call, and each card counted its person's:
264 ms of Postgres CPU a page at a million unknown faces even with 0020's index
(bench/people_page.py). The triggers are statement-level, with transition tables: one insert
of a few rows per statement that changes unknown_faces, cascades from deleted jobs, detections,
people and nodes included (a cascade of many rows fires them once). A TRUNCATE of
unknown_faces (the tests' reset) empties the tallies too.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One function for the three changes; each branch reads only the transition tables its
# trigger defines. An UPDATE that moves no face (another column) nets to nothing and writes
# nothing.
TALLY_FUNCTION = """
CREATE FUNCTION tally_sightings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sighting_tallies (person_id, node_id, sightings)
        SELECT person_id, node_id, count(*) FROM new_faces
        WHERE person_id IS NOT NULL GROUP BY person_id, node_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO sighting_tallies (person_id, node_id, sightings)
        SELECT person_id, node_id, -count(*) FROM old_faces
        WHERE person_id IS NOT NULL GROUP BY person_id, node_id;
    ELSE
        INSERT INTO sighting_tallies (person_id, node_id, sightings)
        SELECT person_id, node_id, sum(n) FROM (
            SELECT person_id, node_id, 1 AS n FROM new_faces WHERE person_id IS NOT NULL
            UNION ALL
            SELECT person_id, node_id, -1 FROM old_faces WHERE person_id IS NOT NULL
        ) changed
        GROUP BY person_id, node_id HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$
"""
FORGET_FUNCTION = """
CREATE FUNCTION forget_sighting_tallies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sighting_tallies;
    RETURN NULL;
END
$$
"""
TRIGGERS = {
    "unknown_faces_tally_insert": "AFTER INSERT ON unknown_faces REFERENCING NEW TABLE AS "
    "new_faces FOR EACH STATEMENT EXECUTE FUNCTION tally_sightings()",
    "unknown_faces_tally_delete": "AFTER DELETE ON unknown_faces REFERENCING OLD TABLE AS "
    "old_faces FOR EACH STATEMENT EXECUTE FUNCTION tally_sightings()",
    "unknown_faces_tally_update": "AFTER UPDATE ON unknown_faces REFERENCING OLD TABLE AS "
    "old_faces NEW TABLE AS new_faces FOR EACH STATEMENT EXECUTE FUNCTION tally_sightings()",
    "unknown_faces_tally_truncate": "AFTER TRUNCATE ON unknown_faces "
    "FOR EACH STATEMENT EXECUTE FUNCTION forget_sighting_tallies()",
}


def upgrade() -> None:
    op.create_table(
        "sighting_tallies",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("person_id", sa.UUID(), nullable=False),
        sa.Column("node_id", sa.UUID(), nullable=True),
        sa.Column("sightings", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sighting_tallies_person_node", "sighting_tallies", ["person_id", "node_id"])
    op.execute(TALLY_FUNCTION)
    op.execute(FORGET_FUNCTION)
    for name, definition in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {definition}")
    # The faces there already, counted once; in this transaction, after CREATE TRIGGER locked
    # unknown_faces against writes, so that none is counted twice or missed.
    op.execute(
        "INSERT INTO sighting_tallies (person_id, node_id, sightings) "
        "SELECT person_id, node_id, count(*) FROM unknown_faces "
        "WHERE person_id IS NOT NULL GROUP BY person_id, node_id"
    )


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON unknown_faces")
    op.execute("DROP FUNCTION forget_sighting_tallies()")
    op.execute("DROP FUNCTION tally_sightings()")
    op.drop_index("ix_sighting_tallies_person_node", table_name="sighting_tallies")
    op.drop_table("sighting_tallies")
