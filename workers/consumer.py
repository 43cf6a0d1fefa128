"""The consumer loop: XAUTOCLAIM stale entries, XREADGROUP new ones, process, write, publish, ack.

Delivery is at-least-once; effects are exactly-once because the result write locks the job row
and skips a job that is already finished. The message is acked only after the database write
and the event publish both succeeded. A failure in Postgres or Redis leaves the message pending:
after `job_timeout_s` any consumer reclaims it, and after `max_deliveries` it is dead-lettered.

Outages do not kill the loop: while Postgres or Redis is unreachable the consumer logs, backs
off and tries again; when Redis comes back without its data (no consumer group), it recreates
the group and the reconciler re-enqueues what was lost. A heartbeat task marks the worker alive
in Redis (`lookout:workers`) every `heartbeat_interval_s`.
"""

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.errors import is_outage
from app.jobs.service import event_snapshot, job_detail, owner_field
from app.models import Detection, Job, JobStatus
from app.settings import Settings
from app.storage import Storage
from workers.detectors.base import Detector
from workers.metrics import WorkerMetrics
from workers.pipeline import BadImage, PipelineResult, run_pipeline

log = structlog.get_logger()

# In burst mode, how long the stream must stay empty before the consumer stops.
BURST_IDLE_MS = 200


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
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.detectors = detectors
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.storage = storage
        self.name = name or consumer_name()
        self.metrics = metrics or WorkerMetrics()

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        """Process messages until `stop` is set (or, in burst mode, the stream is idle).

        Returns the number of messages handled. The message in hand is always finished first.
        """
        stop = stop or asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        handled = 0
        group_ready = False
        try:
            while not stop.is_set():
                block_ms = BURST_IDLE_MS if burst else self.settings.worker.block_ms
                try:
                    if not group_ready:
                        await streams.ensure_group(self.redis)
                        group_ready = True
                    entries = await self.next_entries(block_ms=block_ms)
                except ResponseError as exc:
                    if not streams.is_missing_group(exc):
                        raise
                    log.warning("consumer_group_missing")  # Redis lost its data: recreate
                    group_ready = False
                    continue
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    log.warning("redis_unavailable", error=repr(exc))
                    await _sleep_unless(stop, self.settings.worker.retry_backoff_s)
                    continue
                if not entries and burst:
                    break
                if entries:
                    self.metrics.batch_size.observe(len(entries))
                for entry in entries:
                    while not await self.handle(entry):
                        if not await self._wait_for_dependencies(stop):
                            return handled  # stopping: the entry stays pending for others
                    handled += 1
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            try:
                await streams.forget_worker(self.redis, self.name)
            except Exception as exc:
                log.warning("heartbeat_forget_failed", error=repr(exc))
        return handled

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Beat every interval while running; runs beside inference (which is in a thread)."""
        worker = self.settings.worker
        while not stop.is_set():
            try:
                await streams.beat(self.redis, self.name, ttl_s=worker.heartbeat_ttl_s)
            except Exception as exc:  # Redis away: /health/ready reports it anyway
                log.warning("heartbeat_failed", error=repr(exc))
            await _sleep_unless(stop, worker.heartbeat_interval_s)

    async def next_entries(self, *, block_ms: int) -> list[Entry]:
        """Stale entries of dead consumers first, then new ones."""
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

    async def handle(self, entry: Entry) -> bool:
        """Process one entry. Never raises: a bad job fails, an I/O error leaves it pending.

        False: Postgres or Redis was unreachable and the entry is still pending. The caller
        waits for them and hands the same entry in again, in process: no redelivery, so an
        outage does not use up the job's max_deliveries.
        """
        if entry.fields is None:  # trimmed by MAXLEN; the reconciler re-enqueues its job
            return await self._safely(streams.ack(self.redis, entry.entry_id))
        try:
            message = streams.JobMessage.from_fields(entry.fields)
        except streams.ProtocolError as exc:
            log.warning("job_message_invalid", entry_id=entry.entry_id.decode(), error=str(exc))
            self.metrics.jobs.labels("invalid").inc()
            return await self._safely(
                streams.dead_letter(self.redis, entry.entry_id, entry.fields, str(exc))
            )
        structlog.contextvars.bind_contextvars(job_id=str(message.job_id))
        try:
            await self._handle(entry, message)
        except Exception as exc:
            self.metrics.jobs.labels("retry").inc()
            if is_outage(exc):
                log.warning("job_waits_for_dependencies", error=repr(exc))
                return False
            # A bug, not an outage: leave it pending; redeliveries end in the dead letters.
            log.exception("job_retry_later", error=repr(exc), deliveries=entry.deliveries)
        finally:
            structlog.contextvars.unbind_contextvars("job_id")
        return True

    async def _wait_for_dependencies(self, stop: asyncio.Event) -> bool:
        """Block until Postgres and Redis both answer (True) or `stop` is set (False)."""
        while not stop.is_set():
            await _sleep_unless(stop, self.settings.worker.retry_backoff_s)
            try:
                async with self.sessionmaker() as session:
                    await session.execute(text("SELECT 1"))
                await self.redis.ping()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                continue
            log.info("dependencies_back")
            return True
        return False

    async def _handle(self, entry: Entry, message: streams.JobMessage) -> None:
        max_deliveries = self.settings.worker.max_deliveries
        if entry.deliveries > max_deliveries:
            reason = (
                f"gave up after {max_deliveries} deliveries (the job kept failing or timing out)"
            )
            await self._fail(message.job_id, reason)
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields or {}, reason)
            log.warning("job_dead_lettered", deliveries=entry.deliveries)
            self.metrics.jobs.labels("dead_letter").inc()
            return

        if not await self._start(message.job_id):
            # Deleted, or already finished by an earlier delivery: nothing left to do, except
            # the events, if the earlier delivery died between its commit and its publish.
            await self._republish_if_missing(message.job_id)
            await streams.ack(self.redis, entry.entry_id, message.job_id)
            log.info("job_skipped")
            self.metrics.jobs.labels("skipped").inc()
            return

        timeout_s = self.settings.worker.job_timeout_s
        try:
            data = message.image if message.image is not None else self._load(message)
            # The thread cannot be interrupted: on timeout it finishes in the background and
            # its result is dropped; the job fails now rather than holding the queue.
            result = await asyncio.wait_for(
                asyncio.to_thread(
                    run_pipeline,
                    data,
                    message.tasks,
                    self.detectors,
                    max_pixels=self.settings.api.max_image_pixels,
                ),
                timeout=timeout_s,
            )
        except BadImage as exc:
            await self._fail(message.job_id, str(exc))
        except TimeoutError:
            log.warning("job_timed_out", timeout_s=timeout_s)
            await self._fail(message.job_id, f"processing took longer than {timeout_s} s")
        except Exception as exc:  # a detector crashed on this input: retrying will not help
            log.exception("job_pipeline_error")
            await self._fail(message.job_id, f"processing error: {exc!r}")
        else:
            for model, ms in result.model_ms.items():
                self.metrics.inference_ms.labels(model).observe(ms)
            await self._finish(message, result)
        await streams.ack(self.redis, entry.entry_id, message.job_id)

    async def _republish_if_missing(self, job_id: uuid.UUID) -> None:
        if await streams.has_terminal_event(self.redis, job_id):
            return
        async with self.sessionmaker() as session:
            job = await session.get(Job, job_id)
            if job is None or not job.status.finished:
                return
            rows = await session.scalars(
                select(Detection).where(Detection.job_id == job_id).order_by(Detection.id)
            )
            detail = job_detail(job, list(rows))
        await self._publish(*event_snapshot(detail, job.owner_id))
        log.info("job_events_republished")

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
                log.info("job_already_finished_or_deleted")
                if job is None and processed_key is not None:
                    self.storage.delete(processed_key)  # deleted while we worked: leave nothing
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
            owner = owner_field(job.owner_id)
        await self._publish(
            streams.make_event(
                "result", job_id, owner_id=owner, job=detail.model_dump(mode="json")
            ),
            streams.make_event("status", job_id, status="done"),
        )
        self.metrics.jobs.labels("done").inc()
        log.info(
            "job_done",
            detections=len(rows),
            decode_ms=result.decode_ms,
            inference_ms=result.inference_ms,
        )

    async def _fail(self, job_id: uuid.UUID, reason: str) -> None:
        async with self.sessionmaker.begin() as session:
            failed_owner = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
                .values(status=JobStatus.failed, error=reason, finished_at=datetime.now(UTC))
                .returning(Job.owner_id)
            )
            failed = failed_owner.first()
        if failed is None:
            return
        await self._publish(
            streams.make_event("error", job_id, owner_id=owner_field(failed[0]), error=reason),
            streams.make_event("status", job_id, status="failed"),
        )
        self.metrics.jobs.labels("failed").inc()
        log.info("job_failed", reason=reason)

    async def _publish(self, *events: dict[str, Any]) -> None:
        """All of a step's events in one MULTI; result/error events also go to the firehose."""
        await streams.publish_job_events(
            self.redis,
            events,
            ttl_s=self.settings.streams.job_events_ttl_s,
            firehose_maxlen=self.settings.streams.firehose_maxlen,
        )

    async def _safely(self, step: Coroutine[Any, Any, None]) -> bool:
        """Run a Redis step; False if Redis was unreachable (the entry stays pending)."""
        try:
            await step
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("redis_unavailable", error=repr(exc))
            return False
        return True


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
