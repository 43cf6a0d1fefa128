"""Unknown faces grouped into unnamed people: an incremental DBSCAN over each owner's faces
that got no identity, per embedding model (settings: ClusterSettings).

New faces arrive as their jobs' results reach the firehose: `cluster_loop` reads it through
the consumer group `clusters` (ARCHITECTURE.md: what reacts to results is a consumer group, off
the job's path) and takes those jobs' faces. A sweep of every face takes those no event
announced (results the firehose trimmed before the loop read them, faces from before it ran):
at the start, then every `sweep_interval_s`. Either takes the faces not seen yet (a face
embedding whose job is done, with no identity, not promoted, not yet in unknown_faces), copies
them into unknown_faces (noise at first), finds each one's neighbours within `min_similarity`
with one pgvector query per batch (the model's quantized HNSW index on face_embeddings, its
candidates re-ranked by exact cosine, filtered to the owner's unknown faces), then in order:

- a *core* face (at least `core_faces` faces within reach, itself included) founds a cluster
  (a new unnamed person) or joins the nearest one around it (a named one first); every
  unclustered neighbour joins with it; the other unnamed clusters it reaches are merged in
  (a bridge). Named people and ignored clusters are never merged automatically.
- a non-core face joins the cluster of its nearest clustered neighbour (a border face); if it
  has none, an old noise neighbour that its arrival made core is expanded instead; else it
  stays noise, to be reached later by a core face.

Idempotent and restart-safe: the state is the rows (a face is taken once: the INSERT skips
faces already there); each batch is one transaction under a Postgres advisory lock, so the
loops of several API processes never interleave; a firehose entry is acked once its batch has
committed. Faces placed by hand (`manual`) are never moved; a face moved to "unknown" by hand
is left out of everyone's neighbourhood.
"""

import asyncio
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.errors import is_outage
from app.gallery.matching import CUSTOM_PLANS
from app.models import SIGHTING_PURPOSES, FaceEmbedding, Person, PersonFace, UnknownFace
from app.settings import ClusterSettings, Settings
from app.vectors import hamming_between, vector_expression

log = structlog.get_logger()

# pg_advisory_xact_lock key: one clustering batch at a time in the whole deployment.
CLUSTER_LOCK_KEY = 0x6C6B_636C  # "lkcl"
# The clustering loop reads the firehose at most this often (and waits this long after a
# failure): a face is placed within about this long of its result.
GATHER_MS = 1000


# New unknown faces, copied in detection order; the RETURNING rows are this batch. {of_jobs}
# narrows it to the jobs the firehose announced (through ix_face_embeddings_job_id): the sweep,
# without it, reads every face embedding (0.15 s at 200k faces, 1.3 s at 1M).
_TAKE_NEW = """
    INSERT INTO unknown_faces
        (detection_id, job_id, owner_id, person_id, manual, model, node_id, seen_at)
    SELECT e.detection_id, e.job_id, j.owner_id, NULL, false, e.model, j.node_id, j.created_at
    FROM face_embeddings e
    JOIN jobs j ON j.id = e.job_id
    JOIN detections d ON d.id = e.detection_id
    WHERE j.status = 'done'
      AND j.purpose = ANY(:sightings)
      AND COALESCE(d.attributes -> 'identity', 'null'::jsonb) = 'null'::jsonb
      AND NOT EXISTS (SELECT 1 FROM unknown_faces u WHERE u.detection_id = e.detection_id)
      AND NOT EXISTS (SELECT 1 FROM person_faces f WHERE f.source_detection_id = e.detection_id)
      {of_jobs}
    ORDER BY e.detection_id
    LIMIT :batch
    ON CONFLICT (detection_id) DO NOTHING
    RETURNING detection_id, owner_id, model
    """
_SWEEP = text(_TAKE_NEW.format(of_jobs=""))
_TAKE_OF_JOBS = text(_TAKE_NEW.format(of_jobs="AND e.job_id = ANY(CAST(:jobs AS uuid[]))"))


