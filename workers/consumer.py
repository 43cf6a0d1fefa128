"""The consumer loop: take a batch, decode it, run it, write, publish, ack — one batch ahead.

Batches: up to `batch_size` entries (stale entries of dead consumers first, then new ones; a
lone new entry runs at once, a partial batch waits `batch_wait_ms` for more). While a batch is in
inference (a worker thread), the entries already waiting are taken and decoded (another thread),
so the next batch is ready when this one ends. Every task's detector runs once per batch: all
faces of the batch are embedded in one call.

Delivery is at-least-once; effects are exactly-once because the result write locks the job row
and skips a job that is already finished. Each entry is acked only after its own database write
and event publish both succeeded. While Postgres or Redis is unreachable the worker waits and
retries the entry in hand, in process: an outage does not use up its `max_deliveries`. Any other
failure leaves the entry pending: after `job_timeout_s` any consumer reclaims it, and after
`max_deliveries` it is dead-lettered. A bad job (undecodable image, a detector crash on it,
inference past `job_timeout_s`, a node frame that expired) fails alone; the worker never dies
of it.

Node frames that must not be stored are read from the frames Redis (one MGET per batch) and
deleted from it with the job's ack or dead letter, whatever the outcome.
"""

import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.cancellation import cancel_and_wait
from app.db import SCHEMA_HEAD, autocommit_session, schema_version
from app.errors import is_outage
from app.images import ImageInfo, inspect_header
from app.jobs import events as job_events
from app.jobs import results
from app.models import Job
from app.pixels import BadImage, DecodedImage, decode_image
from app.settings import Settings
from app.storage import Storage
from workers.detectors.base import Detector
from workers.gallery import IDENTIFY_TASK, identify_faces
from workers.health import Heartbeat
from workers.metrics import WorkerMetrics
from workers.pipeline import PipelineResult, run_batch

T = TypeVar("T")

log = structlog.get_logger()

