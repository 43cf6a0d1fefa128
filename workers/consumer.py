"""The consumer loop: take a batch, decode it, run it, write, publish, ack — one batch ahead.

Batches: up to `batch_size` entries (stale entries of dead consumers first, then new ones; after
the first new entry it waits up to `batch_wait_ms` to fill the batch). While a batch is in
inference (a worker thread), the entries already waiting are taken and decoded (another thread),
so the next batch is ready when this one ends. Every task's detector runs once per batch: all
faces of the batch are embedded in one call.

Delivery is at-least-once; effects are exactly-once because the result write locks the job row
and skips a job that is already finished. Each entry is acked only after its own database write
and event publish both succeeded. A failure in Postgres or Redis leaves the entry pending: after
`job_timeout_s` any consumer reclaims it, and after `max_deliveries` it is dead-lettered. A bad
job (undecodable image, a detector crash on it) fails alone; the worker never dies of it.
"""

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.jobs.service import job_detail
from app.models import Detection, FaceEmbedding, Job, JobStatus
from app.settings import Settings
from app.storage import Storage
from workers.detectors.base import Detector
from workers.pipeline import BadImage, DecodedImage, PipelineResult, decode_image, run_batch

log = structlog.get_logger()

# In burst mode, how long the stream must stay empty before the consumer stops.
BURST_IDLE_MS = 200
# After a Redis error while waiting for work, pause this long before trying again.
REDIS_RETRY_S = 1.0


@dataclass(frozen=True)
class Entry:
    entry_id: streams.StreamId
    fields: streams.Fields | None  # None: the entry was trimmed away while pending
    deliveries: int


