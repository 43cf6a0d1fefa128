"""THE wire protocol between API and workers: stream names, message schemas, publish/read helpers.

Every message carries `v` (schema version). Redis clients are created with bytes responses
(decode_responses=False): stream fields and node frames are bytes.

- `lookout:jobs` (group `detectors`): one entry per job to run (JobMessage).
- `lookout:job:{id}`: that job's events (status | result | error), in order; expires
  `job_events_ttl_s` after its last event.
- `lookout:events`: firehose of finished jobs (result | error) and of edge node status changes
  (node), MAXLEN-trimmed. Consumers dispatch on `type` and skip types they do not know.
- `lookout:jobs:dead`: messages that exceeded max deliveries, with the last error.
- `lookout:jobs:entry:{id}`: the stream entry id of the job's latest message, set with the XADD
  and deleted with the XACK. The reconciler reads it to tell a job whose message is still in
  the stream from one that Redis lost.
- `lookout:workers`: sorted set of worker heartbeats (member: consumer name, score: the epoch
  second the beat expires). /health/ready counts the unexpired ones.
- `lookout:maintenance:lock`: held by the one API replica running the reconciler + janitor.
- `lookout:ratelimit:{owner}:{window}`: request counter of one API key in one window.
- `lookout:frame:{job_id}` (in the *frames* Redis): the bytes of a node frame that must not be
  stored (`store_frames` false). The job message names it in `frame_key`; it is deleted when
  the job ends (done, failed, skipped or dead-lettered) and expires after `frame_ttl_ms` anyway.

The frames Redis (settings.redis.frames_url) keeps nothing on disk; the main Redis may (AOF in
production, for the work in flight), so frame bytes never go into anything written to it. Where
no frames URL is set the main Redis holds the frames too (`lookout up`: no persistence at all).
"""

import json
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

# 2: node frames moved out of the message (v1 `image`, inline bytes) into `frame_key`.
SCHEMA_VERSION = 2
# The longest one blocking read may wait. Callers that wait longer loop; the Redis client's
# socket timeout (settings.redis.socket_timeout_s) must exceed this, or a quiet stream would
# look like a dead connection.
MAX_BLOCK_MS = 5000
JOBS = "lookout:jobs"
GROUP = "detectors"
DEAD = "lookout:jobs:dead"
FIREHOSE = "lookout:events"
WORKERS = "lookout:workers"
MAINTENANCE_LOCK = "lookout:maintenance:lock"
# A job's entry marker outlives any sane queue wait; if it expires the reconciler re-enqueues
# the job, which is harmless (a second message for a finished job is skipped).
ENTRY_MARKER_TTL_S = 7 * 24 * 3600

EventType = Literal["status", "result", "error"]
# A node came online, went offline, was revoked, or changed state (active | idle, dark scene).
NODE_EVENT = "node"
NodeChange = Literal["online", "offline", "revoked", "state", "dark_scene"]
StreamId = bytes  # Redis stream entry id, e.g. b"1718000000000-0"
Fields = dict[bytes, bytes]
# Entries as Redis returns them; fields are None for an entry trimmed away while pending.
RawEntries = list[tuple[StreamId, Fields | None]]
# What acking one entry takes (see `ack`): its id, its job (whose entry marker goes), and its
# node frame's key (the frame goes too), if any.
AckEntry = tuple[StreamId, uuid.UUID | None, str | None]


class ProtocolError(ValueError):
    """A stream entry that does not follow this schema (wrong version, missing fields)."""


def job_events_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:job:{job_id}"


def job_entry_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:jobs:entry:{job_id}"


def rate_limit_key(owner: str, window: int) -> str:
    return f"lookout:ratelimit:{owner}:{window}"


def frame_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:frame:{job_id}"


def frame_ttl_ms(*, job_timeout_s: float, max_deliveries: int) -> int:
    """How long a node frame is kept for its job: past this it is gone, and so is the job.

    Each delivery (max_deliveries, then one more that dead-letters it) may run job_timeout_s
    and then sit job_timeout_s before another worker reclaims it. A frame still queued after
    that fails its job: a live frame that old has no one waiting for it.
    """
    return int(2 * job_timeout_s * (max_deliveries + 1) * 1000)


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


def make_event(event_type: EventType, job_id: uuid.UUID, **payload: Any) -> dict[str, Any]:
    return {"type": event_type, "job_id": str(job_id), "at": time.time(), **payload}


def make_node_event(
    change: NodeChange, node_id: uuid.UUID, *, name: str, **snapshot: Any
) -> dict[str, Any]:
    """A firehose event for a node: what changed, and the node's status fields after the change."""
    return {
        "type": NODE_EVENT,
        "change": change,
        "node_id": str(node_id),
        "name": name,
        "at": time.time(),
        **snapshot,
    }


