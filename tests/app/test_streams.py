"""The wire protocol: message round trips, versioning, and read positions."""

import asyncio
import json
import uuid

import numpy as np
import pytest

from app import streams


def as_read(message: streams.JobMessage) -> dict[bytes, bytes]:
    """The message's fields as a stream read returns them."""
    return {k.encode(): v.encode() for k, v in message.to_fields().items()}


def test_job_message_round_trips_with_a_storage_key():
    message = streams.JobMessage(job_id=uuid.uuid4(), tasks=("faces",), image_key="abc.jpg")
    fields = as_read(message)
    assert fields[b"v"] == b"2"
    assert streams.JobMessage.from_fields(fields) == message


def test_a_node_frame_message_names_the_frame_and_carries_no_bytes():
    job_id = uuid.uuid4()
    message = streams.JobMessage.for_frame(job_id, ("faces", "objects"))
    fields = as_read(message)
    assert set(fields) == {b"v", b"job_id", b"tasks", b"enqueued_at", b"frame_key"}
    assert fields[b"frame_key"] == f"lookout:frame:{job_id}".encode()
    assert streams.JobMessage.from_fields(fields) == message


def test_a_frame_is_kept_through_every_delivery_and_reclaim():
    # 4 deliveries (3 + the one that dead-letters), each up to 60 s running + 60 s to reclaim.
    assert streams.frame_ttl_ms(job_timeout_s=60, max_deliveries=3) == 480_000


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {
                b"v": b"3",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"image_key": b"k",
                b"enqueued_at": b"1",
            },
            "version 3",
        ),
        (  # left in the stream by the previous release: the frame's bytes inline
            {
                b"v": b"1",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"image": b"\xff\xd8\xff\x00",
                b"enqueued_at": b"1",
            },
            "unsupported job message version 1",
        ),
        (
            {
                b"v": b"2",
                b"job_id": b"nope",
                b"tasks": b"faces",
                b"image_key": b"k",
                b"enqueued_at": b"1",
            },
            "malformed",
        ),
        (
            {
                b"v": b"2",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"enqueued_at": b"1",
            },
            "exactly one",
        ),
        (
            {
                b"v": b"2",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"image_key": b"k",
                b"frame_key": b"lookout:frame:x",
                b"enqueued_at": b"1",
            },
            "exactly one",
        ),
        (  # a worker deletes the frame key when the job ends: it must be this job's frame
            {
                b"v": b"2",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"frame_key": b"lookout:jobs",
                b"enqueued_at": b"1",
            },
            "not the frame of job",
        ),
        ({b"v": b"2"}, "malformed"),
    ],
)
def test_malformed_job_messages_raise_protocol_error(fields, reason):
    with pytest.raises(streams.ProtocolError, match=reason):
        streams.JobMessage.from_fields(fields)


async def test_a_frame_goes_to_the_frames_redis_with_a_ttl_and_its_message_to_the_stream(
    redis, frames_redis
):
    message = streams.JobMessage.for_frame(uuid.uuid4(), ("faces",))
    await streams.enqueue_job(
        redis,
        message,
        maxlen=100,
        frame=b"frame-bytes",
        frame_ttl_ms=5000,
        frames_redis=frames_redis,
    )
    assert await frames_redis.get(message.frame_key) == b"frame-bytes"
    assert 0 < await frames_redis.pttl(message.frame_key) <= 5000
    [(_, fields)] = await redis.xrange(streams.JOBS)
    assert b"frame-bytes" not in b"".join(fields.values())
    assert streams.JobMessage.from_fields(fields).frame_key == message.frame_key


async def test_ack_and_dead_letter_delete_the_frame_of_the_job(redis, frames_redis):
    await streams.ensure_group(redis)
    messages = [streams.JobMessage.for_frame(uuid.uuid4(), ("faces",)) for _ in range(3)]
    for message in messages:
        await streams.enqueue_job(
            redis, message, maxlen=100, frame=b"f", frame_ttl_ms=60_000, frames_redis=frames_redis
        )
    read = await streams.read_new(redis, "w", count=3, block_ms=None)
    done, also_done, dead = [(entry_id, m) for (entry_id, _), m in zip(read, messages)]
    await streams.ack_many(
        redis,
        [(entry_id, m.job_id, m.frame_key) for entry_id, m in (done, also_done)],
        frames_redis=frames_redis,
    )
    assert await frames_redis.get(dead[1].frame_key) == b"f"  # only the ended jobs' frames
    await streams.dead_letter(
        redis,
        dead[0],
        read[2][1],
        "gave up",
        frame_key=dead[1].frame_key,
        frames_redis=frames_redis,
    )
    assert await frames_redis.keys("lookout:frame:*") == []
    assert (await redis.xpending(streams.JOBS, streams.GROUP))["pending"] == 0
    [(_, letter)] = await redis.xrange(streams.DEAD)
    assert letter[b"frame_key"] == dead[1].frame_key.encode()  # the name, not the bytes


async def test_a_version_1_message_with_inline_bytes_leaves_no_bytes_behind(redis):
    """A message of the previous release is dead-lettered: its bytes are neither copied into
    the dead letter nor left in the work stream."""
    await streams.ensure_group(redis)
    job_id = str(uuid.uuid4())
    await redis.xadd(
        streams.JOBS,
        {"v": "1", "job_id": job_id, "tasks": "faces", "image": b"old-frame", "enqueued_at": "1"},
    )
    [(entry_id, fields)] = await streams.read_new(redis, "w", count=1, block_ms=None)
    await streams.dead_letter(redis, entry_id, fields, "unsupported job message version 1")
    assert await redis.xlen(streams.JOBS) == 0
    [(_, letter)] = await redis.xrange(streams.DEAD)
    assert b"image" not in letter and letter[b"job_id"] == job_id.encode()


