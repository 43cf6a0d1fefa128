"""Job events (status | result | error) and node events: their shape on the wire, publish, read."""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

import orjson
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


def encode_event(event: dict[str, Any]) -> dict[str, str | bytes]:
    return _encode(event)


def encode_events(events: Sequence[dict[str, Any]]) -> dict[str, str | bytes]:
    """One job-stream entry for a job's events of one step (a result and its final status):
    `data` holds the event itself when there is one, else the list of them, in order."""
    return _encode(events[0] if len(events) == 1 else list(events))


def decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A firehose entry: always one event."""
    event: dict[str, Any] = _decode(fields)
    return event


def decode_events(fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """A job-stream entry: one event, or several (encode_events)."""
    data: dict[str, Any] | list[dict[str, Any]] = _decode(fields)
    return data if isinstance(data, list) else [data]


# What json.dumps took, orjson takes with these: keys that are not strings, numpy numbers
# (json.dumps wrote a numpy float64, a float subclass; orjson refuses one unless told).
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _encode(data: Any) -> dict[str, str | bytes]:
    # orjson: a tenth of json.dumps's CPU; the same JSON text, but UTF-8 where json.dumps wrote
    # \uXXXX escapes, and null for NaN (which json.dumps wrote, and no JSON parser reads).
    return {"v": str(SCHEMA_VERSION), "data": orjson.dumps(data, option=_ORJSON_OPTIONS)}


def _decode(fields: dict[bytes, bytes]) -> Any:
    if int(fields.get(b"v", b"0")) != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported event version {fields.get(b'v')!r}")
    return orjson.loads(fields[b"data"])


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
    """Append several events in one round trip (a pipeline, no MULTI): each job's events here
    go in one entry of its stream, so its readers see all of them or none.

    With a firehose maxlen, events whose type is in `firehose_types` (all when None) are also
    appended to the firehose, one entry each. `acks` (as for `ack_many`) follow the events in
    the pipeline, which Redis runs in order: an entry is acked only once its job's events are
    in (if the connection drops between, the entry is redelivered and the worker finds its
    job finished). MULTI/EXEC would add two commands a batch and guard nothing more: Redis
    does not roll a transaction back when one of its commands fails either.
    """
    wanted = set(firehose_types) if firehose_types is not None else None
    in_pipe = await delete_separate_frames(redis, frame_keys_of(acks), frames_redis)
    async with redis.pipeline(transaction=False) as pipe:
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
    """XADD each job's events as one entry of its stream, then each wanted event to the
    firehose (a firehose reader that turns to the job's stream finds its entry there), then one
    EXPIRE per job stream: it expires ttl_s after its latest entry."""
    by_job: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_job.setdefault(job_events_key(event["job_id"]), []).append(event)
    for key, job_events in by_job.items():
        pipe.xadd(key, cast(dict[Any, Any], encode_events(job_events)))
    if firehose_maxlen is not None:
        for event in events:
            if wanted is None or event["type"] in wanted:
                fields = cast(dict[Any, Any], encode_event(event))
                pipe.xadd(FIREHOSE, fields, maxlen=firehose_maxlen, approximate=True)
    for key in by_job:
        pipe.expire(key, ttl_s)


async def has_terminal_event(redis: "Redis", job_id: uuid.UUID) -> bool:
    """Whether the job's event stream ends with its final status."""
    last = cast(RawEntries, await redis.xrevrange(job_events_key(job_id), count=1))
    return bool(last) and is_terminal(decode_events(last[0][1] or {})[-1])


async def publish_firehose_event(redis: "Redis", event: dict[str, Any], *, maxlen: int) -> None:
    """An event for the firehose alone (node status changes)."""
    fields = cast(dict[Any, Any], encode_event(event))
    await redis.xadd(FIREHOSE, fields, maxlen=maxlen, approximate=True)


async def read_job_events(
    redis: "Redis", job_id: uuid.UUID, *, after: StreamId = b"0", block_ms: int | None = None
) -> list[tuple[StreamId, dict[str, Any]]]:
    """Events of one job after entry id `after`, each with the id of its entry (an entry may
    hold several); blocks up to block_ms for the first new entry."""
    if block_ms is None:
        start = b"(" + after if after != b"0" else b"-"
        entries = cast(RawEntries, await redis.xrange(job_events_key(job_id), min=start))
    else:
        entries = await _xread(redis, job_events_key(job_id), after, block_ms)
    return [
        (entry_id, event) for entry_id, fields in entries for event in decode_events(fields or {})
    ]


async def firehose_tail(redis: "Redis") -> StreamId:
    """The id of the newest firehose entry: read after it to get only what comes next.

    Reading with "$" instead would miss entries added between two blocking reads.
    """
    newest = cast(RawEntries, await redis.xrevrange(FIREHOSE, count=1))
    return newest[0][0] if newest else b"0-0"


async def read_firehose(
    redis: "Redis", *, after: StreamId, block_ms: int
) -> list[tuple[StreamId, dict[str, Any] | None]]:
    """Firehose entries after `after` (decode_firehose_entries)."""
    return decode_firehose_entries(await _xread(redis, FIREHOSE, after, block_ms))


def decode_firehose_entries(entries: RawEntries) -> list[tuple[StreamId, dict[str, Any] | None]]:
    """Each entry's event; None for an entry that is trimmed or not a valid event (another
    version's, during a rolling upgrade), so that its reader moves past it."""
    decoded: list[tuple[StreamId, dict[str, Any] | None]] = []
    for entry_id, fields in entries:
        try:
            decoded.append((entry_id, decode_event(fields) if fields else None))
        except (ProtocolError, ValueError, KeyError):
            decoded.append((entry_id, None))
    return decoded


async def _xread(redis: "Redis", key: str, after: StreamId, block_ms: int) -> RawEntries:
    block_ms = min(block_ms, keys.MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]], await redis.xread({key: after}, block=block_ms, count=100)
    )
    return response[0][1] if response else []
