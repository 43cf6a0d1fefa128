"""app/jobs/results.py on Postgres: a batch's detections, their embeddings and crops, as found."""

import numpy as np
from sqlalchemy import text

from app.apikeys.service import ANONYMOUS_ADMIN
from app.jobs import results
from app.jobs.service import get_job_detail
from tests.conftest import shared_image
from workers.detectors.base import Detection, Embedding
from workers.pipeline import PipelineResult

T1 = shared_image("scenes/t1.jpg")
rng = np.random.default_rng(7)


def face(x: float, *, crop: bytes | None, dim: int = 192) -> Detection:
    vector = rng.standard_normal(dim).astype(np.float32)
    return Detection(
        kind="face",
        score=0.875,
        box=(x, 20.5, x + 100.25, 140.0),
        landmarks=((x + 30.0, 60.0), (x + 70.0, 60.5), (x + 50.0, 80.0), (35.0, 100.0), (65, 99)),
        attributes={"age": 31, "gender": "F"},
        embedding=Embedding(model="mobilefacenet", vector=vector / np.linalg.norm(vector)),
        crop_jpeg=crop,
    )


def outcome(*detections: Detection) -> PipelineResult:
    counts: dict[str, int] = {}
    for d in detections:
        counts[d.label or d.kind] = counts.get(d.label or d.kind, 0) + 1
    return PipelineResult(1280, 886, list(detections), counts, decode_ms=4.0, inference_ms=90.0)


async def test_a_batch_is_written_in_one_go_each_face_with_its_embedding_and_crop(
    make_job, sessionmaker, engine
):
    jobs = [await make_job(T1, tasks=("faces", "objects"), enqueue=False) for _ in range(3)]
    person = Detection(kind="object", score=0.5, box=(1.0, 2.0, 3.0, 4.0), label="person")
    found = {
        jobs[0].id: outcome(face(10.0, crop=b"crop-a"), person),
        jobs[1].id: outcome(),  # nothing found
        jobs[2].id: outcome(face(300.0, crop=None), face(600.0, crop=b"crop-c")),
    }
    async with sessionmaker.begin() as session:
        recorded = await results.record_results(session, found)
    assert recorded.finished == {jobs[0].id: 2, jobs[1].id: 0, jobs[2].id: 2}

    async with sessionmaker() as session:
        for job in jobs:
            # The result event says what a later read of the job says: the same detections, with
            # the ids they were written under, in the order they were found.
            event = next(
                e for e in recorded.events if e["type"] == "result" and e["job_id"] == str(job.id)
            )
            stored = await get_job_detail(session, job.id, ANONYMOUS_ADMIN)
            assert event["job"] == stored.model_dump(mode="json")
            written = [d for d in stored.detections]
            expected = found[job.id].detections
            assert [(d.kind, d.label, d.score) for d in written] == [
                (d.kind, d.label, d.score) for d in expected
            ]
            assert [d.box for d in written] == [list(d.box) for d in expected]
            assert [d.landmarks for d in written] == [
                [list(p) for p in d.landmarks] if d.landmarks else None for d in expected
            ]
            assert [d.attributes for d in written] == [d.attributes for d in expected]

    async with engine.connect() as connection:
        embeddings = dict(
            (await connection.execute(
                text("SELECT detection_id, embedding::text FROM face_embeddings")
            )).all()
        )  # fmt: skip
        crops = dict(
            (await connection.execute(text("SELECT detection_id, jpeg FROM face_crops"))).all()
        )
        models = set(
            (await connection.execute(text("SELECT model, dim FROM face_embeddings"))).all()
        )
    ids = {job.id: [d.id for d in (await detail(sessionmaker, job.id)).detections] for job in jobs}
    faces = {ids[jobs[0].id][0]: found[jobs[0].id].detections[0]}
    faces |= dict(zip(ids[jobs[2].id], found[jobs[2].id].detections, strict=True))
    assert set(embeddings) == set(faces)  # faces only: the person has none
    for detection_id, d in faces.items():
        assert d.embedding is not None
        stored_vector = np.array(embeddings[detection_id].strip("[]").split(","), np.float32)
        np.testing.assert_array_equal(stored_vector, d.embedding.vector)
    assert models == {("mobilefacenet", 192)}
    assert crops == {ids[jobs[0].id][0]: b"crop-a", ids[jobs[2].id][1]: b"crop-c"}


async def test_a_result_delivered_again_writes_nothing_more(make_job, sessionmaker, engine):
    job = await make_job(T1, enqueue=False)
    found = {job.id: outcome(face(10.0, crop=b"crop"), face(200.0, crop=b"crop"))}
    async with sessionmaker.begin() as session:
        first = await results.record_results(session, found)
    async with sessionmaker.begin() as session:
        again = await results.record_results(session, found)
    assert first.finished == {job.id: 2}
    assert again.finished == {} and again.settled_before == [job.id] and again.events == []
    async with engine.connect() as connection:
        for table in ("detections", "face_embeddings", "face_crops"):
            count = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
            assert count == 2, table


async def detail(sessionmaker, job_id):  # type: ignore[no-untyped-def]
    async with sessionmaker() as session:
        return await get_job_detail(session, job_id, ANONYMOUS_ADMIN)