@dataclass(frozen=True)
class Work:
    """A started job whose image is decoded: ready for inference."""

    entry: Entry
    message: streams.JobMessage
    image: DecodedImage


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Consumer:
    def __init__(
        self,
        settings: Settings,
        detectors: dict[str, Detector],
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        storage: Storage,
        *,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.detectors = detectors
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.storage = storage
        self.name = name or consumer_name()

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        """Process batches until `stop` is set (or, in burst mode, the stream is idle).

        Returns the number of entries taken. Work in hand (the batch in inference and the one
        decoded ahead) is always finished first.
        """
        stop = stop or asyncio.Event()
        await streams.ensure_group(self.redis)
        taken = 0
        ready: list[Work] = []
        while True:
            if not ready:
                if stop.is_set():
                    break
                block_ms = BURST_IDLE_MS if burst else self.settings.worker.block_ms
                try:
                    entries = await self.next_entries(block_ms=block_ms)
                except RedisError as exc:
                    log.warning("redis_unavailable", error=repr(exc))
                    await asyncio.sleep(REDIS_RETRY_S)
                    continue
                if not entries:
                    if burst:
                        break
                    continue
                taken += len(entries)
                ready = await self.prepare(entries)
                if not ready:
                    continue
            current, ready = ready, []
            inference = asyncio.create_task(self.infer(current))
            try:
                if not stop.is_set():
                    # Decode what is already waiting while this batch is in inference.
                    entries = await self.next_entries(block_ms=None)
                    taken += len(entries)
                    ready = await self.prepare(entries)
            except RedisError as exc:
                log.warning("prefetch_failed", error=repr(exc))
            finally:
                results = await inference
            await self.complete(current, results)
        return taken

    async def next_entries(self, *, block_ms: int | None) -> list[Entry]:
        """Stale entries of dead consumers first, then new ones; block_ms=None: no waiting."""
        count = self.settings.worker.batch_size
        min_idle_ms = int(self.settings.worker.job_timeout_s * 1000)
        stale = await streams.claim_stale(
            self.redis, self.name, min_idle_ms=min_idle_ms, count=count
        )
        if stale:
            return [
                Entry(entry_id, fields, await streams.delivery_count(self.redis, entry_id))
                for entry_id, fields in stale
            ]
        new = await streams.read_new(self.redis, self.name, count=count, block_ms=block_ms)
        wait_ms = self.settings.worker.batch_wait_ms
        if block_ms is not None and new and len(new) < count and wait_ms > 0:
            deadline = asyncio.get_running_loop().time() + wait_ms / 1000
            while len(new) < count:
                remaining_ms = int((deadline - asyncio.get_running_loop().time()) * 1000)
                if remaining_ms < 1:  # BLOCK 0 would mean "forever"
                    break
                more = await streams.read_new(
                    self.redis, self.name, count=count - len(new), block_ms=remaining_ms
                )
                if not more:
                    break
                new.extend(more)
        return [Entry(entry_id, fields, 1) for entry_id, fields in new]

    async def prepare(self, entries: Sequence[Entry]) -> list[Work]:
        """Start each job and decode its image (in a thread). Never raises.

        Entries that need no inference (trimmed, malformed, given up, already finished, bad
        image) are settled here; an I/O error leaves an entry pending for a retry.
        """
        started: list[tuple[Entry, streams.JobMessage, bytes]] = []
        for entry in entries:
            try:
                ready = await self._start_entry(entry)
            except Exception as exc:  # Postgres or Redis trouble: leave pending for a retry
                log.exception("job_retry_later", error=repr(exc), deliveries=entry.deliveries)
                continue
            if ready is not None:
                started.append((entry, *ready))
        if not started:
            return []
        settings = self.settings
        decoded = await asyncio.to_thread(
            _decode_all,
            [data for _, _, data in started],
            max_pixels=settings.api.max_image_pixels,
            target_side_px=settings.decode.target_side_px,
        )
        work = []
        for (entry, message, _), image in zip(started, decoded, strict=True):
            if isinstance(image, DecodedImage):
                work.append(Work(entry, message, image))
                continue
            await self._settle(entry, message, image)
        return work

    async def infer(self, batch: Sequence[Work]) -> list[PipelineResult | Exception]:
        """Results per job, in order; never raises (a failure becomes every job's outcome)."""
        try:
            return await asyncio.to_thread(
                run_batch,
                [w.image for w in batch],
                [w.message.tasks for w in batch],
                self.detectors,
            )
        except Exception as exc:  # run_batch catches detector errors; this is a last resort
            log.exception("batch_failed", size=len(batch))
            return [exc] * len(batch)

    async def complete(
        self, batch: Sequence[Work], results: Sequence[PipelineResult | Exception]
    ) -> None:
        """Write, publish and ack each job of the batch. Never raises."""
        for work, result in zip(batch, results, strict=True):
            await self._settle(work.entry, work.message, result, batch_size=len(batch))

    async def _settle(
        self,
        entry: Entry,
        message: streams.JobMessage,
        outcome: PipelineResult | Exception,
        *,
        batch_size: int = 1,
    ) -> None:
        """Record a job's result or failure, then ack. An I/O error leaves it pending."""
        with structlog.contextvars.bound_contextvars(job_id=str(message.job_id)):
            try:
                if isinstance(outcome, PipelineResult):
                    await self._finish(message, outcome, batch_size=batch_size)
                elif isinstance(outcome, BadImage):
                    await self._fail(message.job_id, str(outcome))
                else:
                    # A detector crashed on this input: retrying will not help.
                    log.error("job_pipeline_error", error=repr(outcome))
                    await self._fail(message.job_id, f"processing error: {outcome!r}")
                await streams.ack(self.redis, entry.entry_id)
            except Exception as exc:  # Postgres or Redis trouble: leave pending for a retry
                log.exception("job_retry_later", error=repr(exc), deliveries=entry.deliveries)

    async def _start_entry(self, entry: Entry) -> tuple[streams.JobMessage, bytes] | None:
        """The message and image bytes of an entry to run, or None when it is settled."""
        if entry.fields is None:
            await streams.ack(self.redis, entry.entry_id)
            return None
        try:
            message = streams.JobMessage.from_fields(entry.fields)
        except streams.ProtocolError as exc:
            log.warning("job_message_invalid", entry_id=entry.entry_id.decode(), error=str(exc))
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields, str(exc))
            return None
        with structlog.contextvars.bound_contextvars(job_id=str(message.job_id)):
            return await self._start_message(entry, message)

    async def _start_message(
        self, entry: Entry, message: streams.JobMessage
    ) -> tuple[streams.JobMessage, bytes] | None:
        assert entry.fields is not None
        max_deliveries = self.settings.worker.max_deliveries
        if entry.deliveries > max_deliveries:
            reason = (
                f"gave up after {max_deliveries} deliveries (the job kept failing or timing out)"
            )
            await self._fail(message.job_id, reason)
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields, reason)
            log.warning("job_dead_lettered", deliveries=entry.deliveries)
            return None
        if not await self._start(message.job_id):
            # Deleted, or already finished by an earlier delivery: nothing left to do.
            await streams.ack(self.redis, entry.entry_id)
            log.info("job_skipped")
            return None
        try:
            data = message.image if message.image is not None else self._load(message)
        except BadImage as exc:
            await self._fail(message.job_id, str(exc))
            await streams.ack(self.redis, entry.entry_id)
            return None
        return message, data

    def _load(self, message: streams.JobMessage) -> bytes:
        assert message.image_key is not None
        try:
            return self.storage.get(message.image_key)
        except FileNotFoundError as exc:
            raise BadImage(f"the stored image {message.image_key} is gone") from exc

    async def _start(self, job_id: uuid.UUID) -> bool:
        """Mark the job running; False if it no longer exists or is already finished."""
        async with self.sessionmaker.begin() as session:
            started = await session.scalar(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
                .values(
                    status=JobStatus.running,
                    attempts=Job.attempts + 1,
                    started_at=datetime.now(UTC),
                )
                .returning(Job.id)
            )
        if started is None:
            return False
        await self._publish(streams.make_event("status", job_id, status="running"))
        return True

    async def _finish(
        self, message: streams.JobMessage, result: PipelineResult, *, batch_size: int
    ) -> None:
        job_id = message.job_id
        processed_key = None
        if message.image_key is not None:  # inline frames are never written to disk
            processed_key = f"{job_id}.processed.jpg"
            self.storage.put(processed_key, result.processed_jpeg)
        async with self.sessionmaker.begin() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job is None or job.status.finished:
                log.info("job_already_finished")
                return
            # Keyed by job id: a redelivery replaces rows (embeddings cascade) rather than
            # adding a second set.
            await session.execute(delete(Detection).where(Detection.job_id == job_id))
            rows = [
                Detection(
                    job_id=job_id,
                    kind=d.kind,
                    label=d.label,
                    score=d.score,
                    box=list(d.box),
                    landmarks=[list(p) for p in d.landmarks] if d.landmarks else None,
                    attributes=d.attributes,
                )
                for d in result.detections
            ]
            session.add_all(rows)
            await session.flush()  # detection ids, for the embeddings
            embeddings = [
                FaceEmbedding(
                    detection_id=row.id,
                    job_id=job_id,
                    model=d.embedding.model,
                    dim=d.embedding.dim,
                    embedding=d.embedding.vector,
                )
                for row, d in zip(rows, result.detections, strict=True)
                if d.embedding is not None
            ]
            session.add_all(embeddings)
            job.status = JobStatus.done
            job.width, job.height = result.width, result.height  # upright, from the pixels
            job.counts = result.counts
            job.decode_ms = result.decode_ms
            job.inference_ms = result.inference_ms
            job.processed_image_key = processed_key
            job.finished_at = datetime.now(UTC)
            await session.flush()
            detail = job_detail(job, rows)
        await self._publish(
            streams.make_event("result", job_id, job=detail.model_dump(mode="json")), firehose=True
        )
        await self._publish(streams.make_event("status", job_id, status="done"))
        log.info(
            "job_done",
            detections=len(rows),
            embeddings=len(embeddings),
            batch_size=batch_size,
            decode_ms=result.decode_ms,
            inference_ms=result.inference_ms,
        )

    async def _fail(self, job_id: uuid.UUID, reason: str) -> None:
        async with self.sessionmaker.begin() as session:
            failed = await session.scalar(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
                .values(status=JobStatus.failed, error=reason, finished_at=datetime.now(UTC))
                .returning(Job.id)
            )
        if failed is None:
            return
        await self._publish(streams.make_event("error", job_id, error=reason), firehose=True)
        await self._publish(streams.make_event("status", job_id, status="failed"))
        log.info("job_failed", reason=reason)

    async def _publish(self, event: dict[str, object], *, firehose: bool = False) -> None:
        await streams.publish_job_event(
            self.redis,
            event,
            ttl_s=self.settings.streams.job_events_ttl_s,
            firehose_maxlen=self.settings.streams.firehose_maxlen if firehose else None,
        )


def _decode_all(
    blobs: Sequence[bytes], *, max_pixels: int, target_side_px: int
) -> list[DecodedImage | Exception]:
    """Decode each image; a failure is returned in its place, never raised."""
    decoded: list[DecodedImage | Exception] = []
    for data in blobs:
        try:
            decoded.append(decode_image(data, max_pixels=max_pixels, target_side_px=target_side_px))
        except Exception as exc:  # BadImage, or OpenCV choking on a hostile file
            decoded.append(exc)
    return decoded