# Each face's search looks at a pool of this many times max_neighbours of the model's nearest
# faces by their sign bits (every owner's), and keeps the owner's unknown ones within reach by
# exact cosine; when the whole pool lies within reach (other owners' faces crowd it), the face
# is searched again with a pool WIDEN times as large, up to MAX_POOL.
POOL_FACTOR = 4
WIDEN = 8
MAX_POOL = 1000  # pgvector's largest hnsw.ef_search: one scan returns at most that many


def _neighbours_sql(dim: int, pool: int, *, owned: bool) -> str:
    """Each face of :faces with the faces of its pool (its `pool` nearest of model :model, every
    owner's, by their sign bits) within :max_distance by exact cosine, nearest first; `own`
    marks the owner's unknown faces, its neighbours (hand-made "unknown" faces are nobody's).

    One statement for a whole batch: a LATERAL nearest-face query per face, so the batch costs
    one round trip instead of one per face. The inner query is a plain HNSW scan of
    face_embeddings' quantized index (the indexed expression, `model = :model` for the partial
    index; app/vectors.py); the exact cosine re-ranks what it returns. The owner is checked on
    its rows, not inside the scan: filters there make the planner trade the index for a sort of
    every face (measured: 10× slower at 10k faces). The rows of other owners come back too
    (marked), so the caller can tell a pool crowded by them and widen it. `owned` False: the
    faces of jobs created while keys were off (owner NULL); spelled out rather than IS NOT
    DISTINCT FROM, which the planner misjudges. Run it with custom plans only (cluster_batch;
    app/gallery/matching.py CUSTOM_PLANS): a prepared statement's generic plan cannot match the
    partial index's `model = '…'` to a bound :model."""
    column, query = vector_expression("e.embedding", dim), vector_expression("q.embedding", dim)
    owner = "u.owner_id = :owner_id" if owned else "u.owner_id IS NULL"
    return f"""
        SELECT q.detection_id AS face, c.detection_id AS neighbour, u.person_id, u.manual,
            (u.detection_id IS NOT NULL AND {owner} AND NOT (u.manual AND u.person_id IS NULL))
                AS own
        FROM face_embeddings q
        CROSS JOIN LATERAL (
            SELECT e.detection_id, {column} <=> {query} AS distance
            FROM face_embeddings e
            WHERE e.model = :model
            ORDER BY {hamming_between("e.embedding", "q.embedding", dim)}
            LIMIT {int(pool)}
        ) c
        LEFT JOIN unknown_faces u ON u.detection_id = c.detection_id
        WHERE q.detection_id = ANY(CAST(:faces AS int[]))
          AND c.detection_id <> q.detection_id
          AND c.distance <= :max_distance
        ORDER BY q.detection_id, c.distance
    """  # noqa: S608


@dataclass(frozen=True)
class ClusterReport:
    faces_seen: int  # new unknown faces taken by this pass
    clustered: int  # of them, placed in a cluster by this pass
    people_created: int
    people_merged: int
    empty_people_deleted: int
    seconds: float


@dataclass
class Neighbour:
    face: int
    person_id: uuid.UUID | None
    manual: bool


@dataclass
class _Batch:
    """What one batch knows and changes, applied in one go at its end."""

    owner_id: uuid.UUID | None
    settings: ClusterSettings
    neighbours: dict[int, list[Neighbour]]
    person_at_start: dict[int, uuid.UUID | None] = field(default_factory=dict)
    manual: set[int] = field(default_factory=set)
    assigned: dict[int, uuid.UUID] = field(default_factory=dict)
    merged_into: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    created: list[uuid.UUID] = field(default_factory=list)
    people: dict[uuid.UUID, tuple[bool, bool]] = field(default_factory=dict)  # named, ignored

    def resolve(self, person_id: uuid.UUID) -> uuid.UUID:
        while person_id in self.merged_into:
            person_id = self.merged_into[person_id]
        return person_id

    def person_of(self, face: int) -> uuid.UUID | None:
        person_id = self.assigned.get(face, self.person_at_start.get(face))
        return None if person_id is None else self.resolve(person_id)

    def note(self, neighbours: list[Neighbour]) -> None:
        for n in neighbours:
            self.person_at_start.setdefault(n.face, n.person_id)
            if n.manual:
                self.manual.add(n.face)

    def expand(self, face: int, neighbours: list[Neighbour]) -> bool:
        """Place a core `face` and its unclustered neighbours; merge the clusters it bridges."""
        clusters = list(dict.fromkeys(p for n in neighbours if (p := self.person_of(n.face))))
        if clusters:
            named = [p for p in clusters if self.people[p][0]]
            target = named[0] if named else clusters[0]
            for other in clusters:
                if other != target and not any(self.people[other]):
                    self.merged_into[other] = target
        else:
            target = uuid.uuid4()
            self.created.append(target)
            self.people[target] = (False, False)
        if self.person_of(face) is None and face not in self.manual:
            self.assigned[face] = target
        for n in neighbours:
            if self.person_of(n.face) is None and n.face not in self.manual:
                self.assigned[n.face] = target
        return True


