"""The gallery at a million faces (issue 18): identify's quantized HNSW index per model, the
re-embedding link of a model upgrade, bulk imports

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.embedders import EMBEDDER_SPECS
from app.gallery.index import index_parameters
from app.settings import get_settings
from app.vectors import (
    gallery_index_name,
    gallery_index_statement,
    hnsw_index_name,
    hnsw_index_statements,
)

# Embedders added after 0005 made the face_embeddings indexes: theirs are made (and undone) here.
ADDED_EMBEDDERS = ("mobilefacenet_bgr",)

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The build needs its graph in memory (as `lookout gallery reindex` does); a gallery that is
    # already large would otherwise spill to disk and take several times longer.
    memory_mb = get_settings().gallery.index_build_memory_mb
    op.execute(f"SET LOCAL maintenance_work_mem = '{memory_mb}MB'")
    parameters = index_parameters(0)
    for spec in EMBEDDER_SPECS:
        # identify no longer reads the float HNSW index of person_faces (see app/vectors.py)
        op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('person_faces', spec.model)}")
        op.execute(
            gallery_index_statement(
                spec.model,
                spec.dim,
                m=parameters.m,
                ef_construction=parameters.ef_construction,
            )
        )
    # Embedders added since 0005 get their face_embeddings index too (IF NOT EXISTS: the others
    # are there already).
    for statement in hnsw_index_statements("face_embeddings"):
        op.execute(statement)

    op.add_column("person_faces", sa.Column("reembedded_from", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "person_faces_reembedded_from_fkey",
        "person_faces",
        "person_faces",
        ["reembedded_from"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(
        "ux_person_faces_reembedded_from_model",
        "person_faces",
        ["reembedded_from", "model"],
        unique=True,
        postgresql_where=sa.text("reembedded_from IS NOT NULL"),
    )

    op.create_table(
        "people_imports",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                name="import_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("people_created", sa.Integer(), nullable=False),
        sa.Column("problems", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("archive_key", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_people_imports_owner_id", "people_imports", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_people_imports_owner_id", table_name="people_imports")
    op.drop_table("people_imports")
    op.drop_index("ux_person_faces_reembedded_from_model", table_name="person_faces")
    op.drop_constraint("person_faces_reembedded_from_fkey", "person_faces", type_="foreignkey")
    op.drop_column("person_faces", "reembedded_from")
    for spec in EMBEDDER_SPECS:
        op.execute(f"DROP INDEX IF EXISTS {gallery_index_name(spec.model)}")
    for model in ADDED_EMBEDDERS:
        op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('face_embeddings', model)}")
    # 0005's float HNSW indexes of person_faces (for every embedder known now: 0005's downgrade
    # drops them all by name).
    for statement in hnsw_index_statements("person_faces"):
        op.execute(statement)
