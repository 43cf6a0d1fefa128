"""Delivery semantics of the worker: at-least-once delivery, exactly-once effects."""

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, text

from app import streams
from app.models import Detection, Job, JobStatus
from tests.conftest import job_events, shared_image
from tests.images import blank
from tests.processes import free_port

T1 = shared_image("scenes/t1.jpg")


async def count_detections(sessionmaker, job_id: uuid.UUID) -> int:
    async with sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(Detection).where(Detection.job_id == job_id)
        )


async def load_job(sessionmaker, job_id: uuid.UUID) -> Job:
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


@pytest.fixture(autouse=True)
async def consumer_group(redis):
    """The group exists before any test reads directly with next_entries (the API makes it)."""
    await streams.ensure_group(redis)


async def requeue(redis, job: Job) -> None:
    """Another copy of the job's message, as a retried XADD or a replay would produce."""
    message = streams.JobMessage(job_id=job.id, tasks=tuple(job.tasks), image_key=job.image_key)
    await streams.enqueue_job(redis, message, maxlen=100)


async def pending_count(redis) -> int:
    return (await redis.xpending(streams.JOBS, streams.GROUP))["pending"]


# 0: jobs marked running before their images load (a finished job is skipped there); a minute:
# never marked (the product's deferred mark), so a finished job is found out at the write.
MARK_FIRST_AND_DEFERRED = pytest.mark.parametrize("running_after_ms", [0, 60_000])


@MARK_FIRST_AND_DEFERRED
async def test_the_same_message_twice_writes_one_set_of_rows(
    make_job, make_consumer, redis, sessionmaker, running_after_ms
):
    job = await make_job(T1)
    await requeue(redis, job)
    assert await make_consumer(running_after_ms=running_after_ms).run(burst=True) == 2

    assert await count_detections(sessionmaker, job.id) == 6
    assert (await load_job(sessionmaker, job.id)).status == JobStatus.done
    assert await pending_count(redis) == 0
    statuses = [e["status"] for e in await job_events(redis, job.id) if e["type"] == "status"]
    assert statuses.count("done") == 1


async def test_concurrent_redelivery_to_two_consumers_writes_one_set(
    make_job, make_consumer, redis, sessionmaker
):
    job = await make_job(T1)
    await requeue(redis, job)
    first, second = make_consumer("a", batch_size=1), make_consumer("b", batch_size=1)
    await asyncio.gather(first.run(burst=True), second.run(burst=True))
    assert await count_detections(sessionmaker, job.id) == 6
    assert await pending_count(redis) == 0


async def test_a_message_of_a_dead_consumer_is_reclaimed_and_finished(
    make_job, make_consumer, redis, sessionmaker
):
    job = await make_job(T1)
    dead = make_consumer("dead-worker")
    entries = await dead.next_entries(block_ms=100)  # read, then "die" without acking
    assert [e.deliveries for e in entries] == [1]
    assert await pending_count(redis) == 1

    # Too fresh to steal: a live consumer leaves it alone.
    patient = make_consumer("patient", job_timeout_s=60)
    assert await patient.run(burst=True) == 0
    assert (await load_job(sessionmaker, job.id)).status == JobStatus.queued

    # job_timeout_s is also the rescuer's own time limit for the job: 1 s leaves room for
    # t1.jpg's six faces (0.2-0.4 s here), and the message has been idle longer than that.
    await asyncio.sleep(1.1)
    rescuer = make_consumer("rescuer", job_timeout_s=1.0)
    assert await rescuer.run(burst=True) == 1
    finished = await load_job(sessionmaker, job.id)
    assert finished.status == JobStatus.done
    assert await count_detections(sessionmaker, job.id) == 6
    assert await pending_count(redis) == 0


