"""Clustering of unknown faces on synthetic embeddings (app/gallery/clusters.py): the cases the
real photos of test_unknown_faces.py cannot stage, such as an owner whose faces are a small
share of everyone's."""

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.gallery.clusters import cluster_pass, jobs_with_unknown_faces
from app.gallery.matching import PastFace, nearest_past_faces
from app.vectors import calibrated_similarity, seen_index_name
from tests.app.gallery.test_matching import plan_of
from tests.conftest import statements_sent

DIM = 192
MODEL = "mobilefacenet"


def around(centre: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """`count` unit vectors near `centre`: noise of norm `noise` each."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(size=(count, DIM))
    offsets *= noise / np.linalg.norm(offsets, axis=1, keepdims=True)
    rows = centre + offsets
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


async def store_unknown_faces(
    engine: AsyncEngine, vectors: np.ndarray, owner_id: uuid.UUID | None, first_id: int
) -> list[int]:
    """Each vector as a face with no identity in a finished upload of `owner_id`."""
    ids = list(range(first_id, first_id + len(vectors)))
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (id, owner_id, status, tasks, content_type, width, height, "
                "counts, attempts, finished_at) VALUES (:id, :owner, 'done', ARRAY['faces'], "
                "'image/jpeg', 640, 480, '{}'::jsonb, 1, now())"
            ),
            {"id": job_id, "owner": owner_id},
        )
        for detection_id, vector in zip(ids, vectors, strict=True):
            await connection.execute(
                text(
                    "INSERT INTO detections (id, job_id, kind, label, score, box, attributes) "
                    "VALUES (:id, :job, 'face', 'face', 0.9, ARRAY[0, 0, 10, 10]::float8[], "
                    "'{}'::jsonb)"
                ),
                {"id": detection_id, "job": job_id},
            )
            await connection.execute(
                text(
                    "INSERT INTO face_embeddings (detection_id, job_id, model, dim, embedding) "
                    "VALUES (:id, :job, :model, :dim, CAST(:vector AS vector))"
                ),
                {
                    "id": detection_id,
                    "job": job_id,
                    "model": MODEL,
                    "dim": DIM,
                    "vector": "[" + ",".join(f"{v:.7g}" for v in vector) + "]",
                },
            )
    return ids


async def test_an_owner_with_few_faces_finds_its_own_among_many_nearer_ones(
    settings, sessionmaker, engine, make_key
):
    """Owner B has three photos of one person; the keys-off owner has 150 faces of a look-alike,
    every one nearer to B's faces than B's faces are to each other. B's faces must still find
    each other (the index walk goes on past everyone else's faces) and form B's own cluster."""
    await make_key(name="b")
    async with engine.connect() as connection:
        owner_b = (await connection.execute(text("SELECT id FROM api_keys"))).scalar_one()
    centre = around(np.zeros(DIM) + 1.0, 1, 0.0, seed=1)[0]
    crowd = await store_unknown_faces(engine, around(centre, 150, 0.15, seed=2), None, 1)
    mine = await store_unknown_faces(engine, around(centre, 3, 0.55, seed=3), owner_b, 1000)
    settings = settings.model_copy(
        update={"clusters": settings.clusters.model_copy(update={"max_neighbours": 4})}
    )

    await cluster_pass(settings, sessionmaker)

    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT u.detection_id, u.person_id, p.owner_id FROM unknown_faces u "
                    "LEFT JOIN people p ON p.id = u.person_id"
                )
            )
        ).all()
    placed = {detection_id: (person_id, owner) for detection_id, person_id, owner in rows}
    assert len({placed[face][0] for face in mine}) == 1  # one cluster …
    person_b, owner = placed[mine[0]]
    assert person_b is not None and owner == owner_b  # … of B's, with B's faces only
    assert all(placed[face][0] != person_b for face in crowd)
    assert all(placed[face][1] is None for face in crowd if placed[face][0] is not None)


def test_the_loop_takes_the_jobs_whose_result_has_a_face_nobody_was_named_for():
    """What cluster_loop asks the batch for, from firehose entries as decoded (None: an entry
    that is not a valid event). An entry it cannot use is read past, never raised on: the
    loop would read it again and fail again, for ever."""
    unknown, named, objects = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def result(job_id: object, *detections: dict) -> dict:  # type: ignore[type-arg]
        return {"type": "result", "job": {"id": str(job_id), "detections": list(detections)}}

    face = {"kind": "face", "attributes": {"embedding_model": "w600k_mbf"}}
    alice = {"kind": "face", "attributes": {"identity": {"name": "Alice"}}}
    entries = [
        ("1-0", result(unknown, alice, face)),
        ("2-0", result(named, alice)),
        ("3-0", result(objects, {"kind": "object", "label": "person"})),
        ("4-0", {"type": "status", "job_id": str(unknown), "status": "done"}),
        ("5-0", None),
        ("6-0", result("not-a-uuid", face)),
        ("7-0", {"type": "result", "job": {"detections": [face]}}),
        ("8-0", {"type": "result", "job": "garbage"}),
    ]
    assert jobs_with_unknown_faces(entries) == [unknown]


async def test_the_neighbours_and_past_face_searches_walk_face_embeddings_index(
    settings, sessionmaker, engine
):
    """Both searches of the faces kept must repeat the model's quantized HNSW index's expression
    and model (app/vectors.py), or each becomes a sort of every face kept; the exact cosine
    re-ranks what the index finds."""
    centre = around(np.zeros(DIM) + 1.0, 1, 0.0, seed=4)[0]
    faces = around(centre, 40, 0.3, seed=5)
    await store_unknown_faces(engine, faces, None, 1)
    report, clustering = await statements_sent(
        engine, lambda: cluster_pass(settings, sessionmaker), lambda sql: "<=>" in sql
    )
    assert report.faces_seen == 40 and clustering

    async def search() -> list[PastFace]:
        async with sessionmaker() as session:
            return await nearest_past_faces(
                session,
                faces[0],
                model=MODEL,
                owner_id=None,
                every_owner=True,
                since=datetime.now(UTC) - timedelta(days=1),
                limit=5,
            )

    found, searching = await statements_sent(engine, search, lambda sql: "<=>" in sql)
    # The five nearest, nearest first (itself), each at the similarity of its exact cosine.
    cosines = faces @ faces[0]
    nearest = [int(i) + 1 for i in np.argsort(-cosines)[:5]]
    assert [face.face_id for face in found] == nearest
    for face in found:
        exact = calibrated_similarity(float(cosines[face.face_id - 1]), MODEL)
        assert face.similarity == pytest.approx(exact, abs=2e-5)
    # Each statement as sent, planned with sequential scans and sorts ruled out: its ORDER BY
    # Hamming distance LIMIT can then only come from an index whose expression and model match
    # it (the re-rank's sort of those few rows is planned anyway: there is no other way).
    async with sessionmaker() as session:
        await session.execute(text("ANALYZE face_embeddings"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_sort = off"))
        for statement, parameters in [*clustering, *searching]:
            plan = await plan_of(session, statement, parameters)
            assert seen_index_name(MODEL) in plan
        await session.rollback()