async def test_reading_after_the_firehose_tail_sees_entries_added_before_the_read(redis):
    """The firehose handler pins the tail once; `$` would lose entries added between reads."""
    tail = await streams.firehose_tail(redis)
    published = []
    for _ in range(3):
        event = streams.make_event("result", uuid.uuid4(), job={})
        published.append(event["job_id"])
        await streams.publish_job_event(redis, event, ttl_s=60, firehose_maxlen=100)
    entries = await streams.read_firehose(redis, after=tail, block_ms=100)
    assert [event["job_id"] for _, event in entries if event is not None] == published
    assert len(entries) == 3
    # What reading from "$" at this point would have returned: nothing.
    assert await streams.read_firehose(redis, after=b"$", block_ms=50) == []


async def test_an_event_encodes_what_json_dumps_took(redis):
    """numpy numbers (a float64 is a float to json.dumps), keys that are not strings, text
    beyond ASCII: the stream's JSON took them before it was orjson's, and still does."""
    job_id = uuid.uuid4()
    event = streams.make_event(
        "result",
        job_id,
        score=np.float64(0.5),
        box=[np.float64(1.25), 3],
        counts={1: 2},
        name="Zoë 山田",
    )
    await streams.publish_job_event(redis, event, ttl_s=30, firehose_maxlen=100)
    [(_, read)] = await streams.read_job_events(redis, job_id)
    assert read == {**event, "score": 0.5, "box": [1.25, 3], "counts": {"1": 2}}
    assert json.loads(json.dumps(event)) == read  # what json.dumps made of it


async def test_job_event_stream_expires_and_replays_in_order(redis):
    job_id = uuid.uuid4()
    for status in ("queued", "running", "done"):
        await streams.publish_job_event(
            redis, streams.make_event("status", job_id, status=status), ttl_s=30
        )
    events = [event for _, event in await streams.read_job_events(redis, job_id)]
    assert [e["status"] for e in events] == ["queued", "running", "done"]
    assert streams.is_terminal(events[-1]) and not streams.is_terminal(events[0])
    assert 0 < await redis.ttl(streams.job_events_key(job_id)) <= 30


async def test_firehose_fans_out_and_drops_only_the_slow_subscriber(redis):
    from app.firehose import Firehose

    firehose = Firehose(redis, max_queued_per_client=3)
    fast, slow = firehose.subscribe(), firehose.subscribe()
    await asyncio.sleep(0.05)  # the reader has pinned the tail
    received = []
    for i in range(6):
        await streams.publish_job_event(
            redis, streams.make_event("result", uuid.uuid4(), n=i), ttl_s=60, firehose_maxlen=100
        )
        text = await asyncio.wait_for(fast.queue.get(), 5)  # fast keeps up
        assert text is not None
        received.append(json.loads(text)["n"])
    await firehose.close()
    assert received == [0, 1, 2, 3, 4, 5]
    assert slow.dropped
    assert slow.queue.get_nowait() is None and slow.queue.empty()


async def test_the_firehose_reader_moves_past_an_entry_that_is_not_an_event(redis):
    """Another version's entry (a rolling upgrade) is skipped; it used to end the reader, and
    every subscriber then waited for ever."""
    from app.firehose import Firehose

    firehose = Firehose(redis, max_queued_per_client=10)
    subscriber = firehose.subscribe()
    await asyncio.sleep(0.05)  # the reader has pinned the tail
    bad = await redis.xadd(streams.FIREHOSE, {"v": "999", "data": "{}"})
    [(entry_id, event)] = await streams.read_firehose(redis, after=b"0", block_ms=1)
    assert entry_id == bad and event is None
    await streams.publish_job_event(
        redis, streams.make_event("result", uuid.uuid4(), n=1), ttl_s=60, firehose_maxlen=100
    )
    try:
        text = await asyncio.wait_for(subscriber.queue.get(), 5)
        assert text is not None and json.loads(text)["n"] == 1
        assert firehose._reader is not None and not firehose._reader.done()
    finally:
        await firehose.close()


async def test_a_long_wait_outlasts_the_redis_socket_timeout(redis, settings, monkeypatch):
    """wait_for_job blocks in reads shorter than the socket timeout, then keeps waiting."""
    from redis.asyncio import Redis

    from app.jobs.service import wait_for_job

    impatient = Redis.from_url(settings.redis.url, socket_timeout=0.5)
    monkeypatch.setattr(streams.keys, "MAX_BLOCK_MS", 200)  # reads stay under the 0.5 s timeout
    try:
        job_id = uuid.uuid4()
        assert await wait_for_job(impatient, job_id, timeout_s=1.2) is False  # no timeout error

        async def finish_later():
            await asyncio.sleep(0.8)
            await streams.publish_job_event(
                redis, streams.make_event("status", job_id, status="done"), ttl_s=60
            )

        finisher = asyncio.create_task(finish_later())
        assert await wait_for_job(impatient, job_id, timeout_s=5) is True
        await finisher
    finally:
        await impatient.aclose()