async def test_after_max_deliveries_the_message_is_dead_lettered_and_the_job_failed(
    make_job, make_consumer, redis, sessionmaker
):
    job = await make_job(T1)
    crashing = make_consumer("crashing")
    # Three deliveries, each to a consumer that dies before acking.
    assert [e.deliveries for e in await crashing.next_entries(block_ms=100)] == [1]
    for _ in range(2):
        await redis.xautoclaim(streams.JOBS, streams.GROUP, "crashing", 0, count=1)
    assert await streams.delivery_count(redis, (await redis.xrange(streams.JOBS))[0][0]) == 3
    await asyncio.sleep(0.05)
    rescuer = make_consumer("rescuer", job_timeout_s=0.01, max_deliveries=3)
    assert await rescuer.run(burst=True) == 1

    failed = await load_job(sessionmaker, job.id)
    assert failed.status == JobStatus.failed
    assert "gave up after 3 deliveries" in failed.error
    dead = await redis.xrange(streams.DEAD)
    assert len(dead) == 1
    assert dead[0][1][b"job_id"] == str(job.id).encode()
    assert b"gave up" in dead[0][1][b"error"]
    assert await pending_count(redis) == 0


async def test_an_unreadable_stored_image_is_retried_by_redelivery_then_dead_lettered(
    make_job, make_consumer, redis, sessionmaker, storage
):
    """A stored file that cannot be read is the job's problem, not an outage: the worker moves
    on (it used to wait on it for ever, as for Postgres or Redis), and a later delivery that
    fails the same way past max_deliveries fails the job."""
    job = await make_job(T1)
    path = storage.path(job.image_key)
    path.unlink()
    path.mkdir()  # reading it raises IsADirectoryError, an OSError (as EIO or EACCES would)
    try:
        # An idle entry is reclaimed after job_timeout_s: the worker redelivers it to itself
        # until max_deliveries, then dead-letters it (it waited for ever on the first delivery).
        # A burst run ends when the stream is idle, which may come before the entry has been
        # idle for job_timeout_s (how soon depends on how fast the failure was logged): the
        # worker runs again until it has taken the four deliveries.
        worker = make_consumer("worker", job_timeout_s=0.05, max_deliveries=3)
        taken = 0
        for _ in range(20):
            taken += await asyncio.wait_for(worker.run(burst=True), timeout=60)
            if (await load_job(sessionmaker, job.id)).status == JobStatus.failed:
                break
        assert taken == 4
        failed = await load_job(sessionmaker, job.id)
        assert failed.status == JobStatus.failed
        assert "gave up after 3 deliveries" in failed.error
        assert await pending_count(redis) == 0
        [dead] = await redis.xrange(streams.DEAD)
        assert dead[1][b"job_id"] == str(job.id).encode()
    finally:
        path.rmdir()


async def test_a_read_only_redis_is_waited_out_as_one_that_is_down(
    make_job, make_consumer, redis, sessionmaker
):
    """A replica not yet promoted in a failover answers every write READONLY, a ResponseError:
    the worker raised it and its process died, leaving the pool a worker short for good. It is
    an outage: the worker waits, then goes on."""
    await redis.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # nobody there
    stop = asyncio.Event()
    task = asyncio.create_task(
        make_consumer("through-a-failover", block_ms=50, retry_backoff_s=0.1).run(stop)
    )
    try:
        await asyncio.sleep(1.0)  # reads (XREADGROUP writes the group) come back READONLY
        assert not task.done(), task
    finally:
        await redis.execute_command("REPLICAOF", "NO", "ONE")
    try:
        job = await make_job(T1)
        for _ in range(300):
            if (await load_job(sessionmaker, job.id)).status == JobStatus.done:
                break
            await asyncio.sleep(0.1)
        assert (await load_job(sessionmaker, job.id)).status == JobStatus.done
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_batch_that_ends_before_running_after_ms_goes_from_queued_to_done(
    make_job, make_consumer, redis, sessionmaker
):
    job = await make_job(T1)
    # A minute: inference is over long before, so the job is never marked running.
    assert await make_consumer(running_after_ms=60_000).run(burst=True) == 1
    events = await job_events(redis, job.id)
    # The stream holds what the worker reported (`queued` is the job's row): the result and
    # its final status as one entry, which readers see whole or not at all.
    assert [e.get("status", e["type"]) for e in events] == ["result", "done"]
    assert len(await redis.xrange(streams.job_events_key(job.id))) == 1
    done = await load_job(sessionmaker, job.id)
    assert done.status == JobStatus.done
    # What marking it running would have written, written with the result.
    assert done.attempts == 1
    assert done.created_at <= done.started_at <= done.finished_at


