"""The batched consumer against real Postgres, Redis and models: batches, prefetch, embeddings."""

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from app import streams
from app.embedders import ARCFACE_MBF
from app.models import FaceEmbedding, Job, JobStatus
from app.pixels import BadImage, DecodedImage, decode_image
from app.streams.events import decode_event
from tests.conftest import SHARED_IMAGES, job_events, shared_image
from tests.images import blank
from tests.workers.detectors.tiny_models import arcface_like
from workers import consumer as consumer_module
from workers.consumer import DECODE_INLINE_PIXELS, Consumer, Work
from workers.detectors.base import Detection, ImageBGR
from workers.detectors.face import Embedder, FaceDetector, FaceDetectorConfig
from workers.detectors.onnx import OnnxModel, RuntimeOptions

T1 = shared_image("scenes/t1.jpg")
DOG = shared_image("scenes/dog.jpg")


class RecordingEmbedder(Embedder):
    """The real embedder, noting how many crops each call got."""

    def __init__(self, inner: Embedder) -> None:
        self.spec, self.model = inner.spec, inner.model
        self.calls: list[int] = []

    def embed(self, crops):  # type: ignore[no-untyped-def]
        self.calls.append(len(crops))
        return super().embed(crops)


async def fetch_job(sessionmaker, job_id) -> Job:
    async with sessionmaker() as session:
        return await session.get(Job, job_id)


