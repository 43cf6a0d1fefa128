"""Job events (status | result | error) and node events: their shape on the wire, publish, read."""

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.streams import keys
from app.streams.acks import append_acks, frame_keys_of
from app.streams.frames import delete_separate_frames
from app.streams.keys import (
    FIREHOSE,
    SCHEMA_VERSION,
    AckEntry,
    ProtocolError,
    RawEntries,
    StreamId,
    job_events_key,
)
from app.timestamps import now_rfc3339

EventType = Literal["status", "result", "error"]
# A node came online, went offline, was revoked, or changed state (active | idle, dark scene).
NODE_EVENT = "node"
NodeChange = Literal["online", "offline", "revoked", "state", "dark_scene"]


def make_event(event_type: EventType, job_id: uuid.UUID, **payload: Any) -> dict[str, Any]:
    return {"type": event_type, "job_id": str(job_id), "at": now_rfc3339(), **payload}


def make_node_event(
    change: NodeChange, node_id: uuid.UUID, *, name: str, **snapshot: Any
) -> dict[str, Any]:
    """A firehose event for a node: what changed, and the node's status fields after the change."""
    return {
        "type": NODE_EVENT,
        "change": change,
        "node_id": str(node_id),
        "name": name,
        "at": now_rfc3339(),
        **snapshot,
    }


def is_terminal(event: dict[str, Any]) -> bool:
    """The last event of a job: its final status."""
    return event.get("type") == "status" and event.get("status") in ("done", "failed")


def encode_event(event: dict[str, Any]) -> dict[str, str]:
    return {"v": str(SCHEMA_VERSION), "data": json.dumps(event, separators=(",", ":"))}


def decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    if int(fields.get(b"v", b"0")) != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported event version {fields.get(b'v')!r}")
    event: dict[str, Any] = json.loads(fields[b"data"])
    return event


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
    atomic: bool = True,
) -> None:
    """Append several events in one round trip; with `atomic` (the default) in one MULTI:
    readers see all of them or none.

    With a firehose maxlen, events whose type is in `firehose_types` (all when None) are also
    appended to the firehose. `acks` (as for `ack_many`) are done in the same MULTI, after the
    events: an entry is acked exactly when its job's events are published, one round trip.
    `atomic=False` (no MULTI/EXEC: two commands fewer) is for events that need no such bond,
    e.g. a batch's `running` statuses; it takes no acks. Each job's events keep their order.
    """
    if acks and not atomic:
        raise ValueError("acks go with their events in one MULTI")
    wanted = set(firehose_types) if firehose_types is not None else None
    in_pipe = await delete_separate_frames(redis, frame_keys_of(acks), frames_redis)
    async with redis.pipeline(transaction=atomic) as pipe:
        append_events(pipe, events, ttl_s=ttl_s, firehose_maxlen=firehose_maxlen, wanted=wanted)
        append_acks(pipe, acks, delete_frames=in_pipe)
        await pipe.execute()


def append_events(
    pipe: "Pipeline",
    events: Sequence[dict[str, Any]],
    *,
    ttl_s: int,
    firehose_maxlen: int | None,
    wanted: set[EventType] | None,
) -> None:
    """XADD each event to its job's stream (and the firehose, if wanted), then one EXPIRE per
    job stream, after its last event here: the stream expires ttl_s after its latest event."""
    keys: dict[str, None] = {}
    for event in events:
        key = job_events_key(event["job_id"])
        keys[key] = None
        fields = cast(dict[Any, Any], encode_event(event))
        pipe.xadd(key, fields)
        if firehose_maxlen is not None and (wanted is None or event["type"] in wanted):
            pipe.xadd(FIREHOSE, fields, maxlen=firehose_maxlen, approximate=True)
    for key in keys:
        pipe.expire(key, ttl_s)


async def has_terminal_event(redis: "Redis", job_id: uuid.UUID) -> bool:
    """Whether the job's event stream ends with its final status."""
    last = cast(RawEntries, await redis.xrevrange(job_events_key(job_id), count=1))
    return bool(last) and is_terminal(decode_event(last[0][1] or {}))


async def publish_firehose_event(redis: "Redis", event: dict[str, Any], *, maxlen: int) -> None:
    """An event for the firehose alone (node status changes)."""
    fields = cast(dict[Any, Any], encode_event(event))
    await redis.xadd(FIREHOSE, fields, maxlen=maxlen, approximate=True)


async def read_job_events(
    redis: "Redis", job_id: uuid.UUID, *, after: StreamId = b"0", block_ms: int | None = None
) -> list[tuple[StreamId, dict[str, Any]]]:
    """Events of one job after entry id `after`; blocks up to block_ms for the first new one."""
    if block_ms is None:
        start = b"(" + after if after != b"0" else b"-"
        entries = cast(RawEntries, await redis.xrange(job_events_key(job_id), min=start))
        return [(entry_id, decode_event(fields or {})) for entry_id, fields in entries]
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
    block_ms = min(block_ms, keys.MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]], await redis.xread({key: after}, block=block_ms, count=100)
    )
    if not response:
        return []
    return [(entry_id, decode_event(fields or {})) for entry_id, fields in response[0][1]]