async def test_a_delivery_that_died_before_its_running_mark_still_counts_as_an_attempt(
    make_job, make_consumer, sessionmaker
):
    """The running mark is deferred (running_after_ms): a worker killed in inference before it
    left no mark. The retry's result counts both deliveries from the stream's delivery count."""
    job = await make_job(T1)
    dead = make_consumer("killed-in-inference")
    assert [e.deliveries for e in await dead.next_entries(block_ms=100)] == [1]  # then "dies"
    await asyncio.sleep(1.1)  # idle past the rescuer's job_timeout_s: it may take the entry
    rescuer = make_consumer("rescuer", job_timeout_s=1.0, running_after_ms=60_000)
    assert await rescuer.run(burst=True) == 1
    done = await load_job(sessionmaker, job.id)
    assert done.status == JobStatus.done
    assert done.attempts == 2


async def test_a_batch_still_in_inference_after_running_after_ms_is_marked_running_first(
    make_job, make_consumer, redis, sessionmaker
):
    job = await make_job(T1)
    consumer = make_consumer(running_after_ms=20)
    original = consumer.infer

    async def slow_infer(batch):
        await asyncio.sleep(0.5)  # still in inference well past running_after_ms
        return await original(batch)

    consumer.infer = slow_infer
    assert await consumer.run(burst=True) == 1
    events = await job_events(redis, job.id)
    assert [e.get("status", e["type"]) for e in events] == ["running", "result", "done"]
    done = await load_job(sessionmaker, job.id)
    assert done.status == JobStatus.done
    assert done.attempts == 1  # counted once: by the mark, not again with the result
    assert done.started_at < done.finished_at


