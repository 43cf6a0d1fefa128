"""The reconciler and the janitor: one pass every `maintenance.interval_s`, in one place.

Where it runs: inside the API process, as a lifespan background task, behind a Redis lock so
that one API replica (or gunicorn worker) in the whole deployment runs each pass. The API is
the one component every deployment has (zero-config `lookout up` included) and the work is
light I/O (a few queries, a directory scan), so no extra process has to be deployed, watched
or scaled; the lock makes N replicas safe. `lookout maintain` runs a single pass by hand
(or from cron, with `maintenance.enabled=false` in the API) for deployments that want it apart.

Reconciler: Postgres is the source of truth. A job that is queued/running there (and older than
the grace period, so the API is not between its INSERT and its XADD) must have a live message
in `lookout:jobs`; if its entry marker or the entry itself is gone (Redis lost its data, the
entry was MAXLEN-trimmed, or the API died before the XADD) the job is enqueued again. A job
whose message is still in the stream is never enqueued twice. A node frame that was not stored
is sent again only while the frames Redis still has its bytes; once they are gone (expired, or
that Redis lost them) the job fails with a clear error.

Janitor: images past their TTL and, oldest first, beyond the total size cap, except those that
queued/running jobs still need (a worker would fail the job without its image); finished jobs
past their retention (their detections cascade, their images go with them); the gallery's
sighting tallies folded to a row a person and source (app/gallery/people.py). The image sweep
stats every stored file (0.7 s of CPU for 200,000): it runs at most every SWEEP_SHARE of its
own last duration, so a large store costs the API a bounded share of a core, and the size cap
is kept a few minutes late at most.
"""

import asyncio
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from sqlalchemy import any_, bindparam, delete, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.gallery.people import compact_tallies
from app.jobs import results
from app.models import FINISHED_STATUSES, JOB_UNFINISHED, Job
from app.settings import Settings
from app.storage import Storage, SweepResult, sweep

log = structlog.get_logger()

# Finished jobs deleted per statement: keeps each transaction short.
JOB_DELETE_BATCH = 1000
# The image sweep waits its own last duration ÷ this before it runs again: 5% of a core.
SWEEP_SHARE = 0.05


@dataclass(frozen=True)
class MaintenanceReport:
    reenqueued: int
    lost_frames: int
    images_expired: int
    images_evicted: int
    bytes_freed: int
    jobs_deleted: int


async def reconcile(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    *,
    frames_redis: Redis | None = None,
) -> tuple[int, int]:
    """Re-enqueue unfinished jobs Redis no longer has. Returns (re-enqueued, failed: frame gone).

    `frames_redis`: where node frames are (None: the main Redis).
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.maintenance.reconcile_grace_s)
    async with sessionmaker() as session:
        jobs = list(
            await session.scalars(
                select(Job)
                .where(JOB_UNFINISHED, Job.created_at < cutoff)
                .order_by(Job.created_at)
                .limit(settings.maintenance.reconcile_batch)
            )
        )
    await streams.ensure_group(redis)  # after a wipe, so the group starts before our entries
    live = await streams.jobs_with_live_entry(redis, [job.id for job in jobs])
    lost = [job for job in jobs if job.id not in live]
    frames = await streams.frames_present(
        frames_redis if frames_redis is not None else redis,
        [streams.frame_key(job.id) for job in lost if job.image_key is None],
    )
    reenqueued = lost_frames = 0
    for job in lost:
        if job.image_key is None and streams.frame_key(job.id) not in frames:
            lost_frames += await _fail_lost_frame(settings, sessionmaker, redis, job.id)
            continue
        message = streams.JobMessage.for_job(job.id, tuple(job.tasks), job.image_key)
        await streams.enqueue_job(redis, message, maxlen=settings.streams.jobs_maxlen)
        reenqueued += 1
        log.info("job_reenqueued", job_id=str(job.id), status=job.status.value)
    return reenqueued, lost_frames


async def _fail_lost_frame(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    job_id: uuid.UUID,
) -> int:
    """A node frame that was not stored exists only in the frames Redis: without it, the job
    can only fail."""
    reason = (
        "the node frame is gone from the frames Redis (it waited past its TTL, or Redis lost it) "
        "and its job was not in the work queue"
    )
    async with sessionmaker.begin() as session:
        failure = await results.record_failure(session, job_id, reason)
    if failure is None:
        return 0
    await streams.publish_job_events(
        redis,
        failure,
        ttl_s=settings.streams.job_events_ttl_s,
        firehose_maxlen=settings.streams.firehose_maxlen,
    )
    log.info("job_failed_frame_lost", job_id=str(job_id))
    return 1


async def expire_jobs(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], storage: Storage
) -> int:
    """Delete finished jobs older than job_ttl_s with their images; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.retention.job_ttl_s)
    deleted = 0
    while True:
        async with sessionmaker.begin() as session:
            # A job finishes after it is created: `created_at` bounds the search to the old
            # jobs, where the finished_at test alone read every job kept. Oldest first, so that
            # its index serves the search in any plan, also one made for any cutoff (a prepared
            # statement's generic plan). The DELETE then takes the ids as one array: as a
            # subquery, a generic plan joined it to a scan of the whole table.
            due = list(
                await session.scalars(
                    select(Job.id)
                    .where(
                        Job.created_at < cutoff,
                        Job.status.in_(FINISHED_STATUSES),
                        Job.finished_at < cutoff,
                    )
                    .order_by(Job.created_at)
                    .limit(JOB_DELETE_BATCH)
                )
            )
            if not due:
                return deleted
            rows = (
                await session.execute(
                    delete(Job)
                    .where(Job.id == any_(bindparam("due", due, type_=ARRAY(UUID(as_uuid=True)))))
                    .returning(Job.image_key, Job.processed_image_key)
                )
            ).all()
        for keys in rows:
            for key in keys:
                if key is not None:
                    storage.delete(key)
        deleted += len(rows)
        if len(rows) < JOB_DELETE_BATCH:
            return deleted


