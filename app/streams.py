"""THE wire protocol between API and workers: stream names, message schemas, publish/read helpers.

Every message carries `v` (schema version). Redis clients are created with bytes responses
(decode_responses=False) because job messages may carry inline image bytes.

- `lookout:jobs` (group `detectors`): one entry per job to run (JobMessage).
- `lookout:job:{id}`: that job's events (status | result | error), in order; expires
  `job_events_ttl_s` after its last event.
- `lookout:events`: firehose of finished jobs (result | error) and of edge node status changes
  (node), MAXLEN-trimmed. Consumers dispatch on `type` and skip types they do not know.
- `lookout:jobs:dead`: messages that exceeded max deliveries, with the last error.

Inline images (edge node frames that must not be stored) live in `lookout:jobs` only until the
job is acked: the entry is deleted with the ack, and a dead-lettered copy never carries them.
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

SCHEMA_VERSION = 1
JOBS = "lookout:jobs"
GROUP = "detectors"
DEAD = "lookout:jobs:dead"
FIREHOSE = "lookout:events"

EventType = Literal["status", "result", "error"]
# A node came online, went offline, was revoked, or changed state (active | idle, dark scene).
NODE_EVENT = "node"
NodeChange = Literal["online", "offline", "revoked", "state", "dark_scene"]
StreamId = bytes  # Redis stream entry id, e.g. b"1718000000000-0"
Fields = dict[bytes, bytes]
# Entries as Redis returns them; fields are None for an entry trimmed away while pending.
RawEntries = list[tuple[StreamId, Fields | None]]


class ProtocolError(ValueError):
    """A stream entry that does not follow this schema (wrong version, missing fields)."""


def job_events_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:job:{job_id}"


@dataclass(frozen=True)
class JobMessage:
    job_id: uuid.UUID
    tasks: tuple[str, ...]
    image_key: str | None = None  # where storage holds the image …
    image: bytes | None = None  # … or the bytes inline, for frames that must not touch disk
    enqueued_at: float = field(default_factory=time.time)  # epoch seconds

    def to_fields(self) -> dict[str, str | bytes]:
        fields: dict[str, str | bytes] = {
            "v": str(SCHEMA_VERSION),
            "job_id": str(self.job_id),
            "tasks": ",".join(self.tasks),
            "enqueued_at": repr(self.enqueued_at),
        }
        if self.image_key is not None:
            fields["image_key"] = self.image_key
        if self.image is not None:
            fields["image"] = self.image
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> "JobMessage":
        try:
            version = int(fields[b"v"])
            if version != SCHEMA_VERSION:
                raise ProtocolError(f"unsupported job message version {version}")
            image_key = fields.get(b"image_key")
            image = fields.get(b"image")
            if (image_key is None) == (image is None):
                raise ProtocolError("job message needs exactly one of image_key, image")
            return cls(
                job_id=uuid.UUID(fields[b"job_id"].decode()),
                tasks=tuple(t for t in fields[b"tasks"].decode().split(",") if t),
                image_key=image_key.decode() if image_key is not None else None,
                image=image,
                enqueued_at=float(fields[b"enqueued_at"]),
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


async def enqueue_job(redis: "Redis", message: JobMessage, *, maxlen: int) -> StreamId:
    fields = cast(dict[Any, Any], message.to_fields())
    return cast(StreamId, await redis.xadd(JOBS, fields, maxlen=maxlen, approximate=True))


async def publish_job_event(
    redis: "Redis",
    event: dict[str, Any],
    *,
    ttl_s: int,
    firehose_maxlen: int | None = None,
) -> None:
    """Append to the job's stream (refreshing its expiry) and, if given a maxlen, the firehose."""
    key = job_events_key(event["job_id"])
    fields = cast(dict[Any, Any], _encode_event(event))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(key, fields)
        pipe.expire(key, ttl_s)
        if firehose_maxlen is not None:
            pipe.xadd(FIREHOSE, fields, maxlen=firehose_maxlen, approximate=True)
        await pipe.execute()


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


async def read_firehose(
    redis: "Redis", *, after: StreamId = b"$", block_ms: int
) -> list[tuple[StreamId, dict[str, Any]]]:
    return await _xread(redis, FIREHOSE, after, block_ms)


async def _xread(
    redis: "Redis", key: str, after: StreamId, block_ms: int
) -> list[tuple[StreamId, dict[str, Any]]]:
    response = cast(
        list[tuple[bytes, RawEntries]], await redis.xread({key: after}, block=block_ms, count=100)
    )
    if not response:
        return []
    return [(entry_id, _decode_event(fields or {})) for entry_id, fields in response[0][1]]


async def dead_letter(redis: "Redis", entry_id: StreamId, fields: Fields, reason: str) -> None:
    """Move a poisoned job message to the dead-letter stream and ack it, atomically.

    Inline image bytes are not copied, and their source entry is deleted with the ack.
    """
    dead_fields: dict[Any, Any] = {k: v for k, v in fields.items() if k != b"image"}
    dead_fields[b"source_id"] = entry_id
    dead_fields[b"error"] = reason.encode()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD, dead_fields)
        pipe.xack(JOBS, GROUP, entry_id)
        if b"image" in fields:
            pipe.xdel(JOBS, entry_id)
        await pipe.execute()


async def claim_stale(redis: "Redis", consumer: str, *, min_idle_ms: int, count: int) -> RawEntries:
    """XAUTOCLAIM job entries pending longer than min_idle_ms (their consumer died)."""
    response = await redis.xautoclaim(
        JOBS, GROUP, consumer, min_idle_ms, start_id="0-0", count=count
    )
    return cast(RawEntries, response[1])


async def read_new(redis: "Redis", consumer: str, *, count: int, block_ms: int) -> RawEntries:
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


async def ack(redis: "Redis", entry_id: StreamId, *, delete: bool = False) -> None:
    """XACK; with `delete`, also XDEL the entry (it carried an inline image), atomically."""
    if not delete:
        await redis.xack(JOBS, GROUP, entry_id)
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(JOBS, GROUP, entry_id)
        pipe.xdel(JOBS, entry_id)
        await pipe.execute()