async def _load_people(session: AsyncSession, batch: _Batch) -> None:
    wanted = {p for p in batch.person_at_start.values() if p is not None} - batch.people.keys()
    if wanted:
        # Locked until the batch commits: a person named (or ignored) by hand between this read
        # and _apply would otherwise be merged into an unnamed one and deleted, name and all.
        # FOR NO KEY UPDATE stops those changes (and a deletion), not the FOR KEY SHARE of a
        # worker writing a job that identified them (app/jobs/results.py): it held the workers
        # up for the whole batch.
        rows = await session.execute(
            select(Person.id, Person.name, Person.ignored_at)
            .where(Person.id.in_(wanted))
            .order_by(Person.id)  # one order for every batch's locks
            .with_for_update(key_share=True)
        )
        for person_id, name, ignored_at in rows:
            batch.people[person_id] = (name is not None, ignored_at is not None)


@dataclass(frozen=True)
class Group:
    """Faces of one owner and one embedding model: they are only ever compared together."""

    owner_id: uuid.UUID | None
    model: str
    dim: int


def _ef_search(pool: int) -> int:
    """hnsw.ef_search for a pool: at least the pool, so one walk returns all of it."""
    return max(40, min(pool, MAX_POOL))


async def _neighbours(
    session: AsyncSession, settings: ClusterSettings, group: Group, faces: list[int]
) -> dict[int, list[Neighbour]]:
    """Each face's neighbours, nearest first, at most max_neighbours: one index search per
    face, one statement per pool size."""
    k = settings.max_neighbours
    first = pool = k * POOL_FACTOR
    found: dict[int, list[Neighbour]] = {face: [] for face in faces}
    todo = list(faces)
    widened = False
    while todo:
        if pool > first:  # the first pool's walk is set once per batch (cluster_batch)
            await session.execute(text(f"SET LOCAL hnsw.ef_search = {_ef_search(pool)}"))
            widened = True
        rows = await session.execute(
            text(_neighbours_sql(group.dim, pool, owned=group.owner_id is not None)),
            {
                "faces": todo,
                "model": group.model,
                "owner_id": group.owner_id,
                "max_distance": 1 - settings.min_similarity,
            },
        )
        within: dict[int, int] = {}
        for row in rows:
            within[row.face] = within.get(row.face, 0) + 1
            if row.own and len(found[row.face]) < k:
                found[row.face].append(Neighbour(row.neighbour, row.person_id, row.manual))
        # Crowded: the whole pool (but the face itself) lay within reach, yet fewer than k of
        # it were the owner's: nearer ones may lie beyond the pool.
        todo = [f for f in todo if within.get(f, 0) >= pool - 1 and len(found[f]) < k]
        if pool >= MAX_POOL:
            break
        pool = min(pool * WIDEN, MAX_POOL)
        for face in todo:
            found[face] = []
    if widened:  # the batch's other searches walk the first pool again
        await session.execute(text(f"SET LOCAL hnsw.ef_search = {_ef_search(first)}"))
    return found