async def images_in_use(sessionmaker: async_sessionmaker[AsyncSession]) -> set[str]:
    """Storage keys of the images that queued/running jobs still need."""
    async with sessionmaker() as session:
        keys = await session.scalars(
            select(Job.image_key).where(JOB_UNFINISHED, Job.image_key.is_not(None))
        )
        return {key for key in keys if key is not None}


async def run_maintenance(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    storage: Storage,
    *,
    frames_redis: Redis | None = None,
    sweep_now: bool = False,
) -> MaintenanceReport:
    """One pass: reconcile, expire jobs, fold the sighting tallies, sweep images (when due, or
    `sweep_now`). Each step is idempotent."""
    reenqueued, lost_frames = await reconcile(
        settings, sessionmaker, redis, frames_redis=frames_redis
    )
    jobs_deleted = await expire_jobs(settings, sessionmaker, storage)
    async with sessionmaker.begin() as session:
        await compact_tallies(session)
    swept = SweepResult([], [], 0, 0)
    if sweep_now or not await redis.exists(streams.IMAGES_SWEPT):
        started = time.monotonic()
        swept = await asyncio.to_thread(
            sweep,
            storage,
            max_age_s=settings.retention.image_ttl_s,
            max_total_bytes=settings.retention.storage_max_bytes,
            keep=await images_in_use(sessionmaker),
            # An upload is stored before its job row commits; within this window the API is done.
            grace_s=settings.maintenance.reconcile_grace_s,
        )
        wait_ms = int((time.monotonic() - started) / SWEEP_SHARE * 1000)
        await redis.set(streams.IMAGES_SWEPT, "1", px=max(wait_ms, 1))
    report = MaintenanceReport(
        reenqueued=reenqueued,
        lost_frames=lost_frames,
        images_expired=len(swept.expired),
        images_evicted=len(swept.evicted),
        bytes_freed=swept.bytes_freed,
        jobs_deleted=jobs_deleted,
    )
    if any((reenqueued, lost_frames, swept.expired, swept.evicted, jobs_deleted)):
        log.info("maintenance_done", **report.__dict__)
    return report


async def maintenance_loop(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    storage: Storage,
    *,
    frames_redis: Redis | None = None,
) -> None:
    """Run a pass every interval_s in whichever process holds the lock; never raises.

    The lock lives a little less than one interval, so the holder can take it again next time
    and a dead holder is replaced within one interval.
    """
    owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    interval_s = settings.maintenance.interval_s
    while True:
        try:
            if await streams.try_lock(
                redis, streams.MAINTENANCE_LOCK, owner=owner, ttl_s=interval_s * 0.9
            ):
                await run_maintenance(
                    settings, sessionmaker, redis, storage, frames_redis=frames_redis
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage: try again next interval
            log.warning("maintenance_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
