"""Job logic of the API: create, enqueue, read, list, delete. No FastAPI here; callers own the
commit. Recording outcomes is app/jobs/results.py; the shape of events is app/jobs/events.py."""

import asyncio
import contextlib
import enum
import json
import time
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

import asyncpg
import structlog
from redis.asyncio import Redis
from sqlalchemy import Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import streams
from app.apikeys.service import Principal
from app.commits import after_commit
from app.db import driver_connection, driver_statement, held_rows
from app.drawing import processed_jpeg
from app.errors import Conflict, InvalidInput, NotFound
from app.events_out import service as webhook_deliveries
from app.images import ImageInfo
from app.jobs.schemas import (
    DetectionOut,
    ImageOut,
    JobDetail,
    JobLinks,
    JobPage,
    JobSource,
    JobSummary,
    Timings,
)
from app.jobs.tasks import DEFAULT_TASKS, FACE_SOURCES, TASKS
from app.models import JOB_UNFINISHED, Detection, Job, JobPurpose, JobStatus, Node
from app.pagination import decode_cursor, encode_cursor
from app.pixels import BadImage
from app.settings import Settings
from app.storage import Storage

log = structlog.get_logger()

# The name of the job's node, as a column of a query on Job: the list and the worker's locking
# query get it without a second round trip (a scalar subquery, so FOR UPDATE locks only jobs).
JOB_NODE_NAME = select(Node.name).where(Node.id == Job.node_id).correlate(Job).scalar_subquery()


