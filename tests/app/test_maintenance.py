"""Reconciler (no accepted job is lost, none is enqueued twice) and janitor (retention)."""

import os
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app import streams
from app.apikeys.service import ANONYMOUS_ADMIN
from app.jobs.service import get_processed_image
from app.maintenance import SWEEP_SHARE, expire_jobs, reconcile, run_maintenance
from app.models import Job, JobStatus
from app.settings import MaintenanceSettings, RetentionSettings
from app.storage import sweep
from tests.conftest import shared_image

T1 = shared_image("scenes/t1.jpg")


def no_grace(settings):
    return settings.model_copy(
        update={"maintenance": MaintenanceSettings(enabled=False, reconcile_grace_s=0)}
    )


async def stream_job_ids(redis) -> list[str]:
    entries = await redis.xrange(streams.JOBS)
    return [fields[b"job_id"].decode() for _, fields in entries]


async def test_a_job_committed_but_never_queued_is_enqueued_once(
    settings, make_job, sessionmaker, redis
):
    job = await make_job(T1, enqueue=False)  # the API died between INSERT and XADD
    assert await reconcile(no_grace(settings), sessionmaker, redis) == (1, 0)
    assert await stream_job_ids(redis) == [str(job.id)]
    # The next pass sees its message in the stream: no second copy.
    assert await reconcile(no_grace(settings), sessionmaker, redis) == (0, 0)
    assert await stream_job_ids(redis) == [str(job.id)]


async def test_a_young_job_is_left_to_the_api(settings, make_job, sessionmaker, redis):
    await make_job(T1, enqueue=False)
    assert await reconcile(settings, sessionmaker, redis) == (0, 0)  # default 30 s grace
    assert await stream_job_ids(redis) == []


async def test_a_job_pending_with_a_worker_is_not_enqueued_again(
    settings, make_job, sessionmaker, redis
):
    job = await make_job(T1)
    await streams.ensure_group(redis)
    delivered = await streams.read_new(redis, "busy-worker", count=10, block_ms=10)
    assert len(delivered) == 1  # now pending, in the hands of a (slow) worker
    assert await reconcile(no_grace(settings), sessionmaker, redis) == (0, 0)
    assert await stream_job_ids(redis) == [str(job.id)]


async def test_after_redis_is_wiped_every_unfinished_job_is_enqueued_and_runs(
    settings, make_job, sessionmaker, redis, make_consumer
):
    jobs = [await make_job(T1) for _ in range(3)]
    finished = await make_job(T1)
    await make_consumer().run(burst=True)  # all four done …
    async with sessionmaker.begin() as session:  # … but three had not started when Redis died
        await session.execute(
            update(Job)
            .where(Job.id.in_([j.id for j in jobs]))
            .values(status=JobStatus.queued, finished_at=None)
        )
    await redis.flushall()

    assert await reconcile(no_grace(settings), sessionmaker, redis) == (3, 0)
    assert sorted(await stream_job_ids(redis)) == sorted(str(j.id) for j in jobs)
    assert await make_consumer().run(burst=True) == 3
    async with sessionmaker() as session:
        statuses = {j.id: j.status for j in await session.scalars(select(Job))}
    assert set(statuses.values()) == {JobStatus.done}
    assert finished.id in statuses


async def test_a_trimmed_entry_is_enqueued_again(settings, make_job, sessionmaker, redis):
    job = await make_job(T1)
    await redis.xtrim(streams.JOBS, maxlen=0)  # MAXLEN trimmed it before any worker read it
    assert await reconcile(no_grace(settings), sessionmaker, redis) == (1, 0)
    assert await stream_job_ids(redis) == [str(job.id)]


