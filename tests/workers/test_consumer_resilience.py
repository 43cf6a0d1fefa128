"""The consumer survives Redis losing its data, enforces the job timeout, and beats."""

import asyncio

from sqlalchemy import select

from app import streams
from app.models import Job, JobStatus
from tests.conftest import shared_image
from tests.images import blank

T1 = shared_image("scenes/t1.jpg")


async def wait_for_status(sessionmaker, job_id, status: JobStatus, timeout_s: float = 15) -> None:
    for _ in range(int(timeout_s / 0.05)):
        async with sessionmaker() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id))
            if job is not None and job.status == status:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}")


async def test_the_consumer_recreates_its_group_after_redis_is_wiped(
    make_consumer, make_job, redis, sessionmaker
):
    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop))
    try:
        for _ in range(100):
            if await streams.live_workers(redis):
                break
            await asyncio.sleep(0.02)
        await redis.flushall()  # the group, the stream, the heartbeat: all gone
        job = await make_job(T1)  # XADD recreates the stream, but not the group
        await wait_for_status(sessionmaker, job.id, JobStatus.done)
        assert not worker.done()
    finally:
        stop.set()
        await worker


async def test_a_job_over_the_timeout_fails_and_is_acked(
    make_consumer, make_job, sessionmaker, redis
):
    job = await make_job(T1)
    await make_consumer(job_timeout_s=0.001).run(burst=True)
    async with sessionmaker() as session:
        failed = await session.get(Job, job.id)
    assert failed.status == JobStatus.failed
    assert failed.error == "processing took longer than 0.001 s"
    assert (await streams.queue_stats(redis)).pending == 0
    assert await redis.get(streams.job_entry_key(job.id)) is None  # marker gone with the ack


async def test_one_slow_image_does_not_fail_the_rest_of_its_batch(
    make_consumer, make_job, sessionmaker, redis
):
    """t1.jpg's faces, objects and text take most of a second here, a 64x48 QR scan
    milliseconds: in one batch past a 0.1 s timeout, only t1's job fails (the batch ran again
    one job at a time; every job of it failed)."""
    slow = await make_job(T1, tasks=("faces", "objects", "text"))
    quick = await make_job(blank(), tasks=("qr",))
    await make_consumer(job_timeout_s=0.1, batch_size=2, batch_wait_ms=500).run(burst=True)
    async with sessionmaker() as session:
        slow_job, quick_job = await session.get(Job, slow.id), await session.get(Job, quick.id)
    assert slow_job.status == JobStatus.failed
    assert slow_job.error == "processing took longer than 0.1 s"
    assert quick_job.status == JobStatus.done, quick_job.error
    assert (await streams.queue_stats(redis)).pending == 0