def is_terminal(event: dict[str, Any]) -> bool:
    """The last event of a job: its final status."""
    return event.get("type") == "status" and event.get("status") in ("done", "failed")


def _encode_event(event: dict[str, Any]) -> dict[str, str]:
    return {"v": str(SCHEMA_VERSION), "data": json.dumps(event, separators=(",", ":"))}


def _decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    if int(fields.get(b"v", b"0")) != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported event version {fields.get(b'v')!r}")
    event: dict[str, Any] = json.loads(fields[b"data"])
    return event


async def ensure_group(redis: "Redis") -> None:
    """Create the consumer group at the start of the stream; idempotent."""
    try:
        await redis.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# XADD and the entry marker in one atomic step: a job never has a message without a marker.
_ENQUEUE_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
"""


def _elsewhere(redis: "Redis", frames_redis: "Redis | None") -> "Redis | None":
    """The frames Redis when it is a server of its own; None when the main Redis holds frames."""
    return None if frames_redis is None or frames_redis is redis else frames_redis


async def enqueue_job(
    redis: "Redis",
    message: JobMessage,
    *,
    maxlen: int,
    first_event: dict[str, Any] | None = None,
    events_ttl_s: int = 3600,
    frame: bytes | None = None,
    frame_ttl_ms: int | None = None,
    frames_redis: "Redis | None" = None,
) -> StreamId:
    """XADD the message and record its entry id under the job's marker, atomically.

    With `first_event` (the job's `queued` status), that event goes on the job's stream in the
    same MULTI: one round trip, and no worker can report `running` before `queued`.

    With `frame`, the node frame's bytes are SET (PX frame_ttl_ms) under the message's
    frame_key in `frames_redis` (None: the main Redis) first: a message never names a frame
    that is not there yet. Without it, a message with a frame_key names a frame already there
    (the reconciler sending a lost message again).
    """
    if frame is not None and (message.frame_key is None or frame_ttl_ms is None):
        raise ValueError("a frame needs a message with a frame_key and a frame_ttl_ms")
    flat: list[str | bytes] = []
    for name, value in message.to_fields().items():
        flat.extend((name, value))
    separate = _elsewhere(redis, frames_redis)
    if frame is not None and separate is not None:
        await separate.set(cast(str, message.frame_key), frame, px=frame_ttl_ms)
    async with redis.pipeline(transaction=True) as pipe:
        if frame is not None and separate is None:
            pipe.set(cast(str, message.frame_key), frame, px=frame_ttl_ms)
        if first_event is not None:
            _append_events(
                pipe, [first_event], ttl_s=events_ttl_s, firehose_maxlen=None, wanted=None
            )
        pipe.eval(
            _ENQUEUE_SCRIPT,
            2,
            JOBS,
            job_entry_key(message.job_id),
            str(maxlen),
            str(ENTRY_MARKER_TTL_S),
            *flat,
        )
        results = await pipe.execute()
    return cast(StreamId, results[-1])


async def publish_job_event(
    redis: "Redis",
    event: dict[str, Any],
    *,
    ttl_s: int,
    firehose_maxlen: int | None = None,
) -> None:
    """Append to the job's stream (refreshing its expiry) and, if given a maxlen, the firehose."""
    await publish_job_events(
        redis, [event], ttl_s=ttl_s, firehose_maxlen=firehose_maxlen, firehose_types=None
    )


async def publish_job_events(
    redis: "Redis",
    events: Sequence[dict[str, Any]],
    *,
    ttl_s: int,
    firehose_maxlen: int | None = None,
    firehose_types: Iterable[EventType] | None = ("result", "error"),
    acks: Sequence[AckEntry] = (),
    frames_redis: "Redis | None" = None,
) -> None:
    """Append several events in one MULTI: readers see all of them or none.

    With a firehose maxlen, events whose type is in `firehose_types` (all when None) are also
    appended to the firehose. `acks` (as for `ack_many`) are done in the same MULTI, after the
    events: an entry is acked exactly when its job's events are published, one round trip.
    """
    wanted = set(firehose_types) if firehose_types is not None else None
    in_pipe = await _delete_separate_frames(redis, _frame_keys(acks), frames_redis)
    async with redis.pipeline(transaction=True) as pipe:
        _append_events(pipe, events, ttl_s=ttl_s, firehose_maxlen=firehose_maxlen, wanted=wanted)
        _append_acks(pipe, acks, delete_frames=in_pipe)
        await pipe.execute()


def _append_events(
    pipe: "Pipeline",
    events: Sequence[dict[str, Any]],
    *,
    ttl_s: int,
    firehose_maxlen: int | None,
    wanted: set[EventType] | None,
) -> None:
    for event in events:
        key = job_events_key(event["job_id"])
        fields = cast(dict[Any, Any], _encode_event(event))
        pipe.xadd(key, fields)
        pipe.expire(key, ttl_s)
        if firehose_maxlen is not None and (wanted is None or event["type"] in wanted):
            pipe.xadd(FIREHOSE, fields, maxlen=firehose_maxlen, approximate=True)


async def has_terminal_event(redis: "Redis", job_id: uuid.UUID) -> bool:
    """Whether the job's event stream ends with its final status."""
    last = cast(RawEntries, await redis.xrevrange(job_events_key(job_id), count=1))
    return bool(last) and is_terminal(_decode_event(last[0][1] or {}))


async def publish_firehose_event(redis: "Redis", event: dict[str, Any], *, maxlen: int) -> None:
    """An event for the firehose alone (node status changes)."""
    fields = cast(dict[Any, Any], _encode_event(event))
    await redis.xadd(FIREHOSE, fields, maxlen=maxlen, approximate=True)


async def read_job_events(
    redis: "Redis", job_id: uuid.UUID, *, after: StreamId = b"0", block_ms: int | None = None
) -> list[tuple[StreamId, dict[str, Any]]]:
    """Events of one job after entry id `after`; blocks up to block_ms for the first new one."""
    if block_ms is None:
        start = b"(" + after if after != b"0" else b"-"
        entries = cast(RawEntries, await redis.xrange(job_events_key(job_id), min=start))
        return [(entry_id, _decode_event(fields or {})) for entry_id, fields in entries]
    return await _xread(redis, job_events_key(job_id), after, block_ms)


async def firehose_tail(redis: "Redis") -> StreamId:
    """The id of the newest firehose entry: read after it to get only what comes next.

    Reading with "$" instead would miss entries added between two blocking reads.
    """
    newest = cast(RawEntries, await redis.xrevrange(FIREHOSE, count=1))
    return newest[0][0] if newest else b"0-0"


async def read_firehose(
    redis: "Redis", *, after: StreamId, block_ms: int
) -> list[tuple[StreamId, dict[str, Any]]]:
    return await _xread(redis, FIREHOSE, after, block_ms)


async def _xread(
    redis: "Redis", key: str, after: StreamId, block_ms: int
) -> list[tuple[StreamId, dict[str, Any]]]:
    block_ms = min(block_ms, MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]], await redis.xread({key: after}, block=block_ms, count=100)
    )
    if not response:
        return []
    return [(entry_id, _decode_event(fields or {})) for entry_id, fields in response[0][1]]


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
    frames_in_pipe = await _delete_separate_frames(redis, frame_keys, frames_redis)
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
        block_ms = min(block_ms, MAX_BLOCK_MS)
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
    in_pipe = await _delete_separate_frames(redis, _frame_keys(entries), frames_redis)
    async with redis.pipeline(transaction=True) as pipe:
        _append_acks(pipe, entries, delete_frames=in_pipe)
        await pipe.execute()


