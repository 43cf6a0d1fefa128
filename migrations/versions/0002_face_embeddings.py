"""face embeddings (pgvector), one per face detection, with model name and dimension

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An unconstrained `vector` column: the dimension follows the configured embedder (512
    # ArcFace, 192 the test stand-in), and rows of an earlier pack may remain after a switch.
    # Each row carries its model and dim; similarity search filters on model. HNSW needs a fixed
    # dimension, so per-model partial expression indexes come with the gallery, e.g.
    #   CREATE INDEX … USING hnsw ((embedding::vector(512)) vector_cosine_ops)
    #   WHERE model = 'w600k_mbf'
    op.create_table(
        "face_embeddings",
        sa.Column("detection_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
        sa.CheckConstraint("vector_dims(embedding) = dim", name="ck_face_embeddings_dim"),
        sa.ForeignKeyConstraint(["detection_id"], ["detections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("detection_id"),
    )
    op.create_index("ix_face_embeddings_job_id", "face_embeddings", ["job_id"])
    op.create_index("ix_face_embeddings_model", "face_embeddings", ["model"])


def downgrade() -> None:
    op.drop_index("ix_face_embeddings_model", table_name="face_embeddings")
    op.drop_index("ix_face_embeddings_job_id", table_name="face_embeddings")
    op.drop_table("face_embeddings")
