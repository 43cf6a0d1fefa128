"""face_embeddings (faces seen in jobs) indexed by their sign bits, as the gallery is: the float
HNSW index cost Postgres 4.1-4.5 ms of CPU for every 512-d face a worker wrote at 50k faces, the
quantized one 2.4-2.7 ms (bench/RESULTS.md, after "Clustering"); its graph is 64 bytes a face
instead of 2 KB. Past-face search and clustering re-rank its candidates by exact cosine
(app/vectors.py).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from app.embedders import EMBEDDER_SPECS
from app.settings import get_settings
from app.vectors import (
    hnsw_index_name,
    hnsw_index_statements,
    seen_index_name,
    seen_index_statements,
)

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The build needs its graph in memory, as 0009's did (many faces would otherwise spill).
    memory_mb = get_settings().gallery.index_build_memory_mb
    op.execute(f"SET LOCAL maintenance_work_mem = '{memory_mb}MB'")
    for spec in EMBEDDER_SPECS:
        op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name('face_embeddings', spec.model)}")
    for statement in seen_index_statements():
        op.execute(statement)


def downgrade() -> None:
    for spec in EMBEDDER_SPECS:
        op.execute(f"DROP INDEX IF EXISTS {seen_index_name(spec.model)}")
    for statement in hnsw_index_statements("face_embeddings"):
        op.execute(statement)
