"""Unknown faces and thumbnails: unnamed people (clusters), face crops, unique names (issue 16)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The owner of rows created while keys were off, in the unique index (app/models.py NO_OWNER).
NO_OWNER = "00000000-0000-0000-0000-000000000000"

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("people", "name", existing_type=sa.String(length=200), nullable=True)
    op.add_column("people", sa.Column("ignored_at", sa.DateTime(timezone=True), nullable=True))
    # Names become unique per owner: earlier duplicates are renamed "name (2)", "name (3)", …
    op.execute(
        """
        UPDATE people p SET name = left(p.name, 190) || ' (' || d.n || ')'
        FROM (
            SELECT id, row_number() OVER (
                PARTITION BY COALESCE(owner_id, '00000000-0000-0000-0000-000000000000'::uuid),
                    lower(name)
                ORDER BY created_at, id
            ) AS n FROM people
        ) d
        WHERE d.id = p.id AND d.n > 1
        """
    )
    op.create_index(
        "ux_people_owner_name",
        "people",
        [sa.text(f"COALESCE(owner_id, '{NO_OWNER}'::uuid)"), sa.text("lower(name)")],
        unique=True,
        postgresql_where=sa.text("name IS NOT NULL"),
    )
    op.add_column("person_faces", sa.Column("crop_jpeg", sa.LargeBinary(), nullable=True))
    # A face promoted twice before this revision keeps its embeddings; only the first keeps
    # the link to its source, so the link can be unique from now on.
    op.execute(
        """
        UPDATE person_faces f SET source_detection_id = NULL
        FROM (
            SELECT id, row_number() OVER (
                PARTITION BY source_detection_id ORDER BY created_at, id
            ) AS n FROM person_faces WHERE source_detection_id IS NOT NULL
        ) d
        WHERE d.id = f.id AND d.n > 1
        """
    )
    op.create_index(
        "ux_person_faces_source_detection",
        "person_faces",
        ["source_detection_id"],
        unique=True,
        postgresql_where=sa.text("source_detection_id IS NOT NULL"),
    )
    op.add_column(
        "nodes",
        sa.Column(
            "store_face_crops", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.create_table(
        "face_crops",
        sa.Column("detection_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["detection_id"], ["detections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("detection_id"),
    )
    op.create_index("ix_face_crops_job_id", "face_crops", ["job_id"])
    op.create_table(
        "unknown_faces",
        sa.Column("detection_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=True),
        sa.Column("person_id", sa.UUID(), nullable=True),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.UUID(), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["detection_id"], ["detections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("detection_id"),
    )
    op.create_index("ix_unknown_faces_job_id", "unknown_faces", ["job_id"])
    op.create_index("ix_unknown_faces_person_id", "unknown_faces", ["person_id"])
    op.create_index("ix_unknown_faces_owner_model", "unknown_faces", ["owner_id", "model"])


def downgrade() -> None:
    op.drop_index("ix_unknown_faces_owner_model", table_name="unknown_faces")
    op.drop_index("ix_unknown_faces_person_id", table_name="unknown_faces")
    op.drop_index("ix_unknown_faces_job_id", table_name="unknown_faces")
    op.drop_table("unknown_faces")
    op.drop_index("ix_face_crops_job_id", table_name="face_crops")
    op.drop_table("face_crops")
    op.drop_column("nodes", "store_face_crops")
    op.drop_index("ux_person_faces_source_detection", table_name="person_faces")
    op.drop_column("person_faces", "crop_jpeg")
    op.drop_index("ux_people_owner_name", table_name="people")
    op.drop_column("people", "ignored_at")
    # Unnamed people (clusters) cannot exist before this revision.
    op.execute("DELETE FROM people WHERE name IS NULL")
    op.alter_column("people", "name", existing_type=sa.String(length=200), nullable=False)