# In burst mode, how long the stream must stay empty before the consumer stops.
BURST_IDLE_MS = 200
# Entries of dead consumers are looked for at most this often (and at least every
# job_timeout_s), unless the last look found some.
STALE_CLAIM_INTERVAL_S = 1.0
# A batch whose images add up to no more pixels than this decodes on the event loop (a few ms
# at most: 1 MP of JPEG): a hop to a thread and back cost a no-op worker about a tenth of its
# CPU a job on small images (bench/RESULTS.md). Larger batches decode in a thread, the loop
# free for the previous batch's writes meanwhile. Claimed pixels, from the headers: a small
# file can claim many (one colour compresses to nothing), and it is the pixels that cost.
DECODE_INLINE_PIXELS = 1 << 20


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
        frames_redis: Redis | None = None,
        name: str | None = None,
        metrics: WorkerMetrics | None = None,
        heartbeat_dir: Path | None = None,
    ) -> None:
        """`frames_redis`: where node frames are (db.create_frames_redis); None: `redis`."""
        self.settings = settings
        self.detectors = detectors
        self.redis = redis
        self.frames_redis = frames_redis if frames_redis is not None else redis
        self.sessionmaker = sessionmaker
        self.storage = storage
        self.name = name or consumer_name()
        self.metrics = metrics or WorkerMetrics()
        self._stop = asyncio.Event()
        self._next_claim_at = 0.0  # event loop time of the next look for stale entries
        self._group_ready = False  # the consumer group is known to exist
        # Touched each time the loop comes round: the container's liveness check
        # (workers/health.py) reads it without Redis, so an outage does not restart workers that
        # are only waiting; cluster-wide readiness uses the Redis heartbeat (_heartbeat).
        self.heartbeat_file = Heartbeat(heartbeat_dir, self.name) if heartbeat_dir else None

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> int:
        """Process batches until `stop` is set (or, in burst mode, the stream is idle).

        Returns the number of entries taken. Work in hand (the batch in inference and the one
        decoded ahead) is always finished first.
        """
        self._stop = stop = stop or asyncio.Event()
        self._group_ready = False
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        try:
            if not await self._wait_for_schema():
                return 0
            return await self._loop(stop, burst=burst)
        finally:
            await self._shut_down(heartbeat)

    async def _wait_for_schema(self) -> bool:
        """Take no job until the schema is at the migration this code needs (True), or the
        worker stops (False). Kubernetes starts new workers while the migration Job runs: on
        the old schema (or none) each job they took failed."""
        said = False
        while True:
            self._beat_file()  # waiting on purpose is alive, not hung
            try:
                async with self.sessionmaker() as session:
                    version = await schema_version(await session.connection())
            except Exception as exc:
                if not is_outage(exc):
                    raise
                version = "unreachable"
            if version == SCHEMA_HEAD:
                if said:
                    log.info("schema_ready", version=version)
                return True
            if not said:
                log.warning("schema_not_ready", version=version, needs=SCHEMA_HEAD)
                said = True
            await _sleep_unless(self._stop, self.settings.worker.retry_backoff_s)
            if self._stop.is_set():
                return False

    async def _loop(self, stop: asyncio.Event, *, burst: bool) -> int:
        taken = 0
        ready: list[Work] = []
        while True:
            self._beat_file()
            if not ready:
                if stop.is_set():
                    break
                block_ms = BURST_IDLE_MS if burst else self.settings.worker.block_ms
                entries = await self._take(block_ms=block_ms)
                if entries is None:
                    continue  # Redis lost the group or is away for a moment: try again
                if not entries:
                    if burst:
                        break
                    continue
                taken += len(entries)
                ready = await self.prepare(entries)
                if not ready:
                    continue
            current = ready
            self._beat_file()
            prefetched, ready = await self._run_batch(current, stop)
            taken += prefetched
        return taken

    async def _take(self, *, block_ms: int) -> list[Entry] | None:
        """The next entries ([] when there are none); None after a Redis hiccup."""
        try:
            if not self._group_ready:
                await streams.ensure_group(self.redis)
                self._group_ready = True
            return await self.next_entries(block_ms=block_ms)
        except Exception as exc:
            if isinstance(exc, ResponseError) and streams.is_missing_group(exc):
                log.warning("consumer_group_missing")  # Redis lost its data: recreate
                self._group_ready = False
                return None
            if not is_outage(exc):  # READONLY (a failover) is a ResponseError and an outage
                raise
            log.warning("redis_unavailable", error=repr(exc))
            await _sleep_unless(self._stop, self.settings.worker.retry_backoff_s)
            return None

    async def _run_batch(self, current: list[Work], stop: asyncio.Event) -> tuple[int, list[Work]]:
        """Infer, write and ack `current`; meanwhile take and decode what is already waiting.

        Returns (entries taken meanwhile, the work decoded ahead)."""
        started_at = datetime.now(UTC)
        inference = asyncio.create_task(self.infer(current))
        announce = None
        if self.settings.worker.running_after_ms > 0:
            announce = asyncio.create_task(self._announce_if_slow(current, inference))
        # Take and decode what is already waiting while this batch is in inference; its results
        # are written as soon as inference ends, not after the look ahead (a round trip even
        # when nothing waits).
        prefetch = None if stop.is_set() else asyncio.create_task(self._prefetch())
        try:
            results = await inference
            if announce is not None:
                await announce  # a job's `running` goes before its result
            await self.complete(current, results, started_at=started_at)
        finally:
            ahead = await prefetch if prefetch is not None else None
        if ahead is None:
            return 0, []
        entries, ready = ahead
        return len(entries), ready

    async def _prefetch(self) -> tuple[list[Entry], list[Work]] | None:
        """The entries waiting now (no blocking read) and their work, decoded; never raises."""
        try:
            entries = await self.next_entries(block_ms=None)
            return entries, await self.prepare(entries)
        except Exception as exc:
            log.warning("prefetch_failed", error=repr(exc))
            return None

    async def _announce_if_slow(
        self, batch: Sequence[Work], inference: "asyncio.Task[list[PipelineResult | Exception]]"
    ) -> None:
        """Mark the batch running once it has been in inference running_after_ms; never
        raises: the mark is for watchers, the result is written whether or not it was made."""
        await asyncio.wait({inference}, timeout=self.settings.worker.running_after_ms / 1000)
        if inference.done():
            return
        try:
            await self._start([w.message.job_id for w in batch])
        except Exception as exc:
            log.warning("running_not_marked", error=repr(exc))

    async def _shut_down(self, heartbeat: asyncio.Task[None]) -> None:
        if self.heartbeat_file is not None:
            self.heartbeat_file.stop()
        await cancel_and_wait([heartbeat])
        try:
            await streams.forget_worker(self.redis, self.name)
        except Exception as exc:
            log.warning("heartbeat_forget_failed", error=repr(exc))

    def _beat_file(self) -> None:
        if self.heartbeat_file is not None:
            self.heartbeat_file.beat()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Beat every interval while running; runs beside inference (which is in a thread)."""
        worker = self.settings.worker
        faces = self.detectors.get("faces")
        embedder = getattr(faces, "embedder", None)
        model = embedder.spec.model if embedder is not None else None
        while not stop.is_set():
            try:
                await streams.beat(self.redis, self.name, ttl_s=worker.heartbeat_ttl_s)
                if model is not None:
                    # Which model embeds this worker's faces: a gallery model upgrade
                    # (`lookout gallery reembed`) waits until every live worker runs the new one.
                    await streams.announce_model(self.redis, self.name, model)
            except Exception as exc:  # Redis away: /health/ready reports it anyway
                log.warning("heartbeat_failed", error=repr(exc))
            await _sleep_unless(stop, worker.heartbeat_interval_s)

    async def next_entries(self, *, block_ms: int | None) -> list[Entry]:
        """Stale entries of dead consumers first, then new ones; block_ms=None: no waiting."""
        count = self.settings.worker.batch_size
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim_at:
            min_idle_ms = int(self.settings.worker.job_timeout_s * 1000)
            stale = await streams.claim_stale(
                self.redis, self.name, min_idle_ms=min_idle_ms, count=count
            )
            if stale:  # claim again next time: there may be more
                return [
                    Entry(entry_id, fields, await streams.delivery_count(self.redis, entry_id))
                    for entry_id, fields in stale
                ]
            # An entry turns stale only after job_timeout_s of silence, so looking once a
            # second (sooner for short timeouts) finds it nearly as early, for one round trip
            # a second instead of one per batch.
            interval_s = min(STALE_CLAIM_INTERVAL_S, self.settings.worker.job_timeout_s)
            self._next_claim_at = loop.time() + interval_s
        new = await streams.read_new(self.redis, self.name, count=count, block_ms=block_ms)
        wait_ms = self.settings.worker.batch_wait_ms
        # Filling the batch never uses a blocking read: Redis 6.2 notices a timed-out BLOCK only
        # when its event loop next wakes, on a quiet server its tick (every 100 ms at the default
        # hz 10), so a 5 ms wait cost up to 100 ms. A lone entry (a blocked read woken by one
        # XADD) runs at once; only a read that found a queue (several entries, not a full batch)
        # waits batch_wait_ms for the rest to arrive, then takes what is there. Under load the
        # batches fill anyway: the next one is read while this one is in inference.
        if block_ms is not None and 1 < len(new) < count and wait_ms > 0:
            await _sleep_unless(self._stop, wait_ms / 1000)
            new += await streams.read_new(
                self.redis, self.name, count=count - len(new), block_ms=None
            )
        return [Entry(entry_id, fields, 1) for entry_id, fields in new]

    async def prepare(self, entries: Sequence[Entry]) -> list[Work]:
        """Start the batch's jobs and decode their images (in a thread). Never raises.

        Entries that need no inference (trimmed, malformed, given up, bad image; with
        running_after_ms 0 also deleted or already finished jobs) are settled here; an entry
        that cannot be started stays pending. With running_after_ms 0 the jobs are marked
        running here, together: one UPDATE and one pipeline for the batch, not one per job;
        otherwise only a batch still in inference after running_after_ms is (`_run_batch`),
        and a deleted or finished job is found out when its result is written.
        """
        if entries:
            self.metrics.batch_size.observe(len(entries))
        runnable: list[tuple[Entry, streams.JobMessage]] = []
        for entry in entries:
            message = await self._persist(entry, lambda e=entry: self._admit(e))  # type: ignore[misc]
            if message is not None:
                runnable.append((entry, message))
        if not runnable:
            return []
        running: set[uuid.UUID] | None = {m.job_id for _, m in runnable}
        if self.settings.worker.running_after_ms == 0:
            running = await self._persist(
                runnable[0][0], lambda: self._start([m.job_id for _, m in runnable])
            )
        if running is None:
            return []  # Postgres/Redis gone and the worker is stopping: all stay pending
        frames = await self._persist(
            runnable[0][0],
            lambda: self._fetch_frames([m for _, m in runnable if m.job_id in running]),
        )
        if frames is None:
            return []  # as above
        started: list[tuple[Entry, streams.JobMessage, bytes]] = []
        for entry, message in runnable:
            with structlog.contextvars.bound_contextvars(job_id=str(message.job_id)):
                data = await self._persist(
                    entry,
                    lambda e=entry, m=message: self._load_started(e, m, running, frames),  # type: ignore[misc]
                )
            if data is not None:
                started.append((entry, message, data))
        if not started:
            return []
        decoded = await self._decode([data for _, _, data in started])
        work = []
        for (entry, message, _), image in zip(started, decoded, strict=True):
            if isinstance(image, DecodedImage):
                work.append(Work(entry, message, image))
                continue
            await self._settle(entry, message, image)
        return work

    async def _decode(self, blobs: Sequence[bytes]) -> list[DecodedImage | Exception]:
        """Each image decoded, or why not: on the event loop when the batch is small, else in a
        thread (the loop meanwhile writes the previous batch's results)."""
        max_pixels = self.settings.api.max_image_pixels
        headers = [_header(data, max_pixels=max_pixels) for data in blobs]
        decode = functools.partial(
            _decode_all,
            blobs,
            headers,
            max_pixels=max_pixels,
            target_side_px=self.settings.decode.target_side_px,
        )
        if sum(h.width * h.height for h in headers if h is not None) <= DECODE_INLINE_PIXELS:
            return decode()
        return await asyncio.to_thread(decode)

    async def infer(self, batch: Sequence[Work]) -> list[PipelineResult | Exception]:
        """Results per job, in order; never raises (a failure becomes every job's outcome).

        Past `job_timeout_s` a batch of several jobs runs again one job at a time, each with
        its own `job_timeout_s`: one slow image fails alone (it failed the whole batch); a
        single job past it fails. The inference thread cannot be interrupted: it finishes in
        the background and its result is dropped.
        """
        timeout_s = self.settings.worker.job_timeout_s
        model_ms: dict[str, float] = {}
        try:
            results = await asyncio.wait_for(
                asyncio.to_thread(
                    run_batch,
                    [w.image for w in batch],
                    [w.message.tasks for w in batch],
                    self.detectors,
                    model_ms,
                ),
                timeout=timeout_s,
            )
        except TimeoutError:
            log.warning("batch_timed_out", size=len(batch), timeout_s=timeout_s)
            if len(batch) == 1:
                return [JobTimeout(f"processing took longer than {timeout_s} s")]
            return [(await self.infer([work]))[0] for work in batch]
        except Exception as exc:  # run_batch catches detector errors; this is a last resort
            log.exception("batch_failed", size=len(batch))
            return [exc] * len(batch)
        for model_name, ms in model_ms.items():
            self.metrics.inference_ms.labels(model_name).observe(ms)
        return results

    async def complete(
        self,
        batch: Sequence[Work],
        results: Sequence[PipelineResult | Exception],
        *,
        started_at: datetime | None = None,
    ) -> None:
        """Write, publish and ack the batch's jobs. Never raises.

        The successful jobs are written in one transaction, then their events published and
        their entries acked in one pipeline; failures are settled one by one.
        """
        results = await self._identify(batch, results)
        done = [
            (w, r) for w, r in zip(batch, results, strict=True) if isinstance(r, PipelineResult)
        ]
        if done:

            async def finish_and_ack() -> None:
                await self._finish(
                    [(w.message, r) for w, r in done],
                    batch_size=len(batch),
                    started_at=started_at,
                    deliveries={w.message.job_id: w.entry.deliveries for w, _ in done},
                    acks=[
                        (w.entry.entry_id, w.message.job_id, w.message.frame_key) for w, _ in done
                    ],
                )

            await self._persist(done[0][0].entry, finish_and_ack)
        for work, result in zip(batch, results, strict=True):
            if not isinstance(result, PipelineResult):
                await self._settle(work.entry, work.message, result)

    async def _identify(
        self, batch: Sequence[Work], results: Sequence[PipelineResult | Exception]
    ) -> list[PipelineResult | Exception]:
        """The gallery step for the batch's `identify` jobs: one read of the gallery per batch.

        If the gallery cannot be read, the jobs fail with that reason rather than report every
        face as unknown.
        """
        wanted = [
            i
            for i, (work, result) in enumerate(zip(batch, results, strict=True))
            if IDENTIFY_TASK in work.message.tasks and isinstance(result, PipelineResult)
        ]
        out = list(results)
        if not wanted:
            return out
        try:
            async with self.sessionmaker.begin() as session:
                labelled = await identify_faces(
                    session,
                    [(batch[i].message.job_id, _as_result(results[i]).detections) for i in wanted],
                    match_threshold=self.settings.gallery.match_threshold,
                )
            for i, detections in zip(wanted, labelled, strict=True):
                out[i] = dataclasses.replace(_as_result(results[i]), detections=list(detections))
        except Exception as exc:
            log.exception("gallery_step_failed", error=repr(exc))
            for i in wanted:
                out[i] = GalleryUnavailable(
                    f"identify failed: the gallery could not be read ({exc!r})"
                )
        return out

    async def _settle(
        self,
        entry: Entry,
        message: streams.JobMessage,
        outcome: PipelineResult | Exception,
        *,
        batch_size: int = 1,
    ) -> None:
        """Record a job's result or failure, then ack. Never raises."""

        async def settle() -> None:
            if isinstance(outcome, PipelineResult):
                await self._finish(
                    [(message, outcome)],
                    batch_size=batch_size,
                    deliveries={message.job_id: entry.deliveries},
                )
            elif isinstance(outcome, (BadImage, JobTimeout, GalleryUnavailable)):
                await self._fail(message.job_id, str(outcome))
            else:
                # A detector crashed on this input: retrying will not help.
                log.error("job_pipeline_error", error=repr(outcome))
                await self._fail(message.job_id, f"processing error: {outcome!r}")
            await self._ack(entry, message)

        with structlog.contextvars.bound_contextvars(job_id=str(message.job_id)):
            await self._persist(entry, settle)

    async def _persist(self, entry: Entry, step: Callable[[], Awaitable[T]]) -> T | None:
        """Run a step that talks to Postgres/Redis; never raises.

        Through an outage the step is retried here until it succeeds (or the worker stops):
        no redelivery, so an outage does not use up the job's max_deliveries. Any other error
        leaves the entry pending: it is redelivered, and after max_deliveries dead-lettered.
        None: the step did not complete.
        """
        while True:
            try:
                return await step()
            except Exception as exc:
                self.metrics.jobs.labels("retry").inc()
                if not is_outage(exc):
                    log.exception("job_retry_later", error=repr(exc), deliveries=entry.deliveries)
                    return None
                log.warning("job_waits_for_dependencies", error=repr(exc))
                if not await self._wait_for_dependencies():
                    return None  # stopping: the entry stays pending for another worker

    async def _wait_for_dependencies(self) -> bool:
        """Block until Postgres and Redis (both, with a frames Redis) answer (True) or the
        worker stops (False)."""
        while not self._stop.is_set():
            self._beat_file()  # waiting on purpose is alive, not hung
            await _sleep_unless(self._stop, self.settings.worker.retry_backoff_s)
            try:
                async with self.sessionmaker() as session:
                    await session.execute(text("SELECT 1"))
                await self.redis.ping()
                if self.frames_redis is not self.redis:
                    await self.frames_redis.ping()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                continue
            log.info("dependencies_back")
            return True
        return False

    async def _admit(self, entry: Entry) -> streams.JobMessage | None:
        """The entry's message if its job should run; None when the entry is settled here."""
        if entry.fields is None:  # trimmed by MAXLEN; the reconciler re-enqueues its job
            await streams.ack(self.redis, entry.entry_id)
            return None
        try:
            message = streams.JobMessage.from_fields(entry.fields)
        except streams.ProtocolError as exc:
            log.warning("job_message_invalid", entry_id=entry.entry_id.decode(), error=str(exc))
            self.metrics.jobs.labels("invalid").inc()
            await streams.dead_letter(self.redis, entry.entry_id, entry.fields, str(exc))
            return None
        max_deliveries = self.settings.worker.max_deliveries
        if entry.deliveries > max_deliveries:
            reason = (
                f"gave up after {max_deliveries} deliveries (the job kept failing or timing out)"
            )
            with structlog.contextvars.bound_contextvars(job_id=str(message.job_id)):
                await self._fail(message.job_id, reason)
                await streams.dead_letter(
                    self.redis,
                    entry.entry_id,
                    entry.fields,
                    reason,
                    frame_key=message.frame_key,
                    frames_redis=self.frames_redis,
                )
                log.warning("job_dead_lettered", deliveries=entry.deliveries)
            self.metrics.jobs.labels("dead_letter").inc()
            return None
        return message

    async def _ack(self, entry: Entry, message: streams.JobMessage) -> None:
        """Ack a job's entry once its outcome is recorded; its node frame goes with it."""
        await streams.ack(
            self.redis,
            entry.entry_id,
            message.job_id,
            frame_key=message.frame_key,
            frames_redis=self.frames_redis,
        )

    async def _fetch_frames(
        self, messages: Sequence[streams.JobMessage]
    ) -> dict[uuid.UUID, bytes | None]:
        """The node frames of these jobs, in one round trip; None for a frame that is gone."""
        wanted = [m for m in messages if m.frame_key is not None]
        frames = await streams.get_frames(
            self.frames_redis, [cast(str, m.frame_key) for m in wanted]
        )
        return {m.job_id: frame for m, frame in zip(wanted, frames, strict=True)}

    async def _load_started(
        self,
        entry: Entry,
        message: streams.JobMessage,
        running: set[uuid.UUID],
        frames: dict[uuid.UUID, bytes | None],
    ) -> bytes | None:
        """The image of a job that was just marked running; None when the entry is settled."""
        if message.job_id not in running:
            # Deleted, or already finished by an earlier delivery: nothing left to do, except
            # the events, if the earlier delivery died between its commit and its publish.
            await self._republish_if_missing(message.job_id)
            await self._ack(entry, message)
            log.info("job_skipped")
            self.metrics.jobs.labels("skipped").inc()
            return None
        try:
            if message.frame_key is not None:
                return self._frame(message, frames)
            return self._load(message)
        except BadImage as exc:
            await self._fail(message.job_id, str(exc))
            await self._ack(entry, message)
            return None

    def _frame(self, message: streams.JobMessage, frames: dict[uuid.UUID, bytes | None]) -> bytes:
        frame = frames.get(message.job_id)
        if frame is None:
            raise BadImage(
                "the node frame is gone from the frames Redis (it waited past its TTL, or Redis "
                "lost it) before a worker could run the job"
            )
        return frame

    async def _republish_if_missing(self, job_id: uuid.UUID) -> bool:
        """Publish a finished job's final events if its stream lacks them; False: no such job."""
        async with self.sessionmaker() as session:
            job = await session.get(Job, job_id)
            if job is None:
                return False
            if not job.status.finished or await streams.has_terminal_event(self.redis, job_id):
                return True
            final = await results.final_events(session, job)
        await self._publish(*final)
        log.info("job_events_republished", job_id=str(job_id))
        return True

    def _load(self, message: streams.JobMessage) -> bytes:
        assert message.image_key is not None
        try:
            return self.storage.get(message.image_key)
        except FileNotFoundError as exc:
            raise BadImage(f"the stored image {message.image_key} is gone") from exc
        except OSError as exc:
            # Not an outage of Postgres or Redis, the only ones _persist waits out: taken for one,
            # a file that cannot be read (permissions, an I/O error) held the worker in that wait
            # for ever, and the next worker to reclaim the entry too. The entry's own failure
            # instead: redelivered later, dead-lettered after max_deliveries.
            raise StoredImageUnreadable(
                f"the stored image {message.image_key} cannot be read: {exc.strerror or exc!r}"
            ) from None

    async def _start(self, job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Mark the jobs running; the ids of those that exist and are not yet finished."""
        async with autocommit_session(self.sessionmaker) as session:  # one UPDATE
            running = await results.mark_running(session, job_ids)
        if running:
            await self._publish(
                *(job_events.status(job_id, "running") for job_id in job_ids if job_id in running),
            )
        return running

    async def _finish(
        self,
        items: Sequence[tuple[streams.JobMessage, PipelineResult]],
        *,
        batch_size: int,
        acks: Sequence[streams.AckEntry] = (),
        started_at: datetime | None = None,
        deliveries: Mapping[uuid.UUID, int] | None = None,
    ) -> None:
        """Record the results of several jobs in one transaction (one statement, no transaction,
        when nothing was found), then their events and acks in one pipeline.

        Idempotent (app/jobs/results.py): a job that is already finished is left as it is and
        only its missing events are published again. `acks` (entries of these jobs) are acked
        only after their job's events are published: after them in the events' pipeline, or
        after the republish.
        """
        outcomes = {message.job_id: result for message, result in items}  # one per job
        writing: AbstractAsyncContextManager[AsyncSession] = (
            autocommit_session(self.sessionmaker)
            if results.one_statement(outcomes)
            else self.sessionmaker.begin()
        )
        async with writing as session:
            recorded = await results.record_results(
                session, outcomes, started_at=started_at, deliveries=deliveries
            )
        finished = recorded.finished
        if recorded.events:
            await self._publish(*recorded.events, acks=[a for a in acks if a[1] in finished])
        for job_id in recorded.settled_before:
            await self._republish_if_missing(job_id)
        if late_acks := [a for a in acks if a[1] not in finished]:
            await streams.ack_many(self.redis, late_acks, frames_redis=self.frames_redis)
        self.metrics.jobs.labels("done").inc(len(finished))
        for job_id, detections in finished.items():
            log.info(
                "job_done",
                job_id=str(job_id),
                detections=detections,
                batch_size=batch_size,
                decode_ms=outcomes[job_id].decode_ms,
                inference_ms=outcomes[job_id].inference_ms,
            )

    async def _fail(self, job_id: uuid.UUID, reason: str) -> None:
        async with autocommit_session(self.sessionmaker) as session:  # one UPDATE
            failure = await results.record_failure(session, job_id, reason)
        if failure is None:  # already finished: an earlier try may have died before publishing
            await self._republish_if_missing(job_id)
            return
        await self._publish(*failure)
        self.metrics.jobs.labels("failed").inc()
        log.info("job_failed", reason=reason)

    async def _publish(
        self, *events: dict[str, Any], acks: Sequence[streams.AckEntry] = ()
    ) -> None:
        """All of a step's events (and then `acks`) in one round trip, each job's as one entry
        of its stream (app/streams/events.py); result/error events also go to the firehose."""
        await streams.publish_job_events(
            self.redis,
            events,
            ttl_s=self.settings.streams.job_events_ttl_s,
            firehose_maxlen=self.settings.streams.firehose_maxlen,
            acks=acks,
            frames_redis=self.frames_redis,
        )


class JobTimeout(Exception):
    """Inference ran past `job_timeout_s`; the job fails."""


class GalleryUnavailable(Exception):
    """The gallery step could not read the enrolled faces; the identify job fails."""


class StoredImageUnreadable(Exception):
    """The job's stored image is there but cannot be read; the entry stays pending (retried by
    redelivery, then dead-lettered)."""


def _as_result(outcome: PipelineResult | Exception) -> PipelineResult:
    assert isinstance(outcome, PipelineResult)
    return outcome


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _header(data: bytes, *, max_pixels: int) -> ImageInfo | None:
    """The image's header; None where it is refused (decode_image then says why)."""
    try:
        return inspect_header(data, max_pixels=max_pixels)
    except Exception:
        return None


def _decode_all(
    blobs: Sequence[bytes],
    headers: Sequence[ImageInfo | None],
    *,
    max_pixels: int,
    target_side_px: int,
) -> list[DecodedImage | Exception]:
    """Decode each image; a failure is returned in its place, never raised."""
    decoded: list[DecodedImage | Exception] = []
    for data, header in zip(blobs, headers, strict=True):
        try:
            decoded.append(
                decode_image(
                    data, max_pixels=max_pixels, target_side_px=target_side_px, header=header
                )
            )
        except Exception as exc:  # BadImage, or OpenCV choking on a hostile file
            decoded.append(exc)
    return decoded