async def cluster_batch(
    session: AsyncSession, settings: ClusterSettings, jobs: Sequence[uuid.UUID] | None = None
) -> tuple[int, int, int, int]:
    """Take and place one batch of new unknown faces: those of `jobs`, or any (a sweep).
    Returns (taken, clustered, unnamed people created, merged).

    Waits for the lock while another process places a batch; the caller owns the transaction,
    which must be the batch's alone (the lock lasts until it ends)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLUSTER_LOCK_KEY})
    # Custom plans (see _neighbours_sql) and the first pool's walk, for the whole batch.
    pool = settings.max_neighbours * POOL_FACTOR
    await session.execute(
        text(f"SELECT {CUSTOM_PLANS}, set_config('hnsw.ef_search', '{_ef_search(pool)}', true)")
    )
    params: dict[str, Any] = {
        "batch": settings.batch_size,
        "sightings": [p.value for p in SIGHTING_PURPOSES],
    }
    if jobs is not None:
        params["jobs"] = list(jobs)
    taken = list(await session.execute(_SWEEP if jobs is None else _TAKE_OF_JOBS, params))
    if not taken:
        return 0, 0, 0, 0
    dims = {
        detection_id: dim
        for detection_id, dim in await session.execute(
            select(FaceEmbedding.detection_id, FaceEmbedding.dim).where(
                FaceEmbedding.detection_id.in_([row.detection_id for row in taken])
            )
        )
    }
    groups: dict[Group, list[int]] = {}
    for row in taken:
        group = Group(row.owner_id, row.model, dims[row.detection_id])
        groups.setdefault(group, []).append(row.detection_id)
    clustered = created = merged = 0
    for group, faces in groups.items():
        faces.sort()
        batch = _Batch(group.owner_id, settings, await _neighbours(session, settings, group, faces))
        for face in faces:
            batch.person_at_start[face] = None
        for neighbours in batch.neighbours.values():
            batch.note(neighbours)
        await _load_people(session, batch)
        for face in faces:
            await _place(session, batch, group, face)
        clustered += sum(1 for face in faces if batch.person_of(face) is not None)
        created += len(batch.created)
        merged += len(batch.merged_into)
        await _apply(session, batch)
    return len(taken), clustered, created, merged


async def _place(session: AsyncSession, batch: _Batch, group: Group, face: int) -> None:
    neighbours = batch.neighbours[face]
    if len(neighbours) + 1 >= batch.settings.core_faces:
        batch.expand(face, neighbours)
        return
    if batch.person_of(face) is not None:
        return  # reached already by an earlier core face of this batch
    for n in neighbours:  # nearest first: a border face joins its nearest cluster
        person_id = batch.person_of(n.face)
        if person_id is not None:
            batch.assigned[face] = person_id
            return
    # Its arrival may have made an older noise face a core: look at those (outside the batch;
    # the batch's own faces get their turn in this loop).
    older = [n.face for n in neighbours if n.face not in batch.neighbours]
    if not older:
        return
    around = await _neighbours(session, batch.settings, group, older)
    for neighbours_of_older in around.values():
        batch.note(neighbours_of_older)
    await _load_people(session, batch)
    for old_face, neighbours_of_older in around.items():
        if len(neighbours_of_older) + 1 >= batch.settings.core_faces:
            batch.expand(old_face, neighbours_of_older)
            if batch.person_of(face) is not None:
                return


async def _apply(session: AsyncSession, batch: _Batch) -> None:
    if batch.created:
        session.add_all(Person(id=p, owner_id=batch.owner_id, name=None) for p in batch.created)
        await session.flush()
    for source in batch.merged_into:
        target = batch.resolve(source)
        await session.execute(
            update(UnknownFace).where(UnknownFace.person_id == source).values(person_id=target)
        )
        await session.execute(
            update(PersonFace).where(PersonFace.person_id == source).values(person_id=target)
        )
    if batch.merged_into:
        await session.execute(delete(Person).where(Person.id.in_(list(batch.merged_into))))
    if batch.assigned:
        faces = list(batch.assigned)
        await session.execute(
            text(
                "UPDATE unknown_faces u SET person_id = c.person_id FROM unnest("
                "CAST(:faces AS int[]), CAST(:people AS uuid[])) AS c(detection_id, person_id) "
                "WHERE u.detection_id = c.detection_id AND NOT u.manual"
            ),
            {"faces": faces, "people": [batch.resolve(batch.assigned[f]) for f in faces]},
        )


async def delete_empty_unnamed(session: AsyncSession) -> int:
    """Unnamed people left without faces (their jobs expired or were deleted)."""
    result = await session.execute(
        text(
            """
            DELETE FROM people p WHERE p.name IS NULL
              AND NOT EXISTS (SELECT 1 FROM unknown_faces u WHERE u.person_id = p.id)
              AND NOT EXISTS (SELECT 1 FROM person_faces f WHERE f.person_id = p.id)
            RETURNING p.id
            """
        )
    )
    return len(result.all())


async def cluster_pass(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    jobs: Sequence[uuid.UUID] | None = None,
) -> ClusterReport:
    """Place every unknown face of `jobs` not seen yet, or every one (a sweep, which also
    deletes the unnamed people left without faces), batch by batch (one transaction each)."""
    started = time.perf_counter()
    seen = clustered = created = merged = emptied = 0
    while True:
        async with sessionmaker.begin() as session:
            taken, placed, founded, merges = await cluster_batch(session, settings.clusters, jobs)
        seen += taken
        clustered += placed
        created += founded
        merged += merges
        if taken < settings.clusters.batch_size:
            break
    if jobs is None:
        async with sessionmaker.begin() as session:
            emptied = await delete_empty_unnamed(session)
    report = ClusterReport(
        faces_seen=seen,
        clustered=clustered,
        people_created=created,
        people_merged=merged,
        empty_people_deleted=emptied,
        seconds=round(time.perf_counter() - started, 3),
    )
    if seen or emptied:
        log.info("clusters_updated", **report.__dict__)
    return report


def jobs_with_unknown_faces(
    entries: Sequence[tuple[Any, dict[str, Any] | None]],
) -> list[uuid.UUID]:
    """The jobs of these firehose entries whose result has a face without an identity: what
    the clustering may take of them (the batch checks the rest: purpose, embedding, not seen)."""
    jobs: list[uuid.UUID] = []
    for _, entry in entries:
        job = entry.get("job") if entry is not None and entry.get("type") == "result" else None
        if not isinstance(job, dict):
            continue
        if any(
            isinstance(d, dict)
            and d.get("kind") == "face"
            and not (d.get("attributes") or {}).get("identity")
            for d in job.get("detections") or ()
        ):
            try:
                jobs.append(uuid.UUID(str(job["id"])))
            except (KeyError, ValueError):
                continue  # not a job's result: read past it, or it would be read again for ever
    return jobs


async def _pass_or_log(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    jobs: Sequence[uuid.UUID] | None,
) -> None:
    """cluster_pass, where a failure that is not an outage is logged and passed over: the same
    work would fail again, and the loop, which reads its unacked entries first, would stop
    there for good. Those faces are taken by the next sweep. An outage raises: the loop waits
    and does the same work again."""
    try:
        await cluster_pass(settings, sessionmaker, jobs)
    except Exception as exc:
        if is_outage(exc):
            raise
        log.error(
            "clusters_batch_failed", error=repr(exc), jobs="sweep" if jobs is None else len(jobs)
        )


async def cluster_loop(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: "Redis"
) -> None:
    """In the API lifespan; never raises. Places the unknown faces of each finished job as its
    result reaches the firehose, and sweeps for the rest at the start and every
    sweep_interval_s. Every API process runs it: they share the group's entries, and the
    advisory lock places one batch at a time."""
    config = settings.clusters
    reader = streams.FirehoseReader(redis, streams.CLUSTERS_GROUP, count=config.batch_size)
    swept_at = -math.inf
    while True:
        try:
            started = time.monotonic()
            if started - swept_at > config.sweep_interval_s:
                await _pass_or_log(settings, sessionmaker, None)
                swept_at = time.monotonic()
            entries = await reader.read(block_ms=GATHER_MS)
            jobs = jobs_with_unknown_faces(entries)
            if jobs:
                await _pass_or_log(settings, sessionmaker, jobs)
            await reader.ack([entry_id for entry_id, _ in entries])
            if len(entries) < config.batch_size:
                # Caught up: let the next results gather, so that a busy stack costs one read
                # and one ack a second, not two Redis commands and a transaction a job.
                await asyncio.sleep(max(0.0, GATHER_MS / 1000 - (time.monotonic() - started)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage: its entries are read again once it is over
            log.warning("clusters_failed", error=repr(exc))
            reader.retry()
            await asyncio.sleep(GATHER_MS / 1000)
