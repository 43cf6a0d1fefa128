"""The SQL shape of nearest-neighbour search on the unconstrained `vector` columns.

HNSW needs a fixed dimension, so each known embedder gets partial expression indexes, all of
them HNSW graphs over the embeddings' binary quantization:
`(binary_quantize(embedding::vector(DIM))::bit(DIM)) bit_hamming_ops) WHERE model = 'NAME'`.
One bit per dimension: 64 bytes a face at 512-d instead of 2 KB, so a million faces build in
minutes and the graph fits in memory; a search takes the nearest candidates by Hamming distance
from it and re-ranks them by their exact cosine.
- person_faces (the gallery identify searches; migration 0009, app/gallery/matching.py);
  bench/RESULTS.md ("Gallery") measures it against exact search.
- face_embeddings (faces seen in jobs: past-face search, unknown-face clustering; migration
  0016). Every face a worker writes is an insert into it: Postgres CPU a 512-d face, 2.4-2.7
  ms at 50k faces (1.1-1.2 at 14k), where the float HNSW index it replaced (0005) took 4.1-4.5
  ms (2.9-3.9); bench/RESULTS.md, after "Clustering".
The planner uses an index only when a query repeats its expression and filters on the same
model, so every similarity query is built here, from the same pieces.
"""

import re
import uuid
from collections.abc import Callable

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


def _index_statements(
    table: str, name: Callable[[str], str], expression: Callable[[int], str], ops: str
) -> list[str]:
    """CREATE INDEX statements of HNSW partial indexes, one per known embedder (names and dims
    from app/embedders.py): `name(model)`, over `expression(dim)` with operator class `ops`."""
    statements = []
    for spec in EMBEDDER_SPECS:
        if not _SAFE_NAME.match(spec.model):
            raise ValueError(f"embedder name {spec.model!r} cannot be used in an index name")
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {name(spec.model)} ON {table} "
            f"USING hnsw ({expression(spec.dim)} {ops}) WHERE model = '{spec.model}'"
        )
    return statements


def hnsw_index_statements(table: str) -> list[str]:
    """The float HNSW indexes of 0005 (face_embeddings' until 0016)."""
    return _index_statements(
        table,
        lambda model: hnsw_index_name(table, model),
        lambda dim: vector_expression("embedding", dim),
        "vector_cosine_ops",
    )


def hnsw_index_names() -> set[str]:
    """Every per-model index the migrations create outside the ORM (`alembic check` skips
    them): the float HNSW indexes of 0005 (dropped by 0009 and 0016), the gallery's quantized
    ones (0009) and face_embeddings' (0016)."""
    return {hnsw_index_name(t, m) for t in EMBEDDING_TABLES for m in embedder_dims()} | {
        name for m in embedder_dims() for name in (gallery_index_name(m), seen_index_name(m))
    }


# --- the quantized indexes: HNSW over binary-quantized embeddings, exact re-rank --------------


def gallery_index_name(model: str) -> str:
    return f"ix_person_faces_bq_{model}"


def quantized_expression(column: str, dim: int) -> str:
    """The column's sign bits: the quantized indexes' expression."""
    return f"(binary_quantize({vector_expression(column, dim)})::bit({int(dim)}))"


def hamming_expression(column: str, dim: int, parameter: str = "query") -> str:
    """Hamming distance between the column's sign bits and the bound parameter's."""
    return (
        f"{quantized_expression(column, dim)} <~> "
        f"binary_quantize(CAST(:{parameter} AS vector({int(dim)})))::bit({int(dim)})"
    )


def hamming_between(column: str, other: str, dim: int) -> str:
    """Hamming distance between two columns' sign bits (`column`'s index serves it)."""
    return f"{quantized_expression(column, dim)} <~> {quantized_expression(other, dim)}"


def gallery_index_statement(
    model: str,
    dim: int,
    *,
    m: int,
    ef_construction: int,
    name: str | None = None,
    concurrently: bool = False,
) -> str:
    """CREATE INDEX for one model's gallery faces (m, ef_construction: pgvector's HNSW
    parameters; app/gallery/index.py chooses them by gallery size)."""
    if not _SAFE_NAME.match(model):
        raise ValueError(f"embedder name {model!r} cannot be used in an index name")
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
        f"{name or gallery_index_name(model)} ON person_faces "
        f"USING hnsw ({quantized_expression('embedding', dim)} bit_hamming_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE model = '{model}'"
    )


def seen_index_name(model: str) -> str:
    """face_embeddings' index of `model` (faces seen in jobs)."""
    return f"ix_face_embeddings_bq_{model}"


def seen_index_statements() -> list[str]:
    """CREATE INDEX of face_embeddings, one per known embedder: the sign bits' HNSW graph with
    pgvector's default parameters (m 16, ef_construction 64). Its searches re-rank a pool of
    candidates by exact cosine (app/gallery/clusters.py, app/gallery/matching.py)."""
    return _index_statements(
        "face_embeddings",
        seen_index_name,
        lambda dim: quantized_expression("embedding", dim),
        "bit_hamming_ops",
    )


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


def owner_clause(owner_id: uuid.UUID | None) -> str:
    """The people (`p`) of one owner, written so the planner can estimate how many there are: an
    `owner_id IS NOT DISTINCT FROM :owner` is estimated at about one person whatever the truth,
    which made Postgres walk every face of the owner instead of the index (bench/RESULTS.md)."""
    return "p.owner_id IS NULL" if owner_id is None else "p.owner_id = :owner_id"
