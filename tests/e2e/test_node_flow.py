"""Edge nodes end to end: a node client streams a video; results, fleet status, counts, privacy."""

import asyncio
import base64
from collections import Counter

import cv2
import pytest
from httpx_ws import aconnect_ws
from redis.asyncio import Redis
from sqlalchemy import select, text

from app import streams
from app.db import create_frames_redis, create_redis
from app.models import Job, JobStatus
from app.settings import RedisSettings
from clients.node import NodeClient, NodeClientConfig
from tests.conftest import (
    bearer,
    node_token,
    separate_frames_url,
    serve_app,
    shared_image,
    websocket_transport,
)
from tests.e2e.processes import RedisServer
from tests.images import decode, write_video
from workers.consumer import Consumer

T1 = shared_image("scenes/t1.jpg")
DOG = shared_image("scenes/dog.jpg")
VIDEO_SIZE = (640, 448)
RUN_TIMEOUT_S = 120


def video_frames() -> list:
    t1 = cv2.resize(decode(T1), VIDEO_SIZE)
    dog = cv2.resize(decode(DOG), VIDEO_SIZE)
    # Three scenes of four identical frames: only the first frame of each is worth sending.
    return [t1] * 4 + [dog] * 4 + [t1] * 4


async def test_a_node_streams_a_video_and_results_fleet_and_counts_agree(
    app, client, make_node, make_consumer, sessionmaker, tmp_path
):
    node = await make_node("door-cam", tasks=("faces", "objects"))
    video = write_video(tmp_path / "door.avi", video_frames(), fps=10)
    stop_worker = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop_worker))
    node_client = NodeClient(
        NodeClientConfig(
            server="http://lookout.test",
            node_id=node.id,
            secret=node.secret,
            source=str(video),
            max_interval_s=600,
            idle_after_s=600,
        ),
        transport=websocket_transport(app),
    )
    try:
        report = await asyncio.wait_for(node_client.run(), RUN_TIMEOUT_S)
    finally:
        stop_worker.set()
        await worker

    # Every frame was read; only scene changes were sent; each got its result on the socket.
    assert report.frames_read == 12
    assert report.frames_sent == 3
    assert (report.results, report.errors, report.refused) == (3, 0, 0)
    assert report.connection_failures == 0
    t1_counts, dog_counts, t1_again = (r.counts for r in report.recent)
    # Both t1 scenes: 6 faces and the people; borderline objects (a cup) may differ between
    # the two, which the video codec compressed differently.
    for counts in (t1_counts, t1_again):
        assert counts["face"] == 6 and counts["person"] >= 5, counts
    assert "face" not in dog_counts and dog_counts.get("dog", 0) >= 1
    assert all(r.latency_ms > 0 for r in report.recent)

    fleet = (await client.get("/v1/nodes")).json()
    [status] = fleet["items"]
    assert status["id"] == str(node.id)
    assert status["online"] is True
    assert status["fps"] > 0
    assert status["latency_ms_p50"] > 0
    assert status["frames_per_min"] == 3
    assert status["state"] == "active"
    assert status["version"].startswith("lookout-node/")
    assert status["last_error"] is None
    assert status["last_seen_at"].endswith("Z")

    stats = await client.get("/v1/stats/counts", params={"node_id": str(node.id), "bucket": "1h"})
    assert stats.status_code == 200, stats.text
    body = stats.json()
    # Every class of every frame adds up, the same from the report, its buckets, the jobs and
    # what the node saw come back.
    sent = Counter(t1_counts) + Counter(dog_counts) + Counter(t1_again)
    assert body["totals"] == dict(sent) == dict(report.counts)
    assert body["totals"]["face"] == 12 and body["totals"]["dog"] >= 1
    assert sum(b["frames"] for b in body["buckets"]) == 3
    bucketed: Counter[str] = Counter()
    for bucket in body["buckets"]:
        bucketed.update(bucket["counts"])
    assert bucketed == sent
    async with sessionmaker() as session:
        jobs = list(await session.scalars(select(Job).where(Job.node_id == node.id)))
    assert sum((Counter(j.counts) for j in jobs), Counter()) == sent
    assert {j.status for j in jobs} == {JobStatus.done}


