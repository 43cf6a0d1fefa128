"""Upload → stream → worker → Postgres → WebSocket, with the real parts and the real model."""

import asyncio
import time

import cv2
import numpy as np
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws

from app import streams
from tests.conftest import serve_app, shared_image

T1 = shared_image("scenes/t1.jpg")


async def assert_closed_normally(ws) -> None:  # type: ignore[no-untyped-def]
    """The job has ended: the server closes the socket (1000) instead of sending more."""
    with pytest.raises(WebSocketDisconnect) as closed:
        await ws.receive_json(timeout=10)
    assert closed.value.code == 1000


async def test_t1_upload_streams_events_and_stores_six_faces(client, make_consumer, storage):
    response = await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["links"]["events"] == f"/v1/jobs/{job['id']}/events"

    async with aconnect_ws(job["links"]["events"], client) as ws:
        first = await ws.receive_json()
        assert first == {**first, "type": "status", "status": "queued", "job_id": job["id"]}
        handled = await make_consumer().run(burst=True)  # the worker runs while we listen
        assert handled == 1
        events = [await ws.receive_json() for _ in range(3)]
        await assert_closed_normally(ws)

    assert [(e["type"], e.get("status")) for e in events] == [
        ("status", "running"),
        ("result", None),
        ("status", "done"),
    ]
    result = events[1]["job"]
    assert result["counts"] == {"face": 6}
    assert len(result["detections"]) == 6

    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["status"] == "done"
    assert len(detail["detections"]) == 6
    assert detail["timings"]["inference_ms"] > 0
    for face in detail["detections"]:
        x1, y1, x2, y2 = face["box"]
        assert face["score"] >= 0.5
        assert len(face["landmarks"]) == 5
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])

    original = await client.get(job["links"]["image"])
    assert original.status_code == 200
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == T1


async def test_the_processed_image_is_drawn_on_first_request_then_cached(
    client, make_consumer, storage
):
    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    await make_consumer().run(burst=True)
    # The worker drew nothing: only the upload is stored.
    assert [p.name for p in storage.root.iterdir()] == [f"{job['id']}.jpg"]

    processed = await client.get(job["links"]["processed_image"])
    assert processed.status_code == 200
    assert processed.headers["content-type"] == "image/jpeg"
    annotated = cv2.imdecode(np.frombuffer(processed.content, np.uint8), cv2.IMREAD_COLOR)
    source = cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR)
    assert annotated is not None and annotated.shape == source.shape == (886, 1280, 3)
    # Drawn where the faces are (each box's top edge), left alone far from every detection.
    faces = (await client.get(job["links"]["self"])).json()["detections"]
    assert len(faces) == 6
    difference = np.abs(annotated.astype(int) - source.astype(int)).max(axis=2)
    for face in faces:
        x1, y1, x2, _ = (round(v) for v in face["box"])
        assert np.median(difference[y1, x1:x2]) > 60, face["box"]
    untouched = np.ones(difference.shape, bool)
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        untouched[max(0, y1 - 60) : y2 + 60, max(0, x1 - 20) : x2 + 200] = False  # + caption
    assert np.median(difference[untouched]) < 8  # JPEG re-encoding noise only

    # Cached: stored under the job, and the next request serves those very bytes.
    assert sorted(p.name for p in storage.root.iterdir()) == sorted(
        [f"{job['id']}.jpg", f"{job['id']}.processed.jpg"]
    )
    assert storage.get(f"{job['id']}.processed.jpg") == processed.content
    again = await client.get(job["links"]["processed_image"])
    assert again.content == processed.content


async def test_events_replay_after_the_job_finished(client, make_consumer):
    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    await make_consumer().run(burst=True)
    async with aconnect_ws(job["links"]["events"], client) as ws:
        events = [await ws.receive_json() for _ in range(4)]
        await assert_closed_normally(ws)
    assert [e.get("status", e["type"]) for e in events] == ["queued", "running", "result", "done"]


async def test_events_come_from_postgres_once_the_event_stream_expired(
    client, make_consumer, redis
):
    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    await make_consumer().run(burst=True)
    await redis.delete(streams.job_events_key(job["id"]))  # past job_events_ttl_s
    async with aconnect_ws(job["links"]["events"], client) as ws:
        events = [await ws.receive_json() for _ in range(2)]
        await assert_closed_normally(ws)
    assert [e.get("status", e["type"]) for e in events] == ["result", "done"]
    assert events[0]["job"]["counts"] == {"face": 6}


async def test_wait_returns_the_finished_job_inline(client, make_consumer):
    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop))  # a running worker, not a burst
    response = await client.post(
        "/v1/images?wait=20", files={"image": ("t1.jpg", T1, "image/jpeg")}
    )
    stop.set()
    await worker
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done"
    assert len(body["detections"]) == 6


async def test_wait_times_out_with_202_when_no_worker_runs(client):
    response = await client.post(
        "/v1/images?wait=0.3", files={"image": ("t1.jpg", T1, "image/jpeg")}
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued"


async def test_wait_is_capped_at_max_wait_s(settings, api_key):
    """?wait= longer than api.max_wait_s waits max_wait_s, then answers 202 with the job queued."""
    capped = settings.model_copy(
        update={"api": settings.api.model_copy(update={"max_wait_s": 0.5})}
    )
    async with serve_app(capped, api_key) as client:
        started = time.monotonic()
        async with asyncio.timeout(60):  # uncapped, it would wait an hour
            response = await client.post(
                "/v1/images?wait=3600", files={"image": ("t1.jpg", T1, "image/jpeg")}
            )
        waited_s = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        assert waited_s >= 0.5  # it did wait, up to the cap
        job = (await client.get(f"/v1/jobs/{response.json()['id']}")).json()
        assert job["status"] == "queued"


async def test_firehose_streams_every_finished_job(client, make_consumer):
    async with aconnect_ws("/v1/ws", client) as ws:
        await asyncio.sleep(0.1)  # let the handler start reading from the stream's end
        for _ in range(2):
            await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
        await make_consumer().run(burst=True)
        events = [await ws.receive_json() for _ in range(2)]
    assert [e["type"] for e in events] == ["result", "result"]
    assert all(e["job"]["counts"] == {"face": 6} for e in events)
    assert all(e["job"]["links"]["processed_image"].endswith("/processed-image") for e in events)


async def test_delete_removes_the_job_its_image_and_detections(
    client, make_consumer, storage, engine
):
    from sqlalchemy import text

    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    await make_consumer().run(burst=True)
    assert (await client.get(job["links"]["processed_image"])).status_code == 200
    assert len(list(storage.root.iterdir())) == 2  # original + the processed image, drawn

    assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 204
    assert (await client.get(f"/v1/jobs/{job['id']}")).status_code == 404
    assert (await client.get(job["links"]["image"])).status_code == 404
    assert (await client.get(job["links"]["processed_image"])).status_code == 404
    assert list(storage.root.iterdir()) == []
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM detections"))).scalar() == 0
