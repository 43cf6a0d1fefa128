"""An in-memory index of a large gallery, one per model and owner, per process: where
identify takes its candidates once a gallery outgrows pgvector's graph.

Why: pgvector walks its HNSW graph through Postgres's shared buffers, tuple by tuple; at a
million faces a walk wide enough to find the right person 99% of the time took 52 ms a query,
and an HNSW graph of the sign bits in process memory still missed the right person 1.2% of the
time and took 518 s to build (bench/RESULTS.md, "Gallery"). Nothing needs a graph at this size:
a *flat* scan of every face's 96 bytes of sign bits (Hamming distance, faiss's SIMD popcount)
takes about 5 ms at a million faces on one core and never misses a face a walk would skip.

Two codes per face (faiss IndexRefine):
- sign bits, 1.5 per element (IndexLSH: the signs of a random rotation of the embedding into
  1.5 × its dimension), scanned in full for the `shortlist` faces nearest by Hamming distance;
- 4 bits per element (IndexScalarQuantizer), which re-score the shortlist by an estimate of
  the inner product within about 0.01, so the `candidates` handed on are the nearest by
  cosine, not by the coarse Hamming distance.
A stranger's nearest face sits near the match threshold, where Hamming order is loose, and
whether identify accepts a stranger is decided there: taking the best 50 by Hamming accepted
15% of strangers where exact search accepts 23% at 1M faces. On 1M face-like vectors (2,000
strangers, bench/gallery.py's space), a re-scored shortlist of 1,000 judged strangers otherwise
than exact search did for 1.5% of them with the 512 plain sign bits (3.4 ms a search), 0.15%
with 768 rotated bits (5.0 ms) and 0.05% with 1,024 (6.3 ms) (bench/RESULTS.md, "How the
gallery's index was chosen").
352 bytes of codes and 16 of face id a face (512-d): about 0.37 GB per process at a million.

Postgres stays the source of truth; the index only proposes face ids:
- identify (app/gallery/matching.py) re-ranks the proposed faces by their exact cosine *in
  Postgres*, with the owner, model and name filters: a face deleted since the index was built,
  or whose person was renamed or removed, drops out there;
- faces enrolled after the index's snapshot are read from Postgres directly (an index on
  (model, created_at)) until the next refresh adds them, so a face enrolled a moment ago is
  found by the very next query, in every process;
- deleted faces stay in the index as dead candidates until a count check sees it has outgrown
  the gallery by `MemoryIndexTuning.rebuild_dead_share` and rebuilds it (beside the live one).

The index is built lazily, on the first query of a model and owner whose gallery has at least
`MemoryIndexTuning.min_faces` faces; until it is ready (a read of every embedding: about 30 s
at 1M) identify uses pgvector's graph as before. Smaller galleries never build one:
pgvector is fast enough there and needs no memory in every process. Each process that
identifies (API, workers) holds its own.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.vectors import owner_clause, vector_expression

log = structlog.get_logger()

# One query is one scan: faiss would open an OpenMP region on every core for it, whose idle
# threads spin beside the worker's inference threads. Identify's queries run one at a time per
# process, on the event loop's thread.
faiss.omp_set_num_threads(1)


@dataclass(frozen=True)
class MemoryIndexTuning:
    """When a gallery gets an in-memory index and how it is searched.

    Chosen with bench/gallery.py (bench/RESULTS.md, "Gallery").
    """

    # Faces of one model and owner from which identify builds and uses the index: at 100k
    # pgvector's walk took 12 ms a query.
    min_faces: int = 50_000
    # Faces taken nearest by Hamming distance and re-scored from their 4-bit codes, and the
    # best of those handed to Postgres for the exact re-rank.
    shortlist: int = 1000
    candidates: int = 50
    # How often a query first adds the faces enrolled since (seconds), and how far back it
    # looks: a face's created_at is its transaction's start, so a face committed up to
    # `late_commit_s` after its transaction began is still caught.
    refresh_s: float = 5.0
    late_commit_s: float = 120.0
    # How often the gallery is counted, and the share of the index that may be deleted faces
    # before it is rebuilt.
    count_check_s: float = 300.0
    rebuild_dead_share: float = 0.1
    # How often a gallery below min_faces is counted again.
    size_check_s: float = 60.0


DEFAULT_MEMORY_INDEX_TUNING = MemoryIndexTuning()
LOAD_CHUNK = 20_000
EVER = datetime(1970, 1, 1, tzinfo=UTC)
UUID_BYTES = 16


# Sign bits per element of the embedding: more bits estimate the angle more tightly (fewer
# strangers judged differently from exact search) and cost a longer scan (module docstring).
SIGN_BITS_PER_ELEMENT = 1.5


def sign_bits(dim: int) -> int:
    """The sign bits of a face of `dim` elements: a whole number of bytes."""
    return max(8, round(dim * SIGN_BITS_PER_ELEMENT / 8) * 8)


@dataclass
class MemoryIndex:
    """One gallery's index: its i-th face is face_id(i).

    `watermark`: a time (Postgres's clock) when the index held every face committed by then.
    Faces created up to `late_commit_s` before it may still have committed after it, and
    faces created since certainly may be missing: identify reads both from Postgres
    (fresh_since), and the next refresh adds them.
    """

    dim: int
    tuning: MemoryIndexTuning
    watermark: datetime | None = None
    index: Any = field(init=False)  # faiss.IndexRefine (faiss has no type hints)
    # Face ids, 16 bytes each in index order: a list of a million UUID objects would take
    # 100 MB more than the codes themselves.
    _ids: bytearray = field(default_factory=bytearray)
    # The faces it holds that were created since fresh_since() (with their created_at): what
    # a refresh, which reads them again, must not add twice.
    recent: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # L2 on unit vectors orders faces as cosine does; the sign bits of a random rotation
        # (faiss's, from a fixed seed, made when the index is trained), no trained thresholds.
        bits = faiss.IndexLSH(self.dim, sign_bits(self.dim), True, False)
        codes = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_4bit)
        self.index = faiss.IndexRefine(bits, codes)
        self._bits, self._codes = bits, codes  # the index points at them; Python owns them

    def __len__(self) -> int:
        return len(self._ids) // UUID_BYTES

    def face_id(self, position: int) -> uuid.UUID:
        start = position * UUID_BYTES
        return uuid.UUID(bytes=bytes(self._ids[start : start + UUID_BYTES]))

    def add(
        self,
        ids: list[uuid.UUID],
        vectors: npt.NDArray[np.float32],
        created: list[datetime],
    ) -> None:
        if not ids:
            return
        # Unit length, as the query: the codes' L2 distance then orders faces as cosine does
        # (workers store unit embeddings; this keeps it true of any row).
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = np.ascontiguousarray(
            vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        )
        if not self.index.is_trained:
            # The rotation, and the 4-bit codes' range per element from the first faces read
            # (20,000 of a large gallery) and their mirror images: a symmetric range never
            # collapses to a point, even trained on one face. Later faces outside it are
            # clipped to it.
            self.index.train(np.concatenate([vectors, -vectors]))
        self.index.add(vectors)  # numbered on from ntotal, as _ids
        for face_id in ids:
            self._ids += face_id.bytes
        since = self.fresh_since()
        for face_id, at in zip(ids, created, strict=True):
            if at >= since:
                self.recent[face_id] = at

    def advance(self, to: datetime) -> None:
        """Every face committed by `to` is in the index now."""
        if self.watermark is not None and to <= self.watermark:
            return
        self.watermark = to
        since = self.fresh_since()
        self.recent = {i: at for i, at in self.recent.items() if at >= since}

    def fresh_since(self) -> datetime:
        """Faces created at or after this may be missing from the index: identify reads them
        from Postgres directly (every face, before the index has a watermark)."""
        if self.watermark is None:
            return EVER
        return self.watermark - timedelta(seconds=self.tuning.late_commit_s)

    def search(self, vector: npt.ArrayLike, count: int) -> list[uuid.UUID]:
        """The face ids of up to `count` nearest faces: the shortlist by Hamming distance of
        the sign bits, re-scored from the 4-bit codes."""
        if not len(self):
            return []
        query = np.asarray(vector, dtype=np.float32)[None, :]
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        # The shortlist as a factor of `count` (faiss's k_factor), read from the tuning per
        # query: the tuning is the one place it is set.
        shortlist = faiss.IndexRefineSearchParameters()
        shortlist.k_factor = max(self.tuning.shortlist / count, 1.0)
        _, found = self.index.search(query, count, params=shortlist)
        return [self.face_id(int(key)) for key in found[0] if key >= 0]

    def memory_bytes(self) -> int:
        """The two codes and the face ids."""
        per_face = self._bits.code_size + self._codes.code_size + UUID_BYTES
        return int(len(self) * per_face)


def _gallery_filter(owner_id: uuid.UUID | None) -> str:
    return f"f.model = :model AND {owner_clause(owner_id)}"


def _parameters(model: str, owner_id: uuid.UUID | None, **more: Any) -> dict[str, Any]:
    return {"model": model, **({"owner_id": owner_id} if owner_id is not None else {}), **more}


def _rows_to_arrays(
    rows: list[Any], dim: int
) -> tuple[list[uuid.UUID], npt.NDArray[np.float32], list[datetime]]:
    # pgvector's binary form: two int16 (dimension, unused), then big-endian float4s.
    vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype=">f4")
    vectors = vectors.reshape(len(rows), dim + 1)[:, 1:].astype(np.float32)
    return [row.id for row in rows], vectors, [row.created_at for row in rows]


def _faces_statement(dim: int, owner_id: uuid.UUID | None, since: bool) -> str:
    # vector_send: 4 bytes an element in binary, where the text form would be parsed float by
    # float (a million faces' worth on every build).
    return (
        f"SELECT f.id, f.created_at, vector_send({vector_expression('f.embedding', dim)}) "
        f"AS vector FROM person_faces f JOIN people p ON p.id = f.person_id "
        f"WHERE {_gallery_filter(owner_id)}" + (" AND f.created_at >= :since" if since else "")
    )


async def count_faces(
    connection: AsyncConnection | AsyncSession, model: str, owner_id: uuid.UUID | None
) -> int:
    return int(
        await connection.scalar(
            text(
                "SELECT count(*) FROM person_faces f JOIN people p ON p.id = f.person_id "
                f"WHERE {_gallery_filter(owner_id)}"
            ),
            _parameters(model, owner_id),
        )
        or 0
    )


async def build_memory_index(
    engine: AsyncEngine,
    model: str,
    dim: int,
    owner_id: uuid.UUID | None,
    tuning: MemoryIndexTuning = DEFAULT_MEMORY_INDEX_TUNING,
) -> MemoryIndex:
    """Read every face's embedding of the gallery from Postgres and code them into a new index,
    chunk by chunk (the coding in a thread: faiss lets go of the GIL), so the event loop keeps
    serving while it builds."""
    async with engine.connect() as connection:
        # The transaction's start: what the read below sees was committed by then at least.
        index = MemoryIndex(dim, tuning, watermark=await connection.scalar(text("SELECT now()")))
        result = await connection.stream(
            text(_faces_statement(dim, owner_id, since=False)), _parameters(model, owner_id)
        )
        async for chunk in result.partitions(LOAD_CHUNK):
            ids, vectors, created = _rows_to_arrays(list(chunk), dim)
            await asyncio.to_thread(index.add, ids, vectors, created)
    return index


async def refresh_memory_index(
    session: AsyncSession, index: MemoryIndex, model: str, owner_id: uuid.UUID | None
) -> int:
    """Add the faces created since the index's fresh_since() that it does not hold yet, and
    move its watermark to the session's transaction start; returns how many were added."""
    now = await session.scalar(text("SELECT now()"))
    rows = (
        await session.execute(
            text(_faces_statement(index.dim, owner_id, since=True)),
            _parameters(model, owner_id, since=index.fresh_since()),
        )
    ).all()
    new = [row for row in rows if row.id not in index.recent]
    if new:
        ids, vectors, created = _rows_to_arrays(new, index.dim)
        index.add(ids, vectors, created)
    index.advance(now)
    return len(new)


@dataclass
class _Gallery:
    """What this process knows of one model and owner's gallery."""

    index: MemoryIndex | None = None
    building: asyncio.Task[MemoryIndex] | None = None
    sized_at: float = float("-inf")  # when the gallery was last counted
    refreshed_at: float = float("-inf")


class MemoryIndexes:
    """This process's indexes, by database, model and owner."""

    def __init__(self) -> None:
        self._galleries: dict[tuple[str, str, uuid.UUID | None], _Gallery] = {}
        # Off: identify walks pgvector's graph at every size (settings.gallery.memory_index).
        self.enabled = True

    def configure(self, enabled: bool) -> None:
        """Set at process start from settings.gallery.memory_index."""
        self.enabled = enabled

    def forget(self) -> None:
        """Drop every index (tests; a process that switches databases)."""
        for gallery in self._galleries.values():
            if gallery.building is not None:
                gallery.building.cancel()
        self._galleries.clear()

    def _gallery(self, engine: AsyncEngine, model: str, owner_id: uuid.UUID | None) -> _Gallery:
        key = (engine.url.render_as_string(hide_password=True), model, owner_id)
        return self._galleries.setdefault(key, _Gallery())

    def put(
        self, engine: AsyncEngine, model: str, owner_id: uuid.UUID | None, index: MemoryIndex
    ) -> None:
        """Serve `index` for the gallery from now on (a build awaited by its caller)."""
        gallery = self._gallery(engine, model, owner_id)
        gallery.index = index
        gallery.refreshed_at = gallery.sized_at = time.monotonic()

    async def for_query(
        self,
        session: AsyncSession,
        model: str,
        dim: int,
        owner_id: uuid.UUID | None,
        tuning: MemoryIndexTuning = DEFAULT_MEMORY_INDEX_TUNING,
    ) -> MemoryIndex | None:
        """The gallery's index, brought up to date, or None where identify should walk
        pgvector's graph instead (a small gallery, or its index still building). Starts the
        build in the background when a gallery first reaches `tuning.min_faces`."""
        engine = session.bind
        if not self.enabled or not isinstance(engine, AsyncEngine):
            return None
        gallery = self._gallery(engine, model, owner_id)
        now = time.monotonic()
        if gallery.building is not None and gallery.building.done():
            self._finish_build(gallery, model)
        if gallery.index is None:
            if gallery.building is None and now - gallery.sized_at >= tuning.size_check_s:
                gallery.sized_at = now
                if await count_faces(session, model, owner_id) >= tuning.min_faces:
                    self._start_build(gallery, engine, model, dim, owner_id, tuning)
            return None
        index = gallery.index
        if now - gallery.refreshed_at >= tuning.refresh_s:
            gallery.refreshed_at = now
            await refresh_memory_index(session, index, model, owner_id)
        if gallery.building is None and now - gallery.sized_at >= tuning.count_check_s:
            gallery.sized_at = now
            faces = await count_faces(session, model, owner_id)
            if len(index) - faces > tuning.rebuild_dead_share * max(faces, 1):
                log.info("memory_index_rebuild", model=model, index=len(index), faces=faces)
                self._start_build(gallery, engine, model, dim, owner_id, tuning)
        return index

    def _start_build(
        self,
        gallery: _Gallery,
        engine: AsyncEngine,
        model: str,
        dim: int,
        owner_id: uuid.UUID | None,
        tuning: MemoryIndexTuning,
    ) -> None:
        log.info("memory_index_build_started", model=model, owner_id=str(owner_id))
        gallery.building = asyncio.create_task(
            build_memory_index(engine, model, dim, owner_id, tuning)
        )

    def _finish_build(self, gallery: _Gallery, model: str) -> None:
        task, gallery.building = gallery.building, None
        assert task is not None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # The gallery keeps the index it had (or pgvector's): a later check tries again.
            log.warning("memory_index_build_failed", model=model, error=repr(error))
            return
        gallery.index = task.result()
        gallery.refreshed_at = float("-inf")  # catch up on the faces enrolled while building
        log.info("memory_index_ready", model=model, faces=len(gallery.index))


# One per process: identify in the API and in every worker finds its indexes here.
MEMORY_INDEXES = MemoryIndexes()