# --- privacy ------------------------------------------------------------------------------

# Chunks of the frame as they would appear if stored raw (bytea shows as hex) or as base64
# (a 48-byte chunk at an offset divisible by 3 encodes the same inside the whole image).
NEEDLE_OFFSET = 3000


def raw_chunk(image: bytes) -> bytes:
    return image[NEEDLE_OFFSET : NEEDLE_OFFSET + 48]


def needles(image: bytes) -> list[str]:
    chunk = raw_chunk(image)
    return [
        chunk.hex(),
        base64.b64encode(chunk).decode(),
        base64.urlsafe_b64encode(chunk).decode(),
    ]


async def redis_keys_holding(redis: Redis, image: bytes) -> list[str]:
    """Every key of this Redis whose value (any type: stream entries, strings, hashes, sets)
    holds the image's bytes, raw or in text form."""
    wanted = [raw_chunk(image), *(n.encode() for n in needles(image))]
    found = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts = [await redis.get(key) or b""]
        elif kind == "stream":
            entries = await redis.xrange(key)
            parts = [b for _, fields in entries for item in fields.items() for b in item]
        elif kind == "hash":
            parts = [b for item in (await redis.hgetall(key)).items() for b in item]
        elif kind == "list":
            parts = await redis.lrange(key, 0, -1)
        elif kind in ("set", "zset"):
            parts = list(await (redis.smembers(key) if kind == "set" else redis.zrange(key, 0, -1)))
        else:
            raise AssertionError(f"the scan does not know Redis type {kind} ({key!r})")
        if any(needle in part for part in parts for needle in wanted):
            found.append(key.decode())
    return found


async def tables_holding(connection, image: bytes) -> list[str]:
    """Every table in the public schema with a row whose text form holds the image's bytes."""
    tables = (
        await connection.execute(
            text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        )
    ).scalars()
    found = []
    for table in tables:
        for needle in needles(image):
            hits = await connection.scalar(
                text(f'SELECT count(*) FROM "{table}" AS r WHERE strpos(r::text, :needle) > 0'),
                {"needle": needle},
            )
            if hits:
                found.append(table)
                break
    return found


async def test_the_scan_finds_image_bytes_stored_in_postgres(engine):
    """The scan below can fail: bytes stored in a table are found (then rolled back)."""
    async with engine.connect() as connection:
        await connection.execute(text("CREATE TABLE privacy_probe (blob bytea)"))
        await connection.execute(text("INSERT INTO privacy_probe VALUES (:blob)"), {"blob": T1})
        assert await tables_holding(connection, T1) == ["privacy_probe"]
        await connection.rollback()


async def test_the_scan_finds_image_bytes_kept_in_redis(redis):
    """The Redis scan below can fail: bytes in a stream entry or a string key are found."""
    await redis.xadd("probe:stream", {"blob": T1})
    await redis.set("probe:string", base64.b64encode(DOG))
    await redis.set("probe:other", b"nothing to see")
    assert sorted(await redis_keys_holding(redis, T1)) == ["probe:stream"]
    assert await redis_keys_holding(redis, DOG) == ["probe:string"]


async def test_frames_of_a_node_that_does_not_store_them_never_reach_disk_or_postgres(
    api_key, make_node, make_consumer, settings, engine, redis, frames_redis
):
    if frames_redis is not redis:
        redis_settings = settings.redis.model_copy(
            update={"frames_url": separate_frames_url(settings)}
        )
        settings = settings.model_copy(update={"redis": redis_settings})
    async with serve_app(settings, api_key) as client:
        await send_private_and_kept_frames(client, make_node, make_consumer, settings, frames_redis)

    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT id, node_id, status, image_key, processed_image_key, counts FROM jobs")
            )
        ).all()
        # Results are kept for the private node's frames; images are not.
        private_rows = [r for r in rows if r.image_key is None]
        assert len(private_rows) == 2
        assert all(r.status == "done" for r in rows)
        assert all(r.processed_image_key is None for r in private_rows)
        assert sorted(r.counts.get("face", 0) for r in private_rows) == [0, 6]
        assert await tables_holding(connection, T1) == []
        assert await tables_holding(connection, DOG) == []
        large_objects = await connection.scalar(text("SELECT count(*) FROM pg_largeobject"))
        assert large_objects == 0

    # On disk: only the control node's frame, nothing else at all (its processed image is
    # drawn when someone asks for it; nobody did).
    [kept_row] = [r for r in rows if r.image_key is not None]
    files = sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file())
    assert files == [kept_row.image_key]
    assert all(str(kept_row.id) in name for name in files)
    # In Redis: the frames were deleted when their jobs ended, and nothing else holds their
    # bytes: not the work stream (its messages name the frames), not the events.
    assert await frames_redis.keys("lookout:frame:*") == []
    messages = [streams.JobMessage.from_fields(f) for _, f in await redis.xrange(streams.JOBS)]
    assert sorted(m.frame_key is not None for m in messages) == [False, True, True]
    for server in [redis] if frames_redis is redis else [redis, frames_redis]:
        assert await redis_keys_holding(server, T1) == []
        assert await redis_keys_holding(server, DOG) == []