async def embedding_stats(engine) -> list[tuple[str, int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT model, dim, count(*) FROM face_embeddings GROUP BY model, dim ORDER BY 1")
        )
        return [tuple(row) for row in rows]


async def test_a_batch_embeds_all_its_faces_in_one_call_and_stores_them(
    make_job, make_consumer, detectors, sessionmaker, engine, monkeypatch
):
    recorder = RecordingEmbedder(detectors["faces"].embedder)
    monkeypatch.setattr(detectors["faces"], "embedder", recorder)
    jobs = [await make_job(T1, tasks=("faces", "objects")) for _ in range(3)]
    jobs.append(await make_job(DOG, tasks=("faces", "objects")))

    assert await make_consumer(batch_size=4).run(burst=True) == 4

    assert recorder.calls == [18]  # 3 × 6 faces, one call; the dog photo has none
    for job in jobs[:3]:
        done = await fetch_job(sessionmaker, job.id)
        assert done.status == JobStatus.done
        assert done.counts["face"] == 6 and done.counts["person"] >= 5
    dog = await fetch_job(sessionmaker, jobs[3].id)
    assert "face" not in dog.counts and dog.counts["dog"] == 1
    assert await embedding_stats(engine) == [("mobilefacenet", 192, 18)]

    # pgvector answers similarity queries on the stored rows: the nearest other face to a face
    # of job 1 is the same face in job 2 or 3 (identical photo), at cosine distance ~0.
    async with sessionmaker() as session:
        probe = await session.scalar(
            select(FaceEmbedding).where(FaceEmbedding.job_id == jobs[0].id).limit(1)
        )
        distance = FaceEmbedding.embedding.cosine_distance(probe.embedding)
        nearest = (
            await session.execute(
                select(FaceEmbedding.job_id, distance)
                .where(FaceEmbedding.model == probe.model)
                .where(FaceEmbedding.job_id != jobs[0].id)
                .order_by(distance)
                .limit(1)
            )
        ).one()
    assert nearest.job_id in {jobs[1].id, jobs[2].id}
    assert nearest[1] < 1e-4
    assert np.linalg.norm(probe.embedding) == pytest.approx(1.0, abs=1e-4)


class GatedFaces:
    """The real face detector, whose first call waits until the consumer has decoded the next
    batch (or 10 s pass): it records whether decoding overlapped inference."""

    task = "faces"

    def __init__(self, inner, decoded_ahead: threading.Event) -> None:
        self.inner = inner
        self.decoded_ahead = decoded_ahead
        self.overlapped: list[bool] = []

    def warm_up(self) -> None:
        pass

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        if not self.overlapped:
            self.overlapped.append(self.decoded_ahead.wait(timeout=10))
        return self.inner.detect(images)


class TracingConsumer(Consumer):
    decoded_ahead: threading.Event
    inferring = False

    async def infer(self, batch: Sequence[Work]):  # type: ignore[no-untyped-def]
        self.inferring = True
        try:
            return await super().infer(batch)
        finally:
            self.inferring = False

    async def prepare(self, entries):  # type: ignore[no-untyped-def]
        work = await super().prepare(entries)
        if work and self.inferring:
            self.decoded_ahead.set()
        return work


async def test_the_next_batch_is_decoded_while_this_one_is_in_inference(
    make_job, settings, detectors, redis, sessionmaker, storage
):
    decoded_ahead = threading.Event()
    gated = GatedFaces(detectors["faces"], decoded_ahead)
    worker = settings.worker.model_copy(update={"batch_size": 2})
    consumer = TracingConsumer(
        settings.model_copy(update={"worker": worker}),
        {**detectors, "faces": gated},
        redis,
        sessionmaker,
        storage,
        name="tracing",
    )
    consumer.decoded_ahead = decoded_ahead
    jobs = [await make_job(T1) for _ in range(4)]

    assert await consumer.run(burst=True) == 4

    assert gated.overlapped == [True]
    for job in jobs:
        assert (await fetch_job(sessionmaker, job.id)).status == JobStatus.done


async def test_a_small_batch_decodes_on_the_event_loop_and_a_large_one_in_a_thread(
    make_consumer, monkeypatch
):
    consumer = make_consumer()
    threads: list[int] = []

    def noting_thread(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        return decode_image(*args, **kwargs)

    monkeypatch.setattr(consumer_module, "decode_image", noting_thread)
    loop_thread = threading.get_ident()
    small = [blank(64, 48, ".png"), blank(640, 480, ".jpg"), T1[:1000]]  # the last: truncated
    decoded = await consumer._decode(small)

    assert threads == [loop_thread] * 3
    assert [(d.width, d.height) for d in decoded[:2]] == [(64, 48), (640, 480)]
    assert isinstance(decoded[2], BadImage) and "truncated" in str(decoded[2])

    # A few KB of one colour that claims 2 MP: the claimed pixels decide, not the bytes.
    flat = blank(2000, 1000, ".png")
    assert len(flat) < 20_000 and 2000 * 1000 > DECODE_INLINE_PIXELS
    threads.clear()
    decoded = await consumer._decode([flat])

    assert len(threads) == 1 and threads[0] != loop_thread
    assert isinstance(decoded[0], DecodedImage) and decoded[0].width == 2000


async def test_a_bad_job_in_a_batch_fails_alone_and_everything_is_acked(
    make_job, make_consumer, storage, sessionmaker, redis
):
    good = await make_job(T1)
    garbage = await make_job(T1)
    storage.put(garbage.image_key, b"this is not an image at all")
    unknown_task = await make_job(T1, tasks=("faces", "x-ray"))
    also_good = await make_job(DOG, tasks=("objects",))

    assert await make_consumer(batch_size=4).run(burst=True) == 4

    statuses = {
        job.id: (await fetch_job(sessionmaker, job.id))
        for job in (good, garbage, unknown_task, also_good)
    }
    assert statuses[good.id].status == JobStatus.done
    assert statuses[also_good.id].status == JobStatus.done
    assert statuses[garbage.id].status == JobStatus.failed
    assert "not a JPEG, PNG, WebP, BMP, GIF or TIFF" in statuses[garbage.id].error
    assert statuses[unknown_task.id].status == JobStatus.failed
    assert "x-ray" in statuses[unknown_task.id].error
    assert [e["type"] for e in await job_events(redis, garbage.id)][-2:] == ["error", "status"]
    pending = await redis.xpending(streams.JOBS, streams.GROUP)
    assert pending["pending"] == 0


async def test_a_batch_publishes_its_results_in_the_order_of_its_entries(
    make_job, make_consumer, redis, sessionmaker
):
    """A node's results must come back in the order it sent its frames: the batch's events
    follow the stream's order, not the order Postgres returns the locked rows in."""
    jobs = [await make_job(blank(64 + i, 48, ".png")) for i in range(8)]
    # Rows rewritten last to first: a scan now meets them in the reverse of the batch's order.
    for job in reversed(jobs):
        async with sessionmaker.begin() as session:
            await session.execute(update(Job).where(Job.id == job.id).values(attempts=0))
    assert await make_consumer(batch_size=8).run(burst=True) == 8
    results = [
        event["job_id"]
        for _, fields in await redis.xrange(streams.FIREHOSE)
        if (event := decode_event(fields))["type"] == "result"
    ]
    assert results == [str(job.id) for job in jobs]


async def test_a_redelivered_finished_job_keeps_one_set_of_embeddings(
    make_job, make_consumer, redis, engine
):
    job = await make_job(T1)
    await make_consumer().run(burst=True)
    message = streams.JobMessage(job_id=job.id, tasks=("faces",), image_key=job.image_key)
    await streams.enqueue_job(redis, message, maxlen=1000)  # delivered again
    assert await make_consumer().run(burst=True) == 1
    assert await embedding_stats(engine) == [("mobilefacenet", 192, 6)]


async def test_embeddings_take_the_dimension_and_name_of_the_configured_embedder(
    make_job,
    make_consumer,
    settings,
    detectors,
    redis,
    sessionmaker,
    storage,
    engine,
    tmp_path,
):
    """An ArcFace-configured worker (tiny graph, 512-d) and the stand-in (192-d) share the
    table; every row says which model made it."""
    arcface = FaceDetector(
        FaceDetectorConfig(),
        SHARED_IMAGES.parent / "models" / "det_500m.onnx",
        Embedder(
            ARCFACE_MBF, OnnxModel(arcface_like(tmp_path / "w600k_mbf.onnx"), RuntimeOptions())
        ),
        options=RuntimeOptions(),
    )
    await make_job(T1)
    await Consumer(
        settings, {**detectors, "faces": arcface}, redis, sessionmaker, storage, name="arcface"
    ).run(burst=True)
    await make_job(T1)
    await make_consumer().run(burst=True)
    assert await embedding_stats(engine) == [("mobilefacenet", 192, 6), ("w600k_mbf", 512, 6)]

    # The stored dimension is enforced against the vector itself.
    async with engine.begin() as connection:
        with pytest.raises(IntegrityError, match="ck_face_embeddings_dim"):
            await connection.execute(
                text("UPDATE face_embeddings SET dim = 512 WHERE model = 'mobilefacenet'")
            )


async def test_deleting_a_job_deletes_its_embeddings(make_job, make_consumer, sessionmaker, engine):
    job = await make_job(T1)
    other = await make_job(T1)
    await make_consumer().run(burst=True)
    async with sessionmaker.begin() as session:
        await session.execute(delete(Job).where(Job.id == job.id))
    async with engine.connect() as connection:
        owners = (
            await connection.execute(text("SELECT DISTINCT job_id FROM face_embeddings"))
        ).all()
    assert [row[0] for row in owners] == [other.id]


class BatchRecorder:
    """The real face detector, noting the size of every batch it is given."""

    task = "faces"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.batches: list[int] = []

    def warm_up(self) -> None:
        pass

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        self.batches.append(len(images))
        return self.inner.detect(images)


def waiting_consumer(settings, detectors, redis, sessionmaker, storage, recorder) -> Consumer:
    """Batches of up to 8 with a long fill wait: any wait for a batch to fill is plain to see."""
    worker = settings.worker.model_copy(update={"batch_size": 8, "batch_wait_ms": 2000})
    return Consumer(
        settings.model_copy(update={"worker": worker}),
        {**detectors, "faces": recorder},
        redis,
        sessionmaker,
        storage,
        name="batcher",
    )


async def test_a_lone_job_runs_at_once_without_waiting_for_its_batch_to_fill(
    make_job, settings, detectors, redis, sessionmaker, storage
):
    """A job read alone starts at once: one that arrives just after it is not in its batch, as
    it would be if the worker waited batch_wait_ms (2 s) for company."""
    recorder = BatchRecorder(detectors["faces"])
    consumer = waiting_consumer(settings, detectors, redis, sessionmaker, storage, recorder)
    first = await make_job(T1)
    # The group exists before anyone reads (the API makes it at start): the watcher below asks
    # it for pending entries before the consumer's first read.
    await streams.ensure_group(redis)

    async def enqueue_once_the_first_is_taken() -> Job:
        for _ in range(1000):
            if (await redis.xpending(streams.JOBS, streams.GROUP))["pending"] == 1:
                return await make_job(T1)
            await asyncio.sleep(0.01)
        raise AssertionError("the consumer never read the first job")

    second = asyncio.create_task(enqueue_once_the_first_is_taken())
    assert await consumer.run(burst=True) == 2
    jobs = [first, await second]

    assert recorder.batches == [1, 1]
    for job in jobs:
        assert (await fetch_job(sessionmaker, job.id)).status == JobStatus.done


async def test_a_read_that_finds_a_queue_waits_for_the_batch_to_fill(
    make_job, settings, detectors, redis, sessionmaker, storage
):
    recorder = BatchRecorder(detectors["faces"])
    consumer = waiting_consumer(settings, detectors, redis, sessionmaker, storage, recorder)
    queued = [await make_job(T1) for _ in range(2)]
    await streams.ensure_group(redis)  # as the API makes it at start (see above)

    async def enqueue_once_both_are_taken() -> Job:
        for _ in range(1000):
            if (await redis.xpending(streams.JOBS, streams.GROUP))["pending"] == 2:
                return await make_job(T1)  # the consumer has read both and waits for more
            await asyncio.sleep(0.01)
        raise AssertionError("the consumer never read the two queued jobs")

    late = asyncio.create_task(enqueue_once_both_are_taken())
    assert await consumer.run(burst=True) == 3
    jobs = [*queued, await late]

    assert recorder.batches == [3]  # the latecomer joined the two that were queued
    for job in jobs:
        assert (await fetch_job(sessionmaker, job.id)).status == JobStatus.done