async def test_a_bad_image_fails_its_job_and_the_worker_goes_on(
    make_job, make_consumer, redis, sessionmaker, storage
):
    bad = await make_job(blank(), enqueue=False)
    storage.put(bad.image_key, T1[: len(T1) // 3])  # corrupted on disk after upload
    await requeue(redis, bad)
    good = await make_job(T1)

    assert await make_consumer().run(burst=True) == 2
    failed = await load_job(sessionmaker, bad.id)
    assert failed.status == JobStatus.failed
    assert "truncated" in failed.error
    assert (await load_job(sessionmaker, good.id)).status == JobStatus.done
    events = await job_events(redis, bad.id)
    assert [e.get("status", e["type"]) for e in events] == ["running", "error", "failed"]
    assert await pending_count(redis) == 0


async def test_garbage_pixels_behind_a_valid_header_fail_the_job(
    make_job, make_consumer, sessionmaker, storage, redis
):
    job = await make_job(blank(extension=".png"), enqueue=False)
    png = bytearray(blank(extension=".png"))
    png[40:-12] = b"\x13" * (len(png) - 52)  # scramble the compressed pixel data, keep the chunks
    storage.put(job.image_key, bytes(png))
    await requeue(redis, job)
    assert await make_consumer().run(burst=True) == 1
    assert (await load_job(sessionmaker, job.id)).status == JobStatus.failed


async def test_a_malformed_message_is_dead_lettered(make_consumer, redis):
    await redis.xadd(streams.JOBS, {"v": "2", "job_id": "not-a-uuid"})
    await redis.xadd(streams.JOBS, {"v": "99", "job_id": str(uuid.uuid4()), "tasks": "faces"})
    assert await make_consumer().run(burst=True) == 2
    dead = await redis.xrange(streams.DEAD)
    assert len(dead) == 2
    assert b"malformed" in dead[0][1][b"error"]
    assert b"version 99" in dead[1][1][b"error"]
    assert await pending_count(redis) == 0


@MARK_FIRST_AND_DEFERRED
async def test_a_deleted_job_is_acked_and_skipped(
    make_job, make_consumer, redis, sessionmaker, storage, running_after_ms
):
    job = await make_job(T1)
    async with sessionmaker.begin() as session:
        await session.delete(await session.get(Job, job.id))
    assert await make_consumer(running_after_ms=running_after_ms).run(burst=True) == 1
    assert await pending_count(redis) == 0
    assert await count_detections(sessionmaker, job.id) == 0


async def test_node_frames_never_touch_disk(
    make_job, make_consumer, frames_redis, sessionmaker, storage
):
    job = await make_job(T1, node_frame=True, frames_redis=frames_redis)
    assert job.image_key is None
    assert await make_consumer(frames_redis=frames_redis).run(burst=True) == 1
    finished = await load_job(sessionmaker, job.id)
    assert finished.status == JobStatus.done
    assert finished.processed_image_key is None
    assert await count_detections(sessionmaker, job.id) == 6
    assert not storage.root.exists() or list(storage.root.iterdir()) == []
    assert await frames_redis.exists(streams.frame_key(job.id)) == 0


async def test_an_expired_frame_fails_its_job_and_the_worker_goes_on(
    make_job, make_consumer, make_node, frames_redis, redis, sessionmaker
):
    gone = await make_job(T1, node_frame=True, frames_redis=frames_redis)
    node = await make_node("gate-cam")
    async with sessionmaker.begin() as session:
        (await session.get(Job, gone.id)).node_id = node.id  # type: ignore[union-attr]
    await frames_redis.delete(streams.frame_key(gone.id))  # its TTL ran out while it waited
    fine = await make_job(T1, node_frame=True, frames_redis=frames_redis)

    assert await make_consumer(frames_redis=frames_redis).run(burst=True) == 2
    failed = await load_job(sessionmaker, gone.id)
    assert failed.status == JobStatus.failed
    assert "frame is gone" in failed.error
    assert (await load_job(sessionmaker, fine.id)).status == JobStatus.done
    events = await job_events(redis, gone.id)
    assert [e.get("status", e["type"]) for e in events] == ["running", "error", "failed"]
    # Which camera's frame failed goes with it (webhooks filter on it), and that it has no image.
    error = events[1]
    assert (error["node_id"], error["node_name"]) == (str(node.id), "gate-cam")
    assert error["stored_image"] is False
    assert await pending_count(redis) == 0


async def test_a_batch_reads_all_its_frames_in_one_round_trip(
    make_job, make_consumer, frames_redis, sessionmaker
):
    jobs = [await make_job(T1, node_frame=True, frames_redis=frames_redis) for _ in range(3)]
    await frames_redis.config_resetstat()
    assert await make_consumer(frames_redis=frames_redis, batch_size=4).run(burst=True) == 3
    assert {(await load_job(sessionmaker, j.id)).status for j in jobs} == {JobStatus.done}
    calls = await frames_redis.info("commandstats")
    assert calls["cmdstat_mget"]["calls"] == 1
    assert "cmdstat_get" not in calls


async def test_stop_finishes_the_work_in_hand_then_exits(
    make_job, make_consumer, sessionmaker, redis
):
    jobs = [await make_job(T1) for _ in range(4)]
    consumer = make_consumer(batch_size=1)
    stop = asyncio.Event()
    original = consumer.infer

    async def infer_then_stop(batch):
        stop.set()  # SIGTERM arrives while the first batch is in inference
        return await original(batch)

    consumer.infer = infer_then_stop
    taken = await consumer.run(stop)
    statuses = [(await load_job(sessionmaker, j.id)).status for j in jobs]
    # Whatever was taken (the batch in inference, and the one decoded ahead) was finished;
    # nothing was left half-done, and the rest was never taken.
    assert 1 <= taken < len(jobs)
    assert statuses[:taken] == [JobStatus.done] * taken
    assert statuses[taken:] == [JobStatus.queued] * (len(jobs) - taken)
    assert await pending_count(redis) == 0


async def test_a_wiped_redis_does_not_kill_the_consumer(
    make_job, make_consumer, redis, sessionmaker
):
    await redis.flushdb()  # the stream and its group are gone
    consumer = make_consumer()
    assert await consumer.run(burst=True) == 0  # recreates the group instead of dying
    job = await make_job(T1)  # new work flows again
    assert await consumer.run(burst=True) == 1
    assert (await load_job(sessionmaker, job.id)).status == JobStatus.done


async def test_a_retried_finish_after_its_commit_publishes_the_lost_events(
    make_job, make_consumer, redis, sessionmaker
):
    """An outage right after the result commit: the retry must not leave the job silent."""
    job = await make_job(T1)
    consumer = make_consumer()
    [entry] = await consumer.next_entries(block_ms=100)
    [work] = await consumer.prepare([entry])
    [result] = await consumer.infer([work])
    await consumer._finish([(work.message, result)], batch_size=1)
    await redis.delete(streams.job_events_key(job.id))  # the publish never reached Redis

    await consumer._finish([(work.message, result)], batch_size=1)  # the in-place retry
    events = await job_events(redis, job.id)
    assert [e.get("status", e["type"]) for e in events] == ["result", "done"]
    assert events[0]["job"]["counts"] == {"face": 6}
    assert await count_detections(sessionmaker, job.id) == 6


async def test_node_frames_are_deleted_when_their_jobs_end(
    make_job, make_consumer, redis, frames_redis, sessionmaker
):
    """Done or dead-lettered, a job leaves no frame behind, and nothing carries its bytes."""
    jobs = [await make_job(T1, node_frame=True, frames_redis=frames_redis) for _ in range(2)]
    # The second message has been delivered too often already: it is dead-lettered.
    crashing = make_consumer("crashing", batch_size=1)
    await crashing.next_entries(block_ms=100)
    await crashing.next_entries(block_ms=100)
    second = (await redis.xrange(streams.JOBS))[1][0]
    for _ in range(3):
        await redis.xclaim(streams.JOBS, streams.GROUP, "crashing", 0, [second])
    # The job timeout is both the reclaim age and the inference limit: long enough for t1.
    await asyncio.sleep(1.1)
    rescuer = make_consumer(
        "rescuer", frames_redis=frames_redis, job_timeout_s=1.0, max_deliveries=3
    )
    await rescuer.run(burst=True)

    assert [(await load_job(sessionmaker, j.id)).status for j in jobs] == [
        JobStatus.done,
        JobStatus.failed,
    ]
    assert await frames_redis.keys("lookout:frame:*") == []
    [(_, dead)] = await redis.xrange(streams.DEAD)
    assert dead[b"frame_key"] == streams.frame_key(jobs[1].id).encode()
    for _, fields in [*await redis.xrange(streams.JOBS), *await redis.xrange(streams.DEAD)]:
        assert T1[3000:3048] not in b"".join(fields.values())
    assert await pending_count(redis) == 0


async def test_a_worker_takes_no_job_until_the_schema_is_migrated(
    make_job, make_consumer, engine, sessionmaker
):
    """Kubernetes starts new workers while the migration Job runs: on the old schema each job
    they took failed. A worker waits for the schema its code needs, then goes on."""
    async with engine.begin() as connection:
        head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        await connection.execute(text("UPDATE alembic_version SET version_num = '0013'"))
    job = await make_job(T1)
    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer(retry_backoff_s=0.1).run(stop))
    try:
        await asyncio.sleep(1.0)
        assert (await load_job(sessionmaker, job.id)).status == JobStatus.queued
        async with engine.begin() as connection:  # `lookout migrate` finished
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )
        for _ in range(100):
            if (await load_job(sessionmaker, job.id)).status == JobStatus.done:
                break
            await asyncio.sleep(0.1)
        assert (await load_job(sessionmaker, job.id)).status == JobStatus.done
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )
        stop.set()
        await worker
