"""The wire protocol: message round trips, versioning, and read positions."""

import asyncio
import uuid

import pytest

from app import streams


def test_job_message_round_trips_with_a_storage_key():
    message = streams.JobMessage(job_id=uuid.uuid4(), tasks=("faces",), image_key="abc.jpg")
    fields = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in message.to_fields().items()
    }
    assert fields[b"v"] == b"1"
    assert streams.JobMessage.from_fields(fields) == message


def test_job_message_round_trips_with_inline_bytes():
    message = streams.JobMessage(job_id=uuid.uuid4(), tasks=("faces",), image=b"\xff\xd8\xff\x00")
    fields = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in message.to_fields().items()
    }
    assert streams.JobMessage.from_fields(fields).image == b"\xff\xd8\xff\x00"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {
                b"v": b"2",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"image_key": b"k",
                b"enqueued_at": b"1",
            },
            "version 2",
        ),
        (
            {
                b"v": b"1",
                b"job_id": b"nope",
                b"tasks": b"faces",
                b"image_key": b"k",
                b"enqueued_at": b"1",
            },
            "malformed",
        ),
        (
            {
                b"v": b"1",
                b"job_id": str(uuid.uuid4()).encode(),
                b"tasks": b"faces",
                b"enqueued_at": b"1",
            },
            "exactly one",
        ),
        ({b"v": b"1"}, "malformed"),
    ],
)
def test_malformed_job_messages_raise_protocol_error(fields, reason):
    with pytest.raises(streams.ProtocolError, match=reason):
        streams.JobMessage.from_fields(fields)


async def test_reading_after_the_firehose_tail_sees_entries_added_before_the_read(redis):
    """The firehose handler pins the tail once; `$` would lose entries added between reads."""
    tail = await streams.firehose_tail(redis)
    published = []
    for _ in range(3):
        event = streams.make_event("result", uuid.uuid4(), job={})
        published.append(event["job_id"])
        await streams.publish_job_event(redis, event, ttl_s=60, firehose_maxlen=100)
    entries = await streams.read_firehose(redis, after=tail, block_ms=100)
    assert [event["job_id"] for _, event in entries] == published
    # What reading from "$" at this point would have returned: nothing.
    assert await streams.read_firehose(redis, after=b"$", block_ms=50) == []


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
        received.append((await asyncio.wait_for(fast.queue.get(), 5))["n"])  # fast keeps up
    await firehose.close()
    assert received == [0, 1, 2, 3, 4, 5]
    assert slow.dropped
    assert slow.queue.get_nowait() is None and slow.queue.empty()


async def test_a_long_wait_outlasts_the_redis_socket_timeout(redis, settings, monkeypatch):
    """wait_for_job blocks in reads shorter than the socket timeout, then keeps waiting."""
    from redis.asyncio import Redis

    from app.jobs.service import wait_for_job

    impatient = Redis.from_url(settings.redis.url, socket_timeout=0.5)
    monkeypatch.setattr(streams, "MAX_BLOCK_MS", 200)  # reads stay under the 0.5 s timeout
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
