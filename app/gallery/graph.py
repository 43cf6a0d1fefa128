"""An in-memory HNSW graph of a large gallery's sign bits, one per model and owner, per
process: where identify takes its candidates once a gallery outgrows pgvector's graph.

Why: pgvector walks its graph through Postgres's shared buffers, tuple by tuple; at a million
faces a walk wide enough to find the right person 99% of the time took 52 ms a query (bench/
RESULTS.md, "Gallery"). The same walk over the same 64-byte sign bits in process memory
(faiss's binary HNSW) takes a few milliseconds.

Postgres stays the source of truth; the graph only proposes face ids:
- identify (app/gallery/matching.py) re-ranks the proposed faces by their exact cosine *in
  Postgres*, with the owner, model and name filters: a face deleted since the graph was built,
  or whose person was renamed or removed, drops out there;
- faces enrolled after the graph's snapshot are read from Postgres directly (an index on
  (model, created_at)) until the next refresh adds them to the graph, so a face enrolled a
  moment ago is found by the very next query, in every process;
- deleted faces stay in the graph as dead candidates until a count check sees the graph has
  outgrown the gallery by `GraphTuning.rebuild_dead_share` and rebuilds it (beside the live one).

The graph is built lazily, on the first query of a model and owner whose gallery has at least
`GraphTuning.min_faces` faces; until it is ready (minutes at 1M) identify uses pgvector's graph
as before. Smaller galleries never build one: pgvector is fast enough there and needs no
memory in every process. Each process that identifies (API, workers) holds its own graph:
a face's 64 bytes and its links (m=32), about 0.3 GB at a million (bench/RESULTS.md).
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

from app.vectors import owner_clause, quantized_expression

log = structlog.get_logger()


@dataclass(frozen=True)
class GraphTuning:
    """When a gallery gets an in-memory graph, how it is built and how hard it is searched.

    Chosen with bench/gallery.py (bench/RESULTS.md, "Gallery").
    """

    # Faces of one model and owner from which identify builds and uses the graph: at 100k
    # pgvector's walk took 12 ms a query, the graph's a few.
    min_faces: int = 50_000
    # HNSW links per node and the candidate list while linking: more finds the right person
    # more often and builds slower.
    m: int = 32
    ef_construction: int = 128
    # The walk's candidate list per query, and the faces handed to Postgres for the exact
    # re-rank.
    ef_search: int = 600
    candidates: int = 50
    # How often a query first adds the faces enrolled since (seconds), and how far back it
    # looks: a face's created_at is its transaction's start, so a face committed up to
    # `late_commit_s` after its transaction began is still caught.
    refresh_s: float = 5.0
    late_commit_s: float = 120.0
    # How often the gallery is counted, and the share of the graph that may be deleted faces
    # before it is rebuilt.
    count_check_s: float = 300.0
    rebuild_dead_share: float = 0.1
    # How often a gallery below min_faces is counted again.
    size_check_s: float = 60.0


DEFAULT_GRAPH_TUNING = GraphTuning()
LOAD_CHUNK = 20_000
EVER = datetime(1970, 1, 1, tzinfo=UTC)


def sign_bits(vector: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """A vector's sign bits packed as pgvector's binary_quantize() packs them (bit i of the
    bit string is 1 where element i > 0, most significant bit first)."""
    return np.packbits(np.asarray(vector, dtype=np.float32) > 0)


@dataclass
class FaceGraph:
    """One gallery's graph: faiss's HNSW over packed sign bits (Hamming); its i-th face is
    face_ids[i].

    `watermark`: a time (Postgres's clock) when the graph held every face committed by then.
    Faces created up to `late_commit_s` before it may still have committed after it, and
    faces created since certainly may be missing: identify reads both from Postgres
    (fresh_since), and the next refresh adds them.
    """

    dim: int
    tuning: GraphTuning
    watermark: datetime | None = None
    index: Any = field(init=False)  # faiss.IndexBinaryHNSW (faiss has no type hints)
    face_ids: list[uuid.UUID] = field(default_factory=list)
    # The faces it holds that were created since fresh_since() (with their created_at): what
    # a refresh, which reads them again, must not add twice.
    recent: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = faiss.IndexBinaryHNSW(self.dim, self.tuning.m)
        self.index.hnsw.efConstruction = self.tuning.ef_construction
        self.index.hnsw.efSearch = self.tuning.ef_search

    def __len__(self) -> int:
        return len(self.face_ids)

    def add(
        self,
        ids: list[uuid.UUID],
        bits: npt.NDArray[np.uint8],
        created: list[datetime],
    ) -> None:
        if not ids:
            return
        self.index.add(np.ascontiguousarray(bits))  # numbered on from ntotal, as face_ids
        self.face_ids.extend(ids)
        since = self.fresh_since()
        for face_id, at in zip(ids, created, strict=True):
            if at >= since:
                self.recent[face_id] = at

    def advance(self, to: datetime) -> None:
        """Every face committed by `to` is in the graph now."""
        if self.watermark is not None and to <= self.watermark:
            return
        self.watermark = to
        since = self.fresh_since()
        self.recent = {i: at for i, at in self.recent.items() if at >= since}

    def fresh_since(self) -> datetime:
        """Faces created at or after this may be missing from the graph: identify reads them
        from Postgres directly (every face, before the graph has a watermark)."""
        if self.watermark is None:
            return EVER
        return self.watermark - timedelta(seconds=self.tuning.late_commit_s)

    def search(self, vector: npt.ArrayLike, count: int) -> list[uuid.UUID]:
        """The face ids of up to `count` nearest faces by Hamming distance of sign bits."""
        if not self.face_ids:
            return []
        _, found = self.index.search(sign_bits(vector)[None, :], count)
        return [self.face_ids[int(key)] for key in found[0] if key >= 0]

    def memory_bytes(self) -> int:
        """The sign bits and the graph's links (4 bytes each)."""
        return int(self.index.ntotal * self.index.code_size + self.index.hnsw.neighbors.size() * 4)


def _gallery_filter(owner_id: uuid.UUID | None) -> str:
    return f"f.model = :model AND {owner_clause(owner_id)}"


def _parameters(model: str, owner_id: uuid.UUID | None, **more: Any) -> dict[str, Any]:
    return {"model": model, **({"owner_id": owner_id} if owner_id is not None else {}), **more}


def _rows_to_arrays(
    rows: list[Any], dim: int
) -> tuple[list[uuid.UUID], npt.NDArray[np.uint8], list[datetime]]:
    bits = np.frombuffer(b"".join(row.bits.bytes for row in rows), dtype=np.uint8)
    return (
        [row.id for row in rows],
        bits.reshape(len(rows), (dim + 7) // 8),
        [row.created_at for row in rows],
    )


def _faces_statement(dim: int, owner_id: uuid.UUID | None, since: bool) -> str:
    return (
        f"SELECT f.id, f.created_at, {quantized_expression('f.embedding', dim)} AS bits "
        f"FROM person_faces f JOIN people p ON p.id = f.person_id "
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


async def build_graph(
    engine: AsyncEngine,
    model: str,
    dim: int,
    owner_id: uuid.UUID | None,
    tuning: GraphTuning = DEFAULT_GRAPH_TUNING,
) -> FaceGraph:
    """Read every face of the gallery's sign bits from Postgres (64 bytes a face at 512-d) and
    link them into a new graph, chunk by chunk (the linking in a thread, on every core: faiss
    lets go of the GIL), so the event loop keeps serving while it builds."""
    async with engine.connect() as connection:
        # The transaction's start: what the read below sees was committed by then at least.
        graph = FaceGraph(dim, tuning, watermark=await connection.scalar(text("SELECT now()")))
        result = await connection.stream(
            text(_faces_statement(dim, owner_id, since=False)), _parameters(model, owner_id)
        )
        async for chunk in result.partitions(LOAD_CHUNK):
            ids, bits, created = _rows_to_arrays(list(chunk), dim)
            await asyncio.to_thread(graph.add, ids, bits, created)
    return graph


async def refresh_graph(
    session: AsyncSession, graph: FaceGraph, model: str, owner_id: uuid.UUID | None
) -> int:
    """Add the faces created since the graph's fresh_since() that it does not hold yet, and
    move its watermark to the session's transaction start; returns how many were added."""
    now = await session.scalar(text("SELECT now()"))
    rows = (
        await session.execute(
            text(_faces_statement(graph.dim, owner_id, since=True)),
            _parameters(model, owner_id, since=graph.fresh_since()),
        )
    ).all()
    new = [row for row in rows if row.id not in graph.recent]
    if new:
        ids, bits, created = _rows_to_arrays(new, graph.dim)
        graph.add(ids, bits, created)
    graph.advance(now)
    return len(new)


@dataclass
class _Gallery:
    """What this process knows of one model and owner's gallery."""

    graph: FaceGraph | None = None
    building: asyncio.Task[FaceGraph] | None = None
    sized_at: float = float("-inf")  # when the gallery was last counted
    refreshed_at: float = float("-inf")


class FaceGraphs:
    """This process's graphs, by database, model and owner."""

    def __init__(self) -> None:
        self._galleries: dict[tuple[str, str, uuid.UUID | None], _Gallery] = {}
        # Off: identify walks pgvector's graph at every size (settings.gallery.memory_graph).
        self.enabled = True

    def configure(self, enabled: bool) -> None:
        """Set at process start from settings.gallery.memory_graph."""
        self.enabled = enabled

    def forget(self) -> None:
        """Drop every graph (tests; a process that switches databases)."""
        for gallery in self._galleries.values():
            if gallery.building is not None:
                gallery.building.cancel()
        self._galleries.clear()

    def _gallery(self, engine: AsyncEngine, model: str, owner_id: uuid.UUID | None) -> _Gallery:
        key = (engine.url.render_as_string(hide_password=True), model, owner_id)
        return self._galleries.setdefault(key, _Gallery())

    def put(
        self, engine: AsyncEngine, model: str, owner_id: uuid.UUID | None, graph: FaceGraph
    ) -> None:
        """Serve `graph` for the gallery from now on (a build awaited by its caller)."""
        gallery = self._gallery(engine, model, owner_id)
        gallery.graph = graph
        gallery.refreshed_at = gallery.sized_at = time.monotonic()

    async def for_query(
        self,
        session: AsyncSession,
        model: str,
        dim: int,
        owner_id: uuid.UUID | None,
        tuning: GraphTuning = DEFAULT_GRAPH_TUNING,
    ) -> FaceGraph | None:
        """The gallery's graph, brought up to date, or None where identify should walk
        pgvector's graph instead (a small gallery, or its graph still building). Starts the
        build in the background when a gallery first reaches `tuning.min_faces`."""
        engine = session.bind
        if not self.enabled or not isinstance(engine, AsyncEngine):
            return None
        gallery = self._gallery(engine, model, owner_id)
        now = time.monotonic()
        if gallery.building is not None and gallery.building.done():
            self._finish_build(gallery, model)
        if gallery.graph is None:
            if gallery.building is None and now - gallery.sized_at >= tuning.size_check_s:
                gallery.sized_at = now
                if await count_faces(session, model, owner_id) >= tuning.min_faces:
                    self._start_build(gallery, engine, model, dim, owner_id, tuning)
            return None
        graph = gallery.graph
        if now - gallery.refreshed_at >= tuning.refresh_s:
            gallery.refreshed_at = now
            await refresh_graph(session, graph, model, owner_id)
        if gallery.building is None and now - gallery.sized_at >= tuning.count_check_s:
            gallery.sized_at = now
            faces = await count_faces(session, model, owner_id)
            if len(graph) - faces > tuning.rebuild_dead_share * max(faces, 1):
                log.info("face_graph_rebuild", model=model, graph=len(graph), faces=faces)
                self._start_build(gallery, engine, model, dim, owner_id, tuning)
        return graph

    def _start_build(
        self,
        gallery: _Gallery,
        engine: AsyncEngine,
        model: str,
        dim: int,
        owner_id: uuid.UUID | None,
        tuning: GraphTuning,
    ) -> None:
        log.info("face_graph_build_started", model=model, owner_id=str(owner_id))
        gallery.building = asyncio.create_task(build_graph(engine, model, dim, owner_id, tuning))

    def _finish_build(self, gallery: _Gallery, model: str) -> None:
        task, gallery.building = gallery.building, None
        assert task is not None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # The gallery keeps the graph it had (or pgvector's): a later check tries again.
            log.warning("face_graph_build_failed", model=model, error=repr(error))
            return
        gallery.graph = task.result()
        gallery.refreshed_at = float("-inf")  # catch up on the faces enrolled while building
        log.info("face_graph_ready", model=model, faces=len(gallery.graph))


# One per process: identify in the API and in every worker finds its graphs here.
FACE_GRAPHS = FaceGraphs()
