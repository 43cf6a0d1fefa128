"""Edge nodes end to end: a node client streams a video; results, fleet status, counts, privacy."""

import asyncio
import base64

import cv2
from httpx_ws import aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from sqlalchemy import select, text

from app import streams
from app.models import Job, JobStatus
from app.nodes.client import NodeClient, NodeClientConfig
from tests.conftest import bearer, node_token, shared_image
from tests.images import decode, write_video

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
    node = await make_node("door-cam")
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
        transport=ASGIWebSocketTransport(app),
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
    assert [r.counts for r in report.recent] == [{"face": 6}, {}, {"face": 6}]
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
    assert status["last_seen_at"].endswith("+00:00")

    stats = await client.get("/v1/stats/counts", params={"node_id": str(node.id), "bucket": "1h"})
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["totals"] == {"face": 12} == dict(report.counts)
    assert sum(b["frames"] for b in body["buckets"]) == 3
    assert sum(b["counts"].get("face", 0) for b in body["buckets"]) == 12
    async with sessionmaker() as session:
        jobs = list(await session.scalars(select(Job).where(Job.node_id == node.id)))
    assert sum(j.counts.get("face", 0) for j in jobs) == 12
    assert {j.status for j in jobs} == {JobStatus.done}


# --- privacy ------------------------------------------------------------------------------

# Chunks of the frame as they would appear if stored raw (bytea shows as hex) or as base64
# (a 48-byte chunk at an offset divisible by 3 encodes the same inside the whole image).
NEEDLE_OFFSET = 3000


def needles(image: bytes) -> list[str]:
    chunk = image[NEEDLE_OFFSET : NEEDLE_OFFSET + 48]
    return [
        chunk.hex(),
        base64.b64encode(chunk).decode(),
        base64.urlsafe_b64encode(chunk).decode(),
    ]


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


async def test_frames_of_a_node_that_does_not_store_them_never_reach_disk_or_postgres(
    client, make_node, make_consumer, settings, engine, redis
):
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
        await make_consumer().run(burst=True)
        result = await ws.receive_json()
    assert result["type"] == "result"
    kept = await client.post(
        "/v1/nodes/me/frames",
        content=T1,
        headers={**bearer(node_token(settings, keeper.id)), "content-type": "image/jpeg"},
    )
    assert kept.status_code == 202
    await make_consumer().run(burst=True)

    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT id, node_id, status, image_key, processed_image_key, counts FROM jobs")
            )
        ).all()
        # Results are kept for the private node's frames; images are not.
        private_rows = [r for r in rows if r.node_id == private.id]
        assert len(private_rows) == 2
        assert all(r.status == "done" for r in rows)
        assert all(r.image_key is None and r.processed_image_key is None for r in private_rows)
        assert sorted(r.counts.get("face", 0) for r in private_rows) == [0, 6]
        assert await tables_holding(connection, T1) == []
        assert await tables_holding(connection, DOG) == []
        large_objects = await connection.scalar(text("SELECT count(*) FROM pg_largeobject"))
        assert large_objects == 0

    # On disk: only the control node's frame and its annotated copy, nothing else at all.
    [kept_row] = [r for r in rows if r.node_id == keeper.id]
    files = sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file())
    assert files == sorted([kept_row.image_key, kept_row.processed_image_key])
    assert all(str(kept_row.id) in name for name in files)
    # In Redis: the inline frames left the work stream with their ack; nothing carries bytes.
    entries = await redis.xrange(streams.JOBS)
    assert all(b"image" not in fields for _, fields in entries)
    assert len(entries) == 1  # the control's message (image_key only) stays until trimmed