def _frame_keys(entries: Sequence[AckEntry]) -> list[str]:
    return [key for _, _, key in entries if key is not None]


async def _delete_separate_frames(
    redis: "Redis", frame_keys: Sequence[str], frames_redis: "Redis | None"
) -> bool:
    """Delete these frames now if they live in a Redis of their own; True when they are in the
    main Redis instead, for the caller's MULTI to delete."""
    separate = _elsewhere(redis, frames_redis)
    if frame_keys and separate is not None:
        await separate.delete(*frame_keys)
    return separate is None


def _append_acks(pipe: "Pipeline", entries: Sequence[AckEntry], *, delete_frames: bool) -> None:
    for entry_id, job_id, frame_key in entries:
        pipe.xack(JOBS, GROUP, entry_id)
        if job_id is not None:
            pipe.delete(job_entry_key(job_id))
        if frame_key is not None and delete_frames:
            pipe.delete(frame_key)


async def get_frames(frames_redis: "Redis", keys: Sequence[str]) -> list[bytes | None]:
    """The bytes of these node frames, in order, in one MGET; None for a frame that is gone."""
    if not keys:
        return []
    return cast(list[bytes | None], await frames_redis.mget(list(keys)))


async def frames_present(frames_redis: "Redis", keys: Sequence[str]) -> set[str]:
    """Which of these node frames are still there (not expired, not lost)."""
    if not keys:
        return set()
    async with frames_redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        found = cast(list[int], await pipe.execute())
    return {key for key, exists in zip(keys, found, strict=True) if exists}


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


