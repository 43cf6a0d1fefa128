"""The consumer loop: XAUTOCLAIM stale entries, XREADGROUP new ones, process, write, publish, ack.

Delivery is at-least-once; effects are exactly-once because the result write locks the job row
and skips a job that is already finished. The message is acked only after the database write
and the event publish both succeeded. A failure in Postgres or Redis leaves the message pending:
after `job_timeout_s` any consumer reclaims it, and after `max_deliveries` it is dead-lettered.
"""

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.jobs.service import job_detail
from app.models import Detection, Job, JobStatus
from app.settings import Settings
from app.storage import Storage
from workers.detectors.base import Detector
from workers.pipeline import BadImage, PipelineResult, run_pipeline

log = structlog.get_logger()

# In burst mode, how long the stream must stay empty before the consumer stops.
BURST_IDLE_MS = 200
# Backoff while Redis is unreachable.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class Entry:
    entry_id: streams.StreamId
    fields: streams.Fields | None  # None: the entry was trimmed away while pending
    deliveries: int


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
        """Process messages until `stop` is set (or, in burst mode, the stream is idle).

        Returns the number of messages handled. The message in hand is always finished first.
        """
        stop = stop or asyncio.Event()
        await streams.ensure_group(self.redis)
        handled = 0
        backoff_s = RETRY_MIN_S
        while not stop.is_set():
            block_ms = BURST_IDLE_MS if burst else self.settings.worker.block_ms
            try:
                entries = await self.next_entries(block_ms=block_ms)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # Redis is down or restarting: wait and retry, never die.
                log.warning("redis_unavailable", error=repr(exc), retry_in_s=backoff_s)
                await _sleep_unless_stopped(stop, backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
                continue
            backoff_s = RETRY_MIN_S
            if not entries and burst:
                break
            for entry in entries:
                await self.handle(entry)
                handled += 1
        return handled

    async def next_entries(self, *, block_ms: int) -> list[Entry]:
        """Stale entries of dead consumers first, then new ones."""
        try:
            return await self._next_entries(block_ms=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (Redis was wiped): recreate; the reconciler
            # re-enqueues jobs that Postgres still has as queued or running.
            await streams.ensure_group(self.redis)
            return []

    async def _next_entries(self, *, block_ms: int) -> list[Entry]:
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
        return [Entry(entry_id, fields, 1) for entry_id, fields in new]

    async def handle(self, entry: Entry) -> None:
        """Process one entry. Never raises: a bad job fails, an I/O error leaves it pending."""
        if entry.fields is None:
            await streams.ack(self.redis, entry.entry_id)
            return
        try:
            message = streams.JobMessage.from_fields(entry.fields)
        except streams.ProtocolError as exc:
            log.warning("job_message_invalid", entry_id=entry.entry_id.decode(), error=str(exc))
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields, str(exc))
            return
        structlog.contextvars.bind_contextvars(job_id=str(message.job_id))
        try:
            await self._handle(entry, message)
        except Exception as exc:  # Postgres or Redis trouble: leave pending for a retry
            log.exception("job_retry_later", error=repr(exc), deliveries=entry.deliveries)
        finally:
            structlog.contextvars.unbind_contextvars("job_id")

    async def _handle(self, entry: Entry, message: streams.JobMessage) -> None:
        max_deliveries = self.settings.worker.max_deliveries
        if entry.deliveries > max_deliveries:
            reason = (
                f"gave up after {max_deliveries} deliveries (the job kept failing or timing out)"
            )
            await self._fail(message.job_id, reason)
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields or {}, reason)
            log.warning("job_dead_lettered", deliveries=entry.deliveries)
            return

        # An inline image (a node frame that must not be stored) leaves Redis with the ack.
        inline = message.image is not None
        if not await self._start(message.job_id):
            # Deleted, or already finished by an earlier delivery: nothing left to do.
            await streams.ack(self.redis, entry.entry_id, delete=inline)
            log.info("job_skipped")
            return

        try:
            data = message.image if message.image is not None else self._load(message)
            result = await asyncio.to_thread(
                run_pipeline,
                data,
                message.tasks,
                self.detectors,
                max_pixels=self.settings.api.max_image_pixels,
            )
        except BadImage as exc:
            await self._fail(message.job_id, str(exc))
        except Exception as exc:  # a detector crashed on this input: retrying will not help
            log.exception("job_pipeline_error")
            await self._fail(message.job_id, f"processing error: {exc!r}")
        else:
            await self._finish(message, result)
        await streams.ack(self.redis, entry.entry_id, delete=inline)

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

    async def _finish(self, message: streams.JobMessage, result: PipelineResult) -> None:
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
            # Keyed by job id: a redelivery replaces rows rather than adding a second set.
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
            job.status = JobStatus.done
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


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