def parse_tasks(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_TASKS
    tasks = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InvalidInput(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if "identify" in tasks and not set(FACE_SOURCES) & set(tasks):
        tasks = ("faces", *tasks)
    return tasks


# Up to this size an upload is written to the image store on the event loop (a page-cache
# write of well under a millisecond), beyond it in a thread.
INLINE_WRITE_MAX_BYTES = 256 * 1024


# The jobs table, for Core statements on the hot path (here and app/jobs/results.py).
JOBS_TABLE = cast(Table, Job.__table__)
_INSERT_JOB = insert(JOBS_TABLE).returning(JOBS_TABLE.c.created_at)
# The same INSERT for the driver itself (the upload's, app/db.py driver_connection).
_DRIVER_INSERT_JOB = driver_statement(
    _INSERT_JOB, column_keys=[column.name for column in JOBS_TABLE.c if column.name != "created_at"]
)
_DRIVER_DELETE_JOB = driver_statement(
    delete(JOBS_TABLE).where(JOBS_TABLE.c.id == bindparam("job_id"))
)


async def _new_job_values(
    storage: Storage,
    *,
    image: bytes,
    info: ImageInfo,
    tasks: tuple[str, ...],
    owner_id: uuid.UUID | None,
    node_id: uuid.UUID | None,
    purpose: JobPurpose,
    store_image: bool,
) -> dict[str, Any]:
    """A new job's id and image, stored unless store_image is False, and every column of its
    row but created_at (Postgres sets it). The image goes first: a committed job row never
    points at a missing image. A large one in a thread: a 20 MB write would otherwise stall every
    other request on this event loop; a small one here, where it costs less than the hand-off."""
    job_id = uuid.uuid4()
    image_key = f"{job_id}.{info.extension}" if store_image else None
    if image_key is not None:
        if len(image) <= INLINE_WRITE_MAX_BYTES:
            storage.create(image_key, image)
        else:
            await asyncio.to_thread(storage.create, image_key, image)
    width, height = info.upright_size  # detections refer to the upright image
    return {
        "id": job_id,
        "owner_id": owner_id,
        "status": JobStatus.queued,
        "purpose": purpose,
        "tasks": list(tasks),
        "image_key": image_key,
        "processed_image_key": None,
        "content_type": info.content_type,
        "width": width,
        "height": height,
        "counts": {},
        "error": None,
        "attempts": 0,
        "decode_ms": None,
        "inference_ms": None,
        "started_at": None,
        "finished_at": None,
        "node_id": node_id,
    }


async def create_job(
    session: AsyncSession,
    storage: Storage,
    *,
    image: bytes,
    info: ImageInfo,
    tasks: tuple[str, ...],
    owner_id: uuid.UUID | None,
    node_id: uuid.UUID | None = None,
    store_image: bool = True,
    purpose: JobPurpose = JobPurpose.detect,
) -> Job:
    """Store the image (unless store_image is False), then insert the job row in the session
    (committed with it). An upload on its own is `submit_upload`.

    owner_id: the API key that creates it (None while auth is off, and for node frames); only
    it, and admin keys, can see the job afterwards. A job whose image is not stored has
    image_key None: its bytes go to the frames Redis with its message (enqueue_job's `frame`)
    and never reach disk or Postgres. purpose: which call made it (app.models.JobPurpose).
    """
    values = await _new_job_values(
        storage,
        image=image,
        info=info,
        tasks=tasks,
        owner_id=owner_id,
        node_id=node_id,
        purpose=purpose,
        store_image=store_image,
    )
    # A Core INSERT built once, the row made into a Job that the session does not track: the
    # ORM's insert (its bulk-persistence bookkeeping for one row) cost 0.62 ms of the API's CPU
    # per upload against 0.42. Callers only read the job.
    created_at = (await session.execute(_INSERT_JOB, values)).scalar_one()
    return Job(**values, created_at=created_at)


async def submit_upload(
    engine: AsyncEngine,
    redis: Redis,
    storage: Storage,
    settings: Settings,
    *,
    image: bytes,
    info: ImageInfo,
    tasks: tuple[str, ...],
    owner_id: uuid.UUID | None,
) -> Job:
    """An upload's job, end to end: its image stored, its row inserted (committed as it runs:
    one statement), its message queued. If the queue refuses, the job is withdrawn (row and
    image) and the error raised: the client is told it failed, so the reconciler must not run
    it later. The hottest path of the API: the row goes through the driver itself (app/db.py
    driver_connection), without a session or a transaction.
    """
    values = await _new_job_values(
        storage,
        image=image,
        info=info,
        tasks=tasks,
        owner_id=owner_id,
        node_id=None,
        purpose=JobPurpose.detect,
        store_image=True,
    )
    try:
        async with driver_connection(engine) as connection:
            created_at = await connection.fetchval(
                _DRIVER_INSERT_JOB.sql, *map(_driver_value, _DRIVER_INSERT_JOB.arguments(values))
            )
    except asyncpg.PostgresError:
        storage.delete(values["image_key"])  # refused: there is no row (else the sweep's)
        raise
    job = Job(**values, created_at=created_at)
    try:
        await enqueue(redis, job, settings)
    except Exception:
        try:
            async with driver_connection(engine) as connection:
                await connection.execute(
                    _DRIVER_DELETE_JOB.sql, *_DRIVER_DELETE_JOB.arguments({"job_id": job.id})
                )
            storage.delete(values["image_key"])
        except Exception as exc:
            log.warning("job_withdraw_failed", job_id=str(job.id), error=repr(exc))
        raise
    return job


def _driver_value(value: object) -> object:
    """A job column's value as asyncpg takes it (the column types of app/models.py Job)."""
    if isinstance(value, enum.Enum):
        return value.value  # the status and purpose columns are VARCHARs of the enum's value
    if isinstance(value, dict):
        return json.dumps(value)  # JSONB, as text
    return value


async def enqueue_job(
    redis: Redis,
    job: Job,
    *,
    jobs_maxlen: int,
    frame: bytes | None = None,
    frame_ttl_ms: int | None = None,
    frames_redis: Redis | None = None,
) -> None:
    """Hand the job to the workers (its `queued` event is its row: see enqueue_job).

    Call only after the job row is committed: a worker that gets the message must find it.
    A job without a stored image needs its bytes as `frame`: they are kept for frame_ttl_ms in
    `frames_redis` (None: the main Redis), and the message names them.
    """
    if (job.image_key is None) == (frame is None):
        raise ValueError("a job has exactly one of a stored image or frame bytes")
    message = streams.JobMessage.for_job(job.id, tuple(job.tasks), job.image_key)
    await streams.enqueue_job(
        redis,
        message,
        maxlen=jobs_maxlen,
        frame=frame,
        frame_ttl_ms=frame_ttl_ms,
        frames_redis=frames_redis,
    )


async def enqueue(
    redis: Redis,
    job: Job,
    settings: Settings,
    *,
    frame: bytes | None = None,
    frames_redis: Redis | None = None,
) -> None:
    """enqueue_job with the limits from settings: the one place API code hands a job over."""
    await enqueue_job(
        redis,
        job,
        jobs_maxlen=settings.streams.jobs_maxlen,
        frame=frame,
        frame_ttl_ms=streams.frame_ttl_ms(
            job_timeout_s=settings.worker.job_timeout_s,
            max_deliveries=settings.worker.max_deliveries,
        )
        if frame is not None
        else None,
        frames_redis=frames_redis,
    )


def enqueue_after_commit(session: AsyncSession, redis: Redis, job: Job, settings: Settings) -> None:
    """Hand the job to the workers once the session has committed its row (app/commits.py)."""
    after_commit(session, lambda: enqueue(redis, job, settings))


async def get_job(session: AsyncSession, job_id: uuid.UUID, viewer: Principal) -> Job:
    """The job if `viewer` may see it. Another owner's job is NotFound, exactly like a job that
    does not exist, so ids cannot be probed."""
    # populate_existing: a job committed earlier in this session may have changed since.
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None or not (viewer.sees_every_job or job.owner_id == viewer.owner_id):
        raise NotFound(f"no job with id {job_id}")
    return job


async def job_exists(sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> bool:
    async with sessionmaker() as session:
        return await session.scalar(select(Job.id).where(Job.id == job_id)) is not None


async def get_job_detail(session: AsyncSession, job_id: uuid.UUID, viewer: Principal) -> JobDetail:
    job = await get_job(session, job_id, viewer)
    rows = await session.scalars(
        select(Detection).where(Detection.job_id == job_id).order_by(Detection.id)
    )
    return job_detail(job, list(rows), node_name=await node_name(session, job))


async def node_name(session: AsyncSession, job: Job) -> str | None:
    """The name of the node that sent the job's frame; None for uploads."""
    if job.node_id is None:
        return None
    return await session.scalar(select(Node.name).where(Node.id == job.node_id))


async def wait_for_job(redis: Redis, job_id: uuid.UUID, *, timeout_s: float) -> bool:
    """Block until the job's final status event or the timeout; True if it finished."""
    deadline = time.monotonic() + timeout_s
    after = b"0"
    while (remaining_ms := int((deadline - time.monotonic()) * 1000)) > 0:
        for entry_id, event in await streams.read_job_events(
            redis, job_id, after=after, block_ms=remaining_ms
        ):
            after = entry_id
            if streams.is_terminal(event):
                return True
    return False


async def list_jobs(
    session: AsyncSession,
    viewer: Principal,
    *,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
    task: str | None = None,
    source: JobSource | None = None,
    node_id: uuid.UUID | None = None,
) -> JobPage:
    """The viewer's jobs, newest first; keyset pagination on (created_at, id) so pages never
    skip or repeat. Filters combine: `task` keeps jobs that asked for it, `source` uploads or
    node frames, `node_id` one node's frames (revoked nodes' included)."""
    if task is not None and task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    query = (
        select(Job, JOB_NODE_NAME).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    )
    if not viewer.sees_every_job:
        query = query.where(Job.owner_id == viewer.owner_id)
    if status is not None:
        query = query.where(Job.status == status)
        if not status.finished:  # the backlog: found through its partial index, not among all
            query = query.where(JOB_UNFINISHED)
    if task is not None:
        query = query.where(Job.tasks.contains([task]))
    if source is JobSource.upload:
        query = query.where(Job.node_id.is_(None))
    elif source is JobSource.node:
        query = query.where(Job.node_id.is_not(None))
    if node_id is not None:
        query = query.where(Job.node_id == node_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(created_at, last_id))
    rows = (await session.execute(query)).all()
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return JobPage(
        items=[job_summary(job, node_name=name) for job, name in rows[:limit]],
        next_cursor=next_cursor,
    )


async def existing_jobs(session: AsyncSession, job_ids: Collection[str]) -> set[str]:
    """Which of these jobs (ids as text) still exist, held against their deletion until the
    caller commits: delete_job then waits for the caller, and deletes the webhook deliveries
    it wrote about them (forget_job)."""
    return await held_rows(session, "jobs", job_ids)


async def delete_job(
    session: AsyncSession, storage: Storage, job_id: uuid.UUID, viewer: Principal
) -> None:
    """Delete the job row (its detections cascade) and its stored images (the upload and the
    processed image, if it was ever drawn)."""
    await get_job(session, job_id, viewer)
    # The keys as the DELETE finds them: it waits for a processed image being drawn right now
    # (get_processed_image holds the row until its key is committed) and returns its key too.
    deleted = await session.execute(
        delete(Job).where(Job.id == job_id).returning(Job.image_key, Job.processed_image_key)
    )
    await webhook_deliveries.forget_job(session, job_id)
    await session.flush()
    for keys in deleted:
        for key in keys:
            if key is not None:
                storage.delete(key)


def processed_image_key(job_id: uuid.UUID) -> str:
    return f"{job_id}.processed.jpg"


async def get_processed_image(
    session: AsyncSession,
    storage: Storage,
    job_id: uuid.UUID,
    viewer: Principal,
    *,
    max_pixels: int,
    target_side_px: int,
) -> bytes:
    """The job's picture with its detections drawn (JPEG), upright, at the size the workers
    decode it (large JPEGs reduced, app/pixels.py).

    Drawn the first time someone asks, from the stored image and the stored detections, then
    cached in storage under the job (its key on the row, deleted with the job): workers spend
    no time on pictures nobody looks at. A job without a stored image (a node frame that was
    not kept, or an upload past its TTL) or that failed has none: NotFound.
    """
    job = await get_job(session, job_id, viewer)
    if not job.status.finished:
        raise Conflict(f"job {job_id} is {job.status}; the processed image exists once it is done")
    if job.status != JobStatus.done:
        raise NotFound(f"job {job_id} failed; it has no processed image")
    if job.image_key is None:
        raise NotFound(f"job {job_id} has no processed image (its node frame was not stored)")
    if job.processed_image_key is not None:
        try:
            return await asyncio.to_thread(storage.get, job.processed_image_key)
        except FileNotFoundError:
            pass  # swept with the images past their TTL: drawn again while the upload is left
    # The row (FOR NO KEY UPDATE: foreign-key checks are not held up) and then the detections
    # (FOR SHARE) are locked until the key is committed. A change of names (a person deleted, a
    # face moved: app/gallery/people.py _forget_drawings) that updated the detections first is
    # drawn here once committed; one that comes after waits for this drawing, then deletes it.
    # A DELETE of the job (its row, then its detections: the same order) makes this wait, then
    # find no row.
    locked = await session.execute(
        select(Job.processed_image_key).where(Job.id == job.id).with_for_update(key_share=True)
    )
    row = locked.first()
    if row is None:
        raise NotFound(f"no job with id {job_id}")
    if row.processed_image_key is not None:  # drawn by another request while this one waited
        with contextlib.suppress(FileNotFoundError):
            return await asyncio.to_thread(storage.get, row.processed_image_key)
    try:
        original = await asyncio.to_thread(storage.get, job.image_key)
    except FileNotFoundError:
        raise NotFound(
            f"job {job_id} has no processed image (its stored image has expired)"
        ) from None
    rows = await session.scalars(
        select(Detection)
        .where(Detection.job_id == job.id)
        .order_by(Detection.id)
        .with_for_update(read=True)
    )
    detections = list(rows)
    try:
        # In a thread: decode and draw are CPU work, and this process serves other requests.
        jpeg = await asyncio.to_thread(
            processed_jpeg,
            original,
            detections,
            max_pixels=max_pixels,
            target_side_px=target_side_px,
        )
    except BadImage as exc:  # a worker decoded it, so only a changed limit can get here
        raise NotFound(f"job {job_id} has no processed image: {exc}") from None
    key = processed_image_key(job.id)
    await asyncio.to_thread(storage.put, key, jpeg)
    await session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(processed_image_key=key)
        .execution_options(synchronize_session=False)
    )
    job.processed_image_key = key
    return jpeg


def job_links(job: Job) -> JobLinks:
    """The job's links; the image links are null where there is no picture to show (a node
    frame that was not stored; the processed image of a failed job)."""
    base = f"/v1/jobs/{job.id}"
    stored = job.image_key is not None
    return JobLinks(
        self=base,
        events=f"{base}/events",
        image=f"{base}/image" if stored else None,
        processed_image=f"{base}/processed-image"
        if stored and job.status != JobStatus.failed
        else None,
    )


def job_summary(job: Job, *, node_name: str | None = None) -> JobSummary:
    """node_name: the name of job.node_id's node (node_name() or JOB_NODE_NAME); None for
    uploads."""
    return JobSummary(
        id=job.id,
        status=job.status,
        purpose=job.purpose,
        tasks=list(job.tasks),
        image=ImageOut(width=job.width, height=job.height, content_type=job.content_type),
        counts=dict(job.counts),
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        timings=Timings(
            queue_ms=_ms_between(job.created_at, job.started_at),
            decode_ms=job.decode_ms,
            inference_ms=job.inference_ms,
            total_ms=_ms_between(job.created_at, job.finished_at),
        ),
        links=job_links(job),
        node_id=job.node_id,
        node_name=node_name,
    )


def full_text(detections: list[Detection]) -> str:
    """The strings of the `text` detections (stored in reading order): a line's regions joined
    by spaces, lines by newlines."""
    lines: dict[int, list[str]] = {}
    for detection in detections:
        if detection.kind == "text":
            line = int(detection.attributes.get("line", 0))
            lines.setdefault(line, []).append(str(detection.attributes.get("text", "")))
    return "\n".join(" ".join(lines[n]) for n in sorted(lines))


def job_detail(job: Job, detections: list[Detection], *, node_name: str | None = None) -> JobDetail:
    return JobDetail(
        **job_summary(job, node_name=node_name).model_dump(),
        text=full_text(detections)
        if "text" in job.tasks and job.status == JobStatus.done
        else None,
        detections=[
            DetectionOut(
                id=d.id,
                kind=d.kind,
                label=d.label,
                score=d.score,
                box=list(d.box),
                landmarks=d.landmarks,
                attributes=dict(d.attributes),
            )
            for d in detections
        ],
    )


def _ms_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)