async def send_private_and_kept_frames(client, make_node, make_consumer, settings, frames_redis):
    """A frame over HTTP and one over the socket from a node that does not store frames, and
    one from a node that does (the control); a worker runs them all."""
    private = await make_node("private-cam")  # store_frames defaults to false
    keeper = await make_node("keeper-cam", store_frames=True)  # the control: it does store
    private_auth = bearer(node_token(settings, private.id))

    over_http = await client.post(
        "/v1/nodes/me/frames",
        content=T1,
        headers={**private_auth, "content-type": "image/jpeg"},
    )
    assert over_http.status_code == 202, over_http.text
    async with aconnect_ws("/v1/nodes/me/stream", client, headers=private_auth) as ws:
        await ws.send_bytes(DOG)
        accepted = await ws.receive_json()
        assert accepted["type"] == "accepted"
        await make_consumer(frames_redis=frames_redis).run(burst=True)
        result = await ws.receive_json()
    assert result["type"] == "result"
    kept = await client.post(
        "/v1/nodes/me/frames",
        content=T1,
        headers={**bearer(node_token(settings, keeper.id)), "content-type": "image/jpeg"},
    )
    assert kept.status_code == 202
    await make_consumer(frames_redis=frames_redis).run(burst=True)


@pytest.mark.parametrize("frames_apart", [True, False], ids=["frames-redis", "main-redis"])
async def test_a_main_redis_with_an_aof_never_writes_frames_kept_in_the_frames_redis(
    frames_apart, settings, detectors, sessionmaker, storage, make_node, redis, tmp_path
):
    """Production's Redis keeps an AOF (work in flight survives a restart). With a frames Redis
    the frame's bytes never reach that file while the job's result does; without one (the
    control) they do, which is why production sets LOOKOUT_REDIS__FRAMES_URL."""
    main = RedisServer(tmp_path / "main-redis")  # AOF, fsync every second
    main.start()
    try:
        own = settings.model_copy(
            update={
                "redis": RedisSettings(
                    url=main.url, frames_url=settings.redis.url if frames_apart else None
                )
            }
        )
        node = await make_node("aof-cam")
        async with serve_app(own) as http:
            sent = await http.post(
                "/v1/nodes/me/frames",
                content=T1,
                headers={**bearer(node_token(own, node.id)), "content-type": "image/jpeg"},
            )
            assert sent.status_code == 202, sent.text
        main_redis = create_redis(own.redis)
        frames_redis = create_frames_redis(own.redis, main_redis)
        try:
            worker = Consumer(
                own, detectors, main_redis, sessionmaker, storage, frames_redis=frames_redis
            )
            assert await worker.run(burst=True) == 1
            assert await frames_redis.keys("lookout:frame:*") == []
        finally:
            if frames_redis is not main_redis:
                await frames_redis.aclose()
            await main_redis.aclose()
        main.stop()  # SIGTERM: Redis syncs its AOF to disk, then exits
        aof = b"".join(
            p.read_bytes() for p in main.directory.rglob("*") if p.is_file() and p.suffix != ".log"
        )
    finally:
        main.close()
    job_id = sent.json()["id"]
    assert f'"type":"result","job_id":"{job_id}"'.encode() in aof  # the result was persisted
    assert (raw_chunk(T1) in aof) is not frames_apart