async def test_a_lost_node_frame_job_is_sent_again_while_its_frame_is_there(
    settings, make_job, make_consumer, sessionmaker, redis, frames_redis
):
    job = await make_job(T1, node_frame=True, frames_redis=frames_redis)
    await redis.xtrim(streams.JOBS, maxlen=0)  # the message is lost; the frame is not
    reconciled = await reconcile(no_grace(settings), sessionmaker, redis, frames_redis=frames_redis)
    assert reconciled == (1, 0)
    [(_, fields)] = await redis.xrange(streams.JOBS)
    assert streams.JobMessage.from_fields(fields).frame_key == streams.frame_key(job.id)
    assert await make_consumer(frames_redis=frames_redis).run(burst=True) == 1
    async with sessionmaker() as session:
        assert (await session.get(Job, job.id)).status == JobStatus.done
    assert await frames_redis.exists(streams.frame_key(job.id)) == 0


async def test_a_lost_node_frame_job_whose_frame_is_gone_fails_with_the_reason(
    settings, make_job, sessionmaker, redis, frames_redis
):
    job = await make_job(T1, node_frame=True, frames_redis=frames_redis)
    await redis.xtrim(streams.JOBS, maxlen=0)
    await frames_redis.delete(streams.frame_key(job.id))  # expired, or its Redis restarted
    reconciled = await reconcile(no_grace(settings), sessionmaker, redis, frames_redis=frames_redis)
    assert reconciled == (0, 1)
    assert await redis.xlen(streams.JOBS) == 0  # nothing to send: no message names a lost frame
    async with sessionmaker() as session:
        failed = await session.get(Job, job.id)
    assert failed.status == JobStatus.failed
    assert "frame is gone" in failed.error
    events = [e for _, e in await streams.read_job_events(redis, job.id)]
    assert [e.get("status", e["type"]) for e in events] == ["error", "failed"]


async def test_a_redelivered_finished_job_gets_its_missing_events(
    make_job, make_consumer, sessionmaker, redis
):
    """A worker died after its commit, before its publish: the next delivery publishes."""
    job = await make_job(T1)
    await make_consumer().run(burst=True)
    await redis.delete(streams.job_events_key(job.id), streams.FIREHOSE)
    await streams.enqueue_job(
        redis, streams.JobMessage(job.id, ("faces",), image_key=job.image_key), maxlen=100
    )
    await make_consumer().run(burst=True)
    events = [e for _, e in await streams.read_job_events(redis, job.id)]
    assert [e["type"] for e in events] == ["result", "status"]
    assert events[1]["status"] == "done"
    assert len(events[0]["job"]["detections"]) == 6
    assert len(await redis.xrange(streams.FIREHOSE)) == 1


async def test_finished_jobs_past_retention_are_deleted_with_their_images(
    settings, make_job, make_consumer, sessionmaker, storage
):
    old, recent, late = await make_job(T1), await make_job(T1), await make_job(T1)
    await make_consumer().run(burst=True)
    for job in (old, recent):  # both processed images asked for, and so drawn and cached
        async with sessionmaker.begin() as session:
            await get_processed_image(
                session, storage, job.id, ANONYMOUS_ADMIN, max_pixels=10**8, target_side_px=2048
            )
    async with sessionmaker.begin() as session:
        long_ago = datetime.now(UTC) - timedelta(days=31)
        await session.execute(
            update(Job).where(Job.id == old.id).values(created_at=long_ago, finished_at=long_ago)
        )
        # Queued a month ago, finished now: kept for the retention after it finished.
        await session.execute(update(Job).where(Job.id == late.id).values(created_at=long_ago))
    assert await expire_jobs(settings, sessionmaker, storage) == 1
    async with sessionmaker() as session:
        assert {j.id for j in await session.scalars(select(Job))} == {recent.id, late.id}
    assert sorted(p.name for p in storage.root.iterdir()) == sorted(
        [f"{recent.id}.jpg", f"{recent.id}.processed.jpg", f"{late.id}.jpg"]
    )