# --- worker heartbeats ---------------------------------------------------------------------


async def beat(redis: "Redis", consumer: str, *, ttl_s: float) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(WORKERS, {consumer: now + ttl_s})
        pipe.zremrangebyscore(WORKERS, "-inf", now)
        await pipe.execute()


async def forget_worker(redis: "Redis", consumer: str) -> None:
    await redis.zrem(WORKERS, consumer)


async def live_workers(redis: "Redis") -> list[str]:
    members = cast(list[bytes], await redis.zrangebyscore(WORKERS, time.time(), "+inf"))
    return [m.decode() for m in members]


# --- maintenance lock ----------------------------------------------------------------------


async def try_lock(redis: "Redis", key: str, *, owner: str, ttl_s: float) -> bool:
    """SET NX PX: True if `owner` now holds `key` for ttl_s."""
    return bool(await redis.set(key, owner, nx=True, px=max(1, int(ttl_s * 1000))))


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


def retry_after_s(window_s: int) -> int:
    """Seconds until the current fixed window of `window_s` ends (at least 1)."""
    return max(1, math.ceil(window_s - time.time() % window_s))


# --- firehose consumer groups (app/events_out) ----------------------------------------------
# Each outbound path reads the firehose through a group of its own: it resumes where it
# stopped after a restart, and a slow receiver never slows a job (ARCHITECTURE.md).
WEBHOOKS_GROUP = "webhooks"
MQTT_GROUP = "mqtt"
FIREHOSE_GROUPS = (WEBHOOKS_GROUP, MQTT_GROUP)


def webhook_lock_key(webhook_id: uuid.UUID | str) -> str:
    """Held by the one dispatcher delivering this webhook's queue (keeps its order)."""
    return f"lookout:webhooks:lock:{webhook_id}"


async def ensure_firehose_groups(redis: "Redis", groups: Iterable[str] = FIREHOSE_GROUPS) -> None:
    """Create the firehose consumer groups at the stream's current end; idempotent.

    The API creates them at start too, so events published while `lookout events` is down are
    waiting for it (as long as MAXLEN has not trimmed them).
    """
    for group in groups:
        try:
            await redis.xgroup_create(FIREHOSE, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def read_firehose_group(
    redis: "Redis", group: str, consumer: str, *, count: int, block_ms: int | None, pending: bool
) -> list[tuple[StreamId, dict[str, Any] | None]]:
    """Firehose entries for this consumer: its own unacked ones (pending=True, from the start)
    or new ones. An entry that is not a valid event (or was trimmed) comes back as None."""
    if block_ms is not None:
        block_ms = min(block_ms, MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]],
        await redis.xreadgroup(
            group, consumer, {FIREHOSE: "0" if pending else ">"}, count=count, block=block_ms
        ),
    )
    entries = response[0][1] if response else []
    decoded: list[tuple[StreamId, dict[str, Any] | None]] = []
    for entry_id, fields in entries:
        try:
            decoded.append((entry_id, _decode_event(fields) if fields else None))
        except (ProtocolError, ValueError, KeyError):
            decoded.append((entry_id, None))
    return decoded


async def ack_firehose(redis: "Redis", group: str, entry_ids: Sequence[StreamId]) -> None:
    if entry_ids:
        await redis.xack(FIREHOSE, group, *entry_ids)


async def firehose_group_lag(redis: "Redis", group: str) -> tuple[int, int] | None:
    """(pending, lag) of a firehose group; None when the group does not exist."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(FIREHOSE)
    except ResponseError:
        return None
    found = next((g for g in groups if _text(g.get("name")) == group), None)
    if found is None:
        return None
    lag = found.get("lag")
    if lag is None:
        last = _text(found.get("last-delivered-id")) or "0-0"
        entries = cast(
            RawEntries, await redis.xrange(FIREHOSE, min=f"({last}", count=LAG_COUNT_CAP)
        )
        lag = len(entries)
    return int(found.get("pending", 0)), int(lag)


# The MQTT bridge's connection state (JSON), refreshed while it runs; read by GET /v1/events/status.
MQTT_STATUS = "lookout:mqtt:status"


async def claim_stale_firehose(
    redis: "Redis", group: str, consumer: str, *, min_idle_ms: int, count: int
) -> int:
    """Move firehose entries a dead consumer of `group` left unacked to `consumer`; they are
    then read with its own pending entries. Returns how many were claimed."""
    response = await redis.xautoclaim(
        FIREHOSE, group, consumer, min_idle_ms, start_id="0-0", count=count
    )
    return len(cast(RawEntries, response[1]))
