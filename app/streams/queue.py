"""The work queue `lookout:jobs`: job messages, enqueue, claim, ack, dead letters, statistics."""

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.streams import keys
from app.streams.acks import append_acks, frame_keys_of
from app.streams.frames import delete_separate_frames, elsewhere
from app.streams.keys import (
    DEAD,
    ENTRY_MARKER_TTL_S,
    GROUP,
    JOBS,
    SCHEMA_VERSION,
    AckEntry,
    Fields,
    ProtocolError,
    RawEntries,
    StreamId,
    frame_key,
    job_entry_key,
)
from app.streams.scripts import Script


@dataclass(frozen=True)
class JobMessage:
    job_id: uuid.UUID
    tasks: tuple[str, ...]
    image_key: str | None = None  # where storage holds the image …
    frame_key: str | None = None  # … or where the frames Redis holds a node frame's bytes
    enqueued_at: float = field(default_factory=time.time)  # epoch seconds

    @classmethod
    def for_job(
        cls, job_id: uuid.UUID, tasks: tuple[str, ...], image_key: str | None
    ) -> "JobMessage":
        """The message of a job: its stored image, or (image_key None) its node frame."""
        if image_key is not None:
            return cls(job_id=job_id, tasks=tasks, image_key=image_key)
        return cls.for_frame(job_id, tasks)

    @classmethod
    def for_frame(cls, job_id: uuid.UUID, tasks: tuple[str, ...]) -> "JobMessage":
        return cls(job_id=job_id, tasks=tasks, frame_key=frame_key(job_id))

    def to_fields(self) -> dict[str, str | bytes]:
        fields: dict[str, str | bytes] = {
            "v": str(SCHEMA_VERSION),
            "job_id": str(self.job_id),
            "tasks": ",".join(self.tasks),
            "enqueued_at": repr(self.enqueued_at),
        }
        if self.image_key is not None:
            fields["image_key"] = self.image_key
        if self.frame_key is not None:
            fields["frame_key"] = self.frame_key
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> "JobMessage":
        try:
            version = int(fields[b"v"])
            if version != SCHEMA_VERSION:
                raise ProtocolError(f"unsupported job message version {version}")
            job_id = uuid.UUID(fields[b"job_id"].decode())
            tasks = tuple(t for t in fields[b"tasks"].decode().split(",") if t)
            enqueued_at = float(fields[b"enqueued_at"])
            image_key = fields.get(b"image_key")
            frame = fields.get(b"frame_key")
            if (image_key is None) == (frame is None):
                raise ProtocolError("job message needs exactly one of image_key, frame_key")
            # Workers delete the frame key when the job ends: it may only ever name this
            # job's frame, never another key.
            if frame is not None and frame.decode() != frame_key(job_id):
                raise ProtocolError(f"frame_key {frame!r} is not the frame of job {job_id}")
            return cls(
                job_id=job_id,
                tasks=tasks,
                image_key=image_key.decode() if image_key is not None else None,
                frame_key=frame.decode() if frame is not None else None,
                enqueued_at=enqueued_at,
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"malformed job message: {exc!r}") from exc


async def ensure_group(redis: "Redis") -> None:
    """Create the consumer group at the start of the stream; idempotent."""
    try:
        await redis.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# The message and its entry marker in one atomic step (the marker needs the entry's id): a job