def test_sweep_expires_old_images_then_evicts_oldest_over_the_cap(storage):
    now = time.time()
    for name, age_s in [("a.jpg", 100), ("b.jpg", 50), ("c.jpg", 10), ("d.jpg", 5000)]:
        storage.put(name, b"x" * 1000)
        os.utime(storage.path(name), (now - age_s, now - age_s))
    result = sweep(storage, max_age_s=1000, max_total_bytes=2000)
    assert result.expired == ["d.jpg"]
    assert result.evicted == ["a.jpg"]  # oldest of the rest
    assert result.bytes_kept == 2000
    assert sorted(p.name for p in storage.root.iterdir()) == ["b.jpg", "c.jpg"]


def test_sweep_never_deletes_kept_images_nor_evicts_fresh_ones(storage):
    now = time.time()
    for name, age_s in [("queued.jpg", 5000), ("a.jpg", 100), ("b.jpg", 50), ("new.jpg", 1)]:
        storage.put(name, b"x" * 1000)
        os.utime(storage.path(name), (now - age_s, now - age_s))
    result = sweep(storage, max_age_s=1000, max_total_bytes=1000, keep={"queued.jpg"}, grace_s=10)
    assert result.expired == []  # queued.jpg is past the TTL, but its job still needs it
    assert result.evicted == ["a.jpg", "b.jpg"]
    assert result.bytes_kept == 2000  # over the cap: nothing left may go
    assert sorted(p.name for p in storage.root.iterdir()) == ["new.jpg", "queued.jpg"]


async def test_the_image_sweep_waits_in_proportion_to_its_own_cost(
    settings, sessionmaker, redis, storage
):
    """The sweep stats every stored file (3-4 s of CPU for 200,000 files, which it spent every
    30 s): after one, the next waits its duration ÷ SWEEP_SHARE; `lookout maintain` (sweep_now)
    sweeps whatever the wait."""

    def store_expired(name: str) -> None:
        storage.put(name, b"x" * 100)
        old = time.time() - 2 * settings.retention.image_ttl_s
        os.utime(storage.path(name), (old, old))

    store_expired("a.jpg")
    started = time.monotonic()
    first = await run_maintenance(settings, sessionmaker, redis, storage)
    took_ms = (time.monotonic() - started) * 1000
    assert first.images_expired == 1 and not storage.exists("a.jpg")
    # Set for the sweep's own duration ÷ SWEEP_SHARE: above 0, below the whole pass's.
    assert 0 < await redis.pttl(streams.IMAGES_SWEPT) <= took_ms / SWEEP_SHARE

    store_expired("b.jpg")
    await redis.set(streams.IMAGES_SWEPT, "1", px=60_000)  # as after a sweep of a large store
    waiting = await run_maintenance(settings, sessionmaker, redis, storage)
    assert waiting.images_expired == 0 and storage.exists("b.jpg")
    forced = await run_maintenance(settings, sessionmaker, redis, storage, sweep_now=True)
    assert forced.images_expired == 1 and not storage.exists("b.jpg")


async def test_one_maintenance_pass_does_it_all(
    settings, make_job, make_consumer, sessionmaker, redis, storage
):
    finished = await make_job(T1)
    await make_consumer().run(burst=True)
    lost = await make_job(T1, enqueue=False)
    tight = no_grace(settings).model_copy(
        update={"retention": RetentionSettings(storage_max_bytes=1)}
    )
    report = await run_maintenance(tight, sessionmaker, redis, storage)
    assert report.reenqueued == 1
    # The finished job's image goes over the cap (it has no processed image: nobody asked for
    # one); the re-enqueued job keeps its image …
    assert report.images_evicted == 1
    assert [p.name for p in storage.root.iterdir()] == [f"{lost.id}.jpg"]
    assert not storage.exists(finished.image_key)
    # … so a worker can still run it.
    assert await make_consumer().run(burst=True) == 1
    async with sessionmaker() as session:
        job = await session.get(Job, lost.id)
        assert job is not None and job.status == JobStatus.done
