"""The gallery's index, one per embedding model: its HNSW parameters by gallery size, and the
rebuild `lookout gallery reindex` runs. No FastAPI here.

The index is derived data: person_faces (Postgres) is the source of truth, and the index can be
dropped and rebuilt from it at any time without losing a face. A rebuild builds the new index
beside the live one (CREATE INDEX CONCURRENTLY: identify and enrollment keep working), then
swaps the two in one short transaction.
"""

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.embedders import embedder_dims
from app.settings import GallerySettings
from app.vectors import gallery_index_name, gallery_index_statement


@dataclass(frozen=True)
class IndexParameters:
    """pgvector HNSW build parameters: m (links per node) and ef_construction (the candidate
    list while linking). Larger finds more of the true neighbours, and builds slower."""

    m: int
    ef_construction: int


# (gallery faces up to, parameters), smallest first; the last applies beyond. Chosen with
# bench/gallery.py on face-like 512-d faces (bench/RESULTS.md, "Gallery"): identify re-ranks the
# index's candidates by exact cosine, so the graph only has to reach the right person, but a
# face with no other photo of its person near it is a needle the walk must find among
# strangers who all look alike to the sign bits. At 100k, m=16/ef_construction=64 put the right
# person first 99.0% of the time at ef_search 200, m=24/96 99.0-99.75% at 200-400, m=32/128
# 99.5-100% (building 2.5× as long as 16/64): past 250k faces the graph gets the larger links.
INDEX_PARAMETERS: tuple[tuple[int, IndexParameters], ...] = (
    (250_000, IndexParameters(m=24, ef_construction=96)),
    (2**62, IndexParameters(m=32, ef_construction=128)),
)


def index_parameters(faces: int, settings: GallerySettings | None = None) -> IndexParameters:
    """The HNSW parameters for a gallery of `faces` faces of one model (the settings'
    index_m / index_ef_construction, when set, win)."""
    chosen = INDEX_PARAMETERS[-1][1]
    for up_to, parameters in INDEX_PARAMETERS:
        if faces <= up_to:
            chosen = parameters
            break
    if settings is not None:
        chosen = IndexParameters(
            m=settings.index_m or chosen.m,
            ef_construction=settings.index_ef_construction or chosen.ef_construction,
        )
    return chosen


@dataclass(frozen=True)
class Rebuild:
    model: str
    faces: int
    parameters: IndexParameters
    seconds: float
    index_bytes: int
    # False when pgvector said the graph outgrew maintenance_work_mem (a slower, spilled build).
    in_memory: bool


async def rebuild_index(
    connection: AsyncConnection,
    model: str,
    *,
    memory_mb: int,
    workers: int,
    settings: GallerySettings | None = None,
) -> Rebuild:
    """Rebuild `model`'s gallery index with the parameters for its current size.

    `connection` must be in autocommit (CREATE INDEX CONCURRENTLY runs outside a transaction).
    An earlier rebuild that was interrupted leaves an invalid index under the temporary name;
    it is dropped first, so the command can simply be run again.
    """
    dim = embedder_dims()[model]
    live, building = gallery_index_name(model), f"{gallery_index_name(model)}_rebuild"
    faces = int(
        await connection.scalar(
            text("SELECT count(*) FROM person_faces WHERE model = :model"), {"model": model}
        )
        or 0
    )
    parameters = index_parameters(faces, settings)
    await connection.execute(text(f"SET maintenance_work_mem = '{int(memory_mb)}MB'"))
    await connection.execute(text(f"SET max_parallel_maintenance_workers = {int(workers)}"))
    await connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {building}"))
    notices: list[str] = []
    raw: Any = (await connection.get_raw_connection()).driver_connection  # asyncpg's own
    listener = _notice_collector(notices)
    raw.add_log_listener(listener)
    started = time.perf_counter()
    try:
        await connection.execute(
            text(
                gallery_index_statement(
                    model,
                    dim,
                    m=parameters.m,
                    ef_construction=parameters.ef_construction,
                    name=building,
                    concurrently=True,
                )
            )
        )
    finally:
        raw.remove_log_listener(listener)
    seconds = time.perf_counter() - started
    # The swap: a moment's lock on person_faces, in one transaction (on the driver's own
    # connection: this one is in autocommit).
    async with raw.transaction():
        await raw.execute(f"DROP INDEX IF EXISTS {live}")
        await raw.execute(f"ALTER INDEX {building} RENAME TO {live}")
    size = await connection.scalar(
        text("SELECT pg_relation_size(CAST(:name AS regclass))"), {"name": live}
    )
    return Rebuild(
        model=model,
        faces=faces,
        parameters=parameters,
        seconds=seconds,
        index_bytes=int(size or 0),
        in_memory=not any(spilled(n) for n in notices),
    )


def spilled(notice: str) -> bool:
    """pgvector's NOTICE when the HNSW graph outgrows maintenance_work_mem mid-build."""
    return "no longer fits into maintenance_work_mem" in notice


def _notice_collector(notices: list[str]) -> Any:
    def collect(_connection: object, message: object) -> None:
        notices.append(str(message))

    return collect


async def gallery_models(connection: AsyncConnection) -> dict[str, int]:
    """Faces per embedding model in the gallery."""
    rows = await connection.execute(
        text("SELECT model, count(*) FROM person_faces GROUP BY model ORDER BY model")
    )
    return {str(model): int(count) for model, count in rows}
