"""Nearest-neighbour SQL on face embeddings, shared by the API (enroll, search, verify) and the
workers (identify). No FastAPI here; callers own the session and the commit.

Every query filters on one embedding model and uses the indexed expression from app/vectors.py,
so Postgres can answer from that model's HNSW index. Cosine = 1 − cosine distance; the
`similarity` returned is the model's calibrated similarity of it (app/calibration.py), which
orders results the same way.

Identify (nearest_people) runs in two steps inside one statement: the gallery's HNSW index
over the faces' sign bits hands over the `candidates` nearest faces by Hamming distance (with
`ef_search` set for the query, and an iterative scan so an owner filter never leaves it short),
then those faces are re-ranked by their exact cosine and each person keeps their best face.
Postgres holds every vector; the index only narrows the search.

A gallery past MemoryIndexTuning.min_faces gets an in-memory index in each process
(app/gallery/memory_index.py): its candidates, and the faces enrolled since its snapshot, are
re-ranked by exact cosine in Postgres in the same way, so what a deleted face or a filter
means never depends on the index.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.gallery.memory_index import (
    DEFAULT_MEMORY_INDEX_TUNING,
    MEMORY_INDEXES,
    MemoryIndex,
    MemoryIndexTuning,
)
from app.models import JobPurpose
from app.vectors import (
    calibrated_similarity,
    distance_expression,
    gallery_index_name,
    hamming_expression,
    owner_clause,
)

# Loaded rows may hold a numpy array or a plain list, depending on the driver's codec.
Vector = npt.NDArray[np.float32] | list[float]


@dataclass(frozen=True)
class PersonMatch:
    person_id: uuid.UUID
    name: str
    face_id: uuid.UUID  # the enrolled face that matched best
    similarity: float  # calibrated (app/calibration.py)
    cosine: float  # raw


@dataclass(frozen=True)
class PastFace:
    face_id: int  # the detection id of the face (face_embeddings' key)
    job_id: uuid.UUID
    created_at: datetime
    box: list[float]
    similarity: float  # calibrated (app/calibration.py)


@dataclass(frozen=True)
class SearchTuning:
    """How hard identify searches the gallery index (bench/gallery.py measures the trade).

    ef_search: pgvector's hnsw.ef_search, the candidate list the graph walk keeps, for a
    model's gallery of up to `large_gallery` faces; ef_search_large beyond (a larger graph
    needs a wider walk to find a face as often). candidates: faces taken from the index,
    nearest by Hamming distance, and re-ranked by exact cosine. max_scan_tuples: how far an
    iterative scan may go when an owner filter rejects what the index finds
    (hnsw.max_scan_tuples), before it gives up.
    """

    ef_search: int = 200
    ef_search_large: int = 400
    large_gallery: int = 250_000
    candidates: int = 50
    max_scan_tuples: int = 20_000
    memory: MemoryIndexTuning = DEFAULT_MEMORY_INDEX_TUNING


# Chosen with bench/gallery.py (bench/RESULTS.md, "Gallery"): on face-like 512-d faces the
# right person came first 99-99.75% of the time at 100k from ef_search 200 (exact: 100%), and
# a 300k graph needed twice the walk for as much; 50 candidates re-ranked found the same people
# as 100 or 200 at a fraction of the row fetches.
DEFAULT_TUNING = SearchTuning()
_TUNED = "lookout_gallery_tuning"  # session.info key: the tuning set in the open transaction


# A bound :model never matches a partial index's `model = '…'` in a prepared statement's
# generic plan, which Postgres may switch a connection to after five executions: the search
# then sorts every face by exact distance instead of walking the index (measured in clustering
# at 100k faces: 60 ms a face instead of 4). Similarity queries are planned for their values.
CUSTOM_PLANS = "set_config('plan_cache_mode', 'force_custom_plan', true)"


async def use_exact_hnsw_filtering(session: AsyncSession) -> None:
    """With a filter (owner, person) an HNSW scan may stop before it finds a matching row;
    pgvector ≥ 0.8 can keep scanning (iterative scan) in exact distance order. Lasts for the
    transaction, like custom plans (CUSTOM_PLANS); on older pgvector the setting is a harmless
    placeholder."""
    await session.execute(
        text(f"SELECT set_config('hnsw.iterative_scan', 'strict_order', true), {CUSTOM_PLANS}")
    )


async def _tune(session: AsyncSession, tuning: SearchTuning, model: str) -> None:
    """Set the search parameters for the open transaction, once per transaction and model
    (SET LOCAL: a pooled connection never carries them into someone else's query). The
    gallery's size is the index's row estimate in the catalog (kept by VACUUM/ANALYZE): one
    round trip for all of it."""
    transaction = session.get_transaction()
    if transaction is not None and session.info.get(_TUNED) == (transaction, tuning, model):
        return
    await session.execute(
        text(
            "SELECT set_config('hnsw.iterative_scan', 'strict_order', true), "
            "set_config('hnsw.ef_search', CASE WHEN coalesce((SELECT reltuples FROM pg_class "
            "WHERE relname = :index), 0) > :large_gallery THEN :ef_search_large ELSE :ef_search "
            "END, true), "
            f"set_config('hnsw.max_scan_tuples', :max_scan_tuples, true), {CUSTOM_PLANS}"
        ),
        {
            "index": gallery_index_name(model),
            "large_gallery": tuning.large_gallery,
            "ef_search": str(tuning.ef_search),
            "ef_search_large": str(tuning.ef_search_large),
            "max_scan_tuples": str(tuning.max_scan_tuples),
        },
    )
    session.info[_TUNED] = (session.get_transaction(), tuning, model)


async def nearest_people(
    session: AsyncSession,
    vector: Vector,
    *,
    model: str,
    owner_id: uuid.UUID | None,
    limit: int = 1,
    tuning: SearchTuning = DEFAULT_TUNING,
) -> list[PersonMatch]:
    """The named people of `owner_id` nearest to `vector`, best first, each with their best
    enrolled face (exact cosine), at most `limit` people."""
    dim = len(vector)
    index = await MEMORY_INDEXES.for_query(session, model, dim, owner_id, tuning.memory)
    if index is not None:
        return await _nearest_people_from_memory(
            session, index, vector, model=model, owner_id=owner_id, limit=limit, tuning=tuning
        )
    await _tune(session, tuning, model)
    rows = await session.execute(
        text(
            f"""
            SELECT DISTINCT ON (person_id) person_id, name, face_id,
                {distance_expression("candidate.embedding", dim)} AS distance
            FROM (
                SELECT f.person_id, p.name, f.id AS face_id, f.embedding
                FROM person_faces f JOIN people p ON p.id = f.person_id
                WHERE f.model = :model AND {owner_clause(owner_id)} AND p.name IS NOT NULL
                ORDER BY {hamming_expression("f.embedding", dim)}
                LIMIT :candidates
            ) candidate
            ORDER BY person_id, distance
            """
        ),
        {
            "query": literal(vector),
            "model": model,
            "candidates": max(tuning.candidates, limit),
            **({"owner_id": owner_id} if owner_id is not None else {}),
        },
    )
    return _best_people(rows, model, limit)


async def _nearest_people_from_memory(
    session: AsyncSession,
    index: MemoryIndex,
    vector: Vector,
    *,
    model: str,
    owner_id: uuid.UUID | None,
    limit: int,
    tuning: SearchTuning,
) -> list[PersonMatch]:
    """nearest_people on a gallery with an in-memory index (app/gallery/memory_index.py): its
    candidates plus the faces enrolled since its snapshot, re-ranked by exact cosine with the
    same filters (the index holds only this owner's faces, of every name)."""
    dim = len(vector)
    candidates = index.search(vector, max(tuning.memory.candidates, limit))
    rows = await session.execute(
        text(
            f"""
            SELECT DISTINCT ON (person_id) person_id, name, face_id, distance FROM (
                SELECT f.person_id, p.name, f.id AS face_id,
                    {distance_expression("f.embedding", dim)} AS distance
                FROM person_faces f JOIN people p ON p.id = f.person_id
                WHERE f.model = :model AND {owner_clause(owner_id)} AND p.name IS NOT NULL
                  AND (f.id = ANY(:candidates) OR f.created_at >= :fresh_since)
            ) candidate
            ORDER BY person_id, distance
            """
        ),
        {
            "query": literal(vector),
            "model": model,
            "candidates": candidates,
            "fresh_since": index.fresh_since(),
            **({"owner_id": owner_id} if owner_id is not None else {}),
        },
    )
    return _best_people(rows, model, limit)


def _best_people(rows: Any, model: str, limit: int) -> list[PersonMatch]:
    matches = [
        PersonMatch(
            row.person_id,
            row.name,
            row.face_id,
            calibrated_similarity(1 - float(row.distance), model),
            round(1 - float(row.distance), 4),
        )
        for row in rows
    ]
    matches.sort(key=lambda m: -m.similarity)
    return matches[:limit]


async def nearest_face_of_person(
    session: AsyncSession, vector: Vector, *, model: str, person_id: uuid.UUID
) -> tuple[uuid.UUID, float] | None:
    """The person's own enrolled face nearest to `vector` (face id, RAW cosine), if any: the
    near-duplicate check compares photos, not identities, so it stays on the cosine scale."""
    dim = len(vector)
    distance = distance_expression("embedding", dim)
    row = (
        await session.execute(
            text(
                f"SELECT id, {distance} AS distance FROM person_faces "
                f"WHERE model = :model AND person_id = :person_id ORDER BY {distance} LIMIT 1"
            ),
            {"query": literal(vector), "model": model, "person_id": person_id},
        )
    ).first()
    return None if row is None else (row.id, round(1 - float(row.distance), 4))


async def nearest_past_faces(
    session: AsyncSession,
    vector: Vector,
    *,
    model: str,
    owner_id: uuid.UUID | None,
    every_owner: bool,
    since: datetime,
    limit: int,
) -> list[PastFace]:
    """Faces seen in past jobs (of `owner_id`, or of everyone), nearest first: the faces of
    uploads, node frames and detection calls (purpose `detect`). Gallery calls' own jobs are
    left out, the calling search's included: they are questions about a photo, which would
    come back at similarity 1.0 when the photo is asked about again (app.models.JobPurpose).

    The candidates come from face_embeddings' quantized index, nearest by their sign bits (as
    many as identify re-ranks, or 4 for each face asked for), and are re-ranked by exact
    cosine. Call use_exact_hnsw_filtering first: the filters apply during the scan."""
    dim = len(vector)
    rows = await session.execute(
        text(
            f"""
            SELECT detection_id, job_id, created_at, box, distance FROM (
                SELECT e.detection_id, e.job_id, j.created_at, d.box,
                    {distance_expression("e.embedding", dim)} AS distance
                FROM face_embeddings e
                JOIN jobs j ON j.id = e.job_id
                JOIN detections d ON d.id = e.detection_id
                WHERE e.model = :model
                  AND (:every_owner OR j.owner_id IS NOT DISTINCT FROM :owner_id)
                  AND j.created_at >= :since
                  AND j.purpose = :purpose
                ORDER BY {hamming_expression("e.embedding", dim)}
                LIMIT :candidates
            ) candidate
            ORDER BY distance
            LIMIT :limit
            """
        ),
        {
            "query": literal(vector),
            "model": model,
            "every_owner": every_owner,
            "owner_id": owner_id,
            "since": since,
            "purpose": JobPurpose.detect.value,
            "candidates": max(DEFAULT_TUNING.candidates, 4 * limit),
            "limit": limit,
        },
    )
    return [
        PastFace(
            row.detection_id,
            row.job_id,
            row.created_at,
            list(row.box),
            calibrated_similarity(1 - float(row.distance), model),
        )
        for row in rows
    ]


def literal(vector: Vector) -> str:
    """pgvector's text form '[x,y,…]': bound as a string and CAST in SQL to vector(dim)."""
    return "[" + ",".join(f"{float(v):.7g}" for v in vector) + "]"
