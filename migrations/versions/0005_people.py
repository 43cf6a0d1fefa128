"""people and person_faces (the gallery); per-model HNSW cosine indexes on face embeddings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op

from app.embedders import embedder_dims
from app.vectors import EMBEDDING_TABLES, hnsw_index_name, hnsw_index_statements

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_people_owner_id", "people", ["owner_id"])
    op.create_index("ix_people_created_at_id", "people", ["created_at", "id"])
    op.create_table(
        "person_faces",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("person_id", sa.UUID(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
        sa.Column("source_job_id", sa.UUID(), nullable=True),
        sa.Column("source_detection_id", sa.Integer(), nullable=True),
        sa.Column("face_px", sa.Float(), nullable=False),
        sa.Column("sharpness", sa.Float(), nullable=False),
        sa.Column("yaw_ratio", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("vector_dims(embedding) = dim", name="ck_person_faces_dim"),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["source_detection_id"], ["detections.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_person_faces_person_id", "person_faces", ["person_id"])
    op.create_index("ix_person_faces_model", "person_faces", ["model"])
    # HNSW needs a fixed dimension; the columns have none (the dimension follows the embedder).
    # One partial expression index per known embedder and table; queries repeat the expression
    # (app/vectors.py). The embedders known at this revision are those of app/embedders.py;
    # a later embedder needs a migration of its own that runs these statements again.
    for table in EMBEDDING_TABLES:
        for statement in hnsw_index_statements(table):
            op.execute(statement)


def downgrade() -> None:
    for table in EMBEDDING_TABLES:
        for model in embedder_dims():
            op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(table, model)}")
    op.drop_index("ix_person_faces_model", table_name="person_faces")
    op.drop_index("ix_person_faces_person_id", table_name="person_faces")
    op.drop_table("person_faces")
    op.drop_index("ix_people_created_at_id", table_name="people")
    op.drop_index("ix_people_owner_id", table_name="people")
    op.drop_table("people")