# never has a message without a marker. One EVALSHA, three commands with the script's two.
# KEYS: jobs stream, entry marker. ARGV: maxlen, marker ttl, then the message's fields and values.
_ENQUEUE_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
"""
_ENQUEUE = Script(_ENQUEUE_SCRIPT)


async def enqueue_job(
    redis: "Redis",
    message: JobMessage,
    *,
    maxlen: int,
    frame: bytes | None = None,
    frame_ttl_ms: int | None = None,
    frames_redis: "Redis | None" = None,
) -> StreamId:
    """XADD the message and record its entry id under the job's marker, atomically.

    Nothing goes on the job's event stream: its first event, `queued`, is the job's row
    (the events socket sends it from there); the stream holds what workers report.

    With `frame`, the node frame's bytes are SET (PX frame_ttl_ms) under the message's
    frame_key in `frames_redis` (None: the main Redis) first: a message never names a frame
    that is not there yet. Without it, a message with a frame_key names a frame already there
    (the reconciler sending a lost message again).
    """
    if frame is not None and (message.frame_key is None or frame_ttl_ms is None):
        raise ValueError("a frame needs a message with a frame_key and a frame_ttl_ms")
    if frame is not None:
        await (elsewhere(redis, frames_redis) or redis).set(
            cast(str, message.frame_key), frame, px=frame_ttl_ms
        )
    flat: list[str | bytes] = []
    for name, value in message.to_fields().items():
        flat.extend((name, value))
    entry_id = await _ENQUEUE.run(
        redis,
        keys=(JOBS, job_entry_key(message.job_id)),
        args=(str(maxlen), str(ENTRY_MARKER_TTL_S), *flat),
    )
    return cast(StreamId, entry_id)


# A field of schema version 1 that held a node frame's bytes inline. Such a message left over
# from before the upgrade is dead-lettered (wrong version): its bytes are neither copied nor
# left behind in the work stream.
_V1_INLINE_IMAGE = b"image"


async def dead_letter(
    redis: "Redis",
    entry_id: StreamId,
    fields: Fields,
    reason: str,
    *,
    frame_key: str | None = None,
    frames_redis: "Redis | None" = None,
) -> None:
    """Move a poisoned job message to the dead-letter stream and ack it, atomically.

    `frame_key`: the job's frame, deleted with it (pass it when the job has been given up on).
    The dead letter holds the message's fields, never frame bytes.
    """
    dead_fields: dict[Any, Any] = {k: v for k, v in fields.items() if k != _V1_INLINE_IMAGE}
    dead_fields[b"source_id"] = entry_id
    dead_fields[b"error"] = reason.encode()
    frame_keys = [frame_key] if frame_key is not None else []
    frames_in_pipe = await delete_separate_frames(redis, frame_keys, frames_redis)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD, dead_fields)
        pipe.xack(JOBS, GROUP, entry_id)
        if b"job_id" in fields:
            pipe.delete(job_entry_key(fields[b"job_id"].decode(errors="replace")))
        if _V1_INLINE_IMAGE in fields:
            pipe.xdel(JOBS, entry_id)
        if frame_keys and frames_in_pipe:
            pipe.delete(*frame_keys)
        await pipe.execute()


async def claim_stale(redis: "Redis", consumer: str, *, min_idle_ms: int, count: int) -> RawEntries:
    """XAUTOCLAIM job entries pending longer than min_idle_ms (their consumer died)."""
    response = await redis.xautoclaim(
        JOBS, GROUP, consumer, min_idle_ms, start_id="0-0", count=count
    )
    return cast(RawEntries, response[1])


async def read_new(
    redis: "Redis", consumer: str, *, count: int, block_ms: int | None
) -> RawEntries:
    """Up to `count` new entries for this consumer; block_ms=None returns at once.

    (Redis reads BLOCK 0 as "forever", so "do not wait" is None, never 0.)
    """
    if block_ms is not None:
        block_ms = min(block_ms, keys.MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]],
        await redis.xreadgroup(GROUP, consumer, {JOBS: ">"}, count=count, block=block_ms),
    )
    return response[0][1] if response else []


async def delivery_count(redis: "Redis", entry_id: StreamId) -> int:
    """How many times the entry has been delivered, this delivery included."""
    pending = cast(
        list[dict[str, Any]],
        await redis.xpending_range(JOBS, GROUP, min=entry_id, max=entry_id, count=1),
    )
    return int(pending[0]["times_delivered"]) if pending else 1


async def ack(
    redis: "Redis",
    entry_id: StreamId,
    job_id: uuid.UUID | None = None,
    *,
    frame_key: str | None = None,
    frames_redis: "Redis | None" = None,
) -> None:
    """XACK, and drop the job's entry marker: the job no longer needs its message.

    `frame_key`: the job's node frame, deleted too (from `frames_redis`; None: the main Redis).
    """
    await ack_many(redis, [(entry_id, job_id, frame_key)], frames_redis=frames_redis)


async def ack_many(
    redis: "Redis", entries: Sequence[AckEntry], *, frames_redis: "Redis | None" = None
) -> None:
    """`ack` for several (entry id, job id, frame key) in one MULTI.

    Call it once the job's outcome is in Postgres: a frame in a Redis of its own is deleted
    first (a redelivery after a failed ack then finds the job finished and never needs it);
    in the main Redis it goes in the same MULTI.
    """
    in_pipe = await delete_separate_frames(redis, frame_keys_of(entries), frames_redis)
    async with redis.pipeline(transaction=True) as pipe:
        append_acks(pipe, entries, delete_frames=in_pipe)
        await pipe.execute()


def is_missing_group(exc: ResponseError) -> bool:
    """The group (or the stream) is gone: Redis was wiped or restarted without its data."""
    return "NOGROUP" in str(exc)


async def jobs_with_live_entry(redis: "Redis", job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """The jobs whose latest message is still in `lookout:jobs` (not lost, not trimmed)."""
    if not job_ids:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.get(job_entry_key(job_id))
        markers = cast(list[bytes | None], await pipe.execute())
    marked = [(job_id, m) for job_id, m in zip(job_ids, markers, strict=True) if m is not None]
    if not marked:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for _, entry_id in marked:
            pipe.xrange(JOBS, min=entry_id, max=entry_id, count=1)
        found = cast(list[RawEntries], await pipe.execute())
    return {job_id for (job_id, _), entries in zip(marked, found, strict=True) if entries}


# --- queue statistics ----------------------------------------------------------------------

# Redis 6.2 (the embedded server) has no `lag` in XINFO GROUPS; counting the entries after the
# group's last-delivered id stops here.
LAG_COUNT_CAP = 10_000


@dataclass(frozen=True)
class QueueStats:
    length: int  # entries in lookout:jobs (acked ones stay until MAXLEN trims them)
    pending: int  # delivered to a consumer, not acked yet
    lag: int  # not delivered to any consumer yet
    dead_letters: int
    consumers: int


async def queue_stats(redis: "Redis") -> QueueStats:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(JOBS)
        pipe.xlen(DEAD)
        length, dead = await pipe.execute()
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(JOBS)
    except ResponseError:  # no stream yet
        groups = []
    group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
    if group is None:
        return QueueStats(int(length), 0, int(length), int(dead), 0)
    lag = group.get("lag")
    if lag is None:
        last = _text(group.get("last-delivered-id")) or "0-0"
        entries = cast(RawEntries, await redis.xrange(JOBS, min=f"({last}", count=LAG_COUNT_CAP))
        lag = len(entries)
    return QueueStats(
        length=int(length),
        pending=int(group.get("pending", 0)),
        lag=int(lag),
        dead_letters=int(dead),
        consumers=int(group.get("consumers", 0)),
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)
