"""The SQL shape of nearest-neighbour search on the unconstrained `vector` columns.

HNSW needs a fixed dimension, so each known embedder gets a partial expression index
`USING hnsw ((embedding::vector(DIM)) vector_cosine_ops) WHERE model = 'NAME'` (migration 0005).
The planner uses it only when a query repeats that expression and filters on the same model,
so every similarity query is built here, from the same pieces.
"""

import re

from app.calibration import SimilarityCalibration
from app.embedders import EMBEDDER_SPECS, embedder_dims

# Tables holding searchable face embeddings (column `embedding`, `model`, `dim`).
EMBEDDING_TABLES = ("face_embeddings", "person_faces")
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")


def hnsw_index_name(table: str, model: str) -> str:
    return f"ix_{table}_hnsw_{model}"


def vector_expression(column: str, dim: int) -> str:
    """`column` cast to a fixed dimension: the indexed expression. dim is an int, never input."""
    return f"({column}::vector({int(dim)}))"


def distance_expression(column: str, dim: int, parameter: str = "query") -> str:
    """Cosine distance from the column to a bound parameter, in the index's own expression."""
    return f"{vector_expression(column, dim)} <=> CAST(:{parameter} AS vector({int(dim)}))"


def hnsw_index_statements(table: str) -> list[str]:
    """CREATE INDEX statements, one per known embedder (names and dims from app/embedders.py)."""
    statements = []
    for spec in EMBEDDER_SPECS:
        if not _SAFE_NAME.match(spec.model):
            raise ValueError(f"embedder name {spec.model!r} cannot be used in an index name")
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(table, spec.model)} ON {table} "
            f"USING hnsw ({vector_expression('embedding', spec.dim)} vector_cosine_ops) "
            f"WHERE model = '{spec.model}'"
        )
    return statements


def hnsw_index_names() -> set[str]:
    return {hnsw_index_name(t, m) for t in EMBEDDING_TABLES for m in embedder_dims()}


def similarity_calibration(model: str) -> SimilarityCalibration:
    """The calibration of the embedder whose vectors are stored under `model`."""
    for spec in EMBEDDER_SPECS:
        if spec.model == model:
            return spec.calibration
    raise ValueError(f"no embedder spec named {model!r}")


def calibrated_similarity(cosine: float, model: str) -> float:
    """The similarity every API reports for a raw cosine between two `model` embeddings."""
    return similarity_calibration(model).similarity(cosine)


def models_of_dim(dim: int) -> list[str]:
    """The known embedding models that make `dim`-dimensional vectors."""
    return [spec.model for spec in EMBEDDER_SPECS if spec.dim == dim]
