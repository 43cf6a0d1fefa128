"""The nodes API: registration, policy, revocation, heartbeats, fleet status, frames over HTTP."""

import asyncio
import hashlib
import json
import time

from sqlalchemy import text

from app import streams
from tests.conftest import bearer, node_token, serve_app, shared_image, with_node_settings
from tests.images import blank

T1 = shared_image("scenes/t1.jpg")
EVENT_TIMEOUT_S = 20


async def node_events(redis) -> list[dict]:
    entries = await redis.xrange(streams.FIREHOSE)
    events = [json.loads(fields[b"data"]) for _, fields in entries]
    return [e for e in events if e["type"] == streams.NODE_EVENT]


def jpeg(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "content-type": "image/jpeg"}


async def test_registration_shows_the_secret_once_and_stores_only_its_hash(client, engine):
    response = await client.post("/v1/nodes", json={"name": "gate-cam"})
    assert response.status_code == 201, response.text
    node = response.json()
    secret = node["secret"]
    assert secret.startswith("lkn_") and len(secret) > 40
    assert node["tasks"] == ["faces"]
    assert node["store_frames"] is False
    assert node["online"] is False
    assert node["created_at"].endswith("Z")

    listed = (await client.get("/v1/nodes")).json()["items"]
    assert [n["id"] for n in listed] == [node["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in (await client.get(f"/v1/nodes/{node['id']}")).json()
    async with engine.connect() as connection:
        row_text = await connection.scalar(text("SELECT nodes::text FROM nodes"))
        stored_hash = await connection.scalar(text("SELECT secret_hash FROM nodes"))
    assert secret not in row_text
    assert stored_hash == "sha256$" + hashlib.sha256(secret.encode()).hexdigest()

    exchange = await client.post("/v1/nodes/token", json={"node_id": node["id"], "secret": secret})
    assert exchange.status_code == 200


async def test_names_are_unique_among_nodes_in_service(client):
    first = (await client.post("/v1/nodes", json={"name": "cam"})).json()
    duplicate = await client.post("/v1/nodes", json={"name": "cam"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "conflict"
    assert (await client.delete(f"/v1/nodes/{first['id']}")).status_code == 204
    assert (await client.post("/v1/nodes", json={"name": "cam"})).status_code == 201


async def test_a_node_policy_may_ask_for_text_and_plates(client):
    node = (await client.post("/v1/nodes", json={"name": "gate", "tasks": ["plates"]})).json()
    assert node["tasks"] == ["plates"]
    changed = await client.patch(f"/v1/nodes/{node['id']}", json={"tasks": ["text", "objects"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["tasks"] == ["text", "objects"]


async def test_registration_refuses_unknown_tasks_and_bad_names(client):
    unknown = await client.post("/v1/nodes", json={"name": "cam", "tasks": ["faces", "ufo"]})
    assert unknown.status_code == 422
    assert "ufo" in unknown.json()["detail"]
    assert (await client.post("/v1/nodes", json={"name": ""})).status_code == 422
    assert (await client.post("/v1/nodes", json={"name": "../etc"})).status_code == 422


async def test_revoked_nodes_leave_the_fleet_list_and_are_announced(client, make_node, redis):
    node = await make_node()
    assert (await client.delete(f"/v1/nodes/{node.id}")).status_code == 204
    assert (await client.delete(f"/v1/nodes/{node.id}")).status_code == 204  # idempotent
    assert (await client.get("/v1/nodes")).json()["items"] == []
    everything = (await client.get("/v1/nodes", params={"include_revoked": "true"})).json()
    assert everything["items"][0]["revoked_at"] is not None
    assert [e["change"] for e in await node_events(redis)] == ["revoked"]
    assert (
        await client.delete("/v1/nodes/00000000-0000-0000-0000-000000000000")
    ).status_code == 404


async def test_heartbeats_fill_the_fleet_view_and_changes_go_on_the_firehose(
    client, settings, make_node, redis
):
    node = await make_node()
    headers = bearer(node_token(settings, node.id))
    beat = {"fps": 12.5, "latency_ms_p50": 80.0, "state": "active", "version": "test/1"}
    response = await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)
    assert response.status_code == 200, response.text
    ack = response.json()
    assert 0 < ack["next_heartbeat_s"] < ack["offline_after_s"]

    await client.post(
        "/v1/nodes/me/heartbeat",
        json={**beat, "state": "idle", "dark_scene": True, "last_error": "lens fogged"},
        headers=headers,
    )
    await client.post("/v1/nodes/me/heartbeat", json={**beat, "state": "idle"}, headers=headers)

    [status] = (await client.get("/v1/nodes")).json()["items"]
    assert status == {
        **status,
        "online": True,
        "fps": 12.5,
        "latency_ms_p50": 80.0,
        "state": "idle",
        "dark_scene": False,
        "version": "test/1",
        "last_error": None,
    }
    events = await node_events(redis)
    assert [(e["change"], e["state"], e["dark_scene"]) for e in events] == [
        ("online", "active", False),  # the first heartbeat of a node that was offline
        ("state", "idle", True),
        ("dark_scene", "idle", True),
        ("dark_scene", "idle", False),
    ]
    assert all(e["node_id"] == str(node.id) and e["name"] == node.name for e in events)


async def test_a_node_brought_online_by_a_heartbeat_is_announced_with_its_figures(
    client, settings, make_node, redis
):
    headers = bearer(node_token(settings, (await make_node()).id))
    beat = {"fps": 3, "state": "idle"}
    assert (await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)).is_success
    # One event, sent once the heartbeat was stored: a dashboard that refreshes on it sees
    # the figures the node just reported, not the row from before them.
    [event] = await node_events(redis)
    assert (event["change"], event["online"], event["state"]) == ("online", True, "idle")


async def test_heartbeats_are_validated(client, settings, make_node):
    headers = bearer(node_token(settings, (await make_node()).id))
    for bad in ({"fps": -1, "state": "active"}, {"fps": 1, "state": "asleep"}, {"state": "idle"}):
        response = await client.post("/v1/nodes/me/heartbeat", json=bad, headers=headers)
        assert response.status_code == 422, bad


async def test_a_silent_node_goes_offline_and_that_is_announced(
    settings, make_node, redis, api_key
):
    node = await make_node()
    async with serve_app(with_node_settings(settings, offline_after_s=0.5), api_key) as client:
        headers = bearer(node_token(settings, node.id))
        beat = {"fps": 1, "state": "active"}
        assert (await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)).is_success
        fleet = await client.get("/v1/nodes")
        assert fleet.status_code == 200, fleet.text
        assert fleet.json()["items"][0]["online"] is True
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            if [e["change"] for e in await node_events(redis)] == ["online", "offline"]:
                break
            await asyncio.sleep(0.1)
        assert [e["change"] for e in await node_events(redis)] == ["online", "offline"]
        [status] = (await client.get("/v1/nodes")).json()["items"]
        assert status["online"] is False
        assert status["last_seen_at"] is not None
        # Heard from again: back online, announced once.
        await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)
        changes = [e["change"] for e in await node_events(redis)]
        assert changes[:3] == ["online", "offline", "online"]


async def test_a_goodbye_heartbeat_takes_the_node_offline_now_with_no_stale_figures(
    settings, make_node, redis, api_key
):
    node = await make_node()
    async with serve_app(settings, api_key) as client:  # offline_after_s: the default 30 s
        headers = bearer(node_token(settings, node.id))
        beat = {"fps": 12.5, "latency_ms_p50": 80, "state": "active", "dark_scene": True}
        assert (await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)).is_success
        [status] = (await client.get("/v1/nodes")).json()["items"]
        assert (status["online"], status["fps"], status["dark_scene"]) == (True, 12.5, True)
        assert status["send_fps"] == 0.0  # capture rate and send rate side by side

        goodbye = {**beat, "goodbye": True}
        assert (
            await client.post("/v1/nodes/me/heartbeat", json=goodbye, headers=headers)
        ).is_success
        [status] = (await client.get("/v1/nodes")).json()["items"]
        assert status["online"] is False
        assert (status["fps"], status["latency_ms_p50"], status["state"]) == (None, None, None)
        assert status["dark_scene"] is False
        assert status["last_seen_at"] is not None
        assert [e["change"] for e in await node_events(redis)][-1] == "offline"
        # Back again: online with its figures.
        await client.post("/v1/nodes/me/heartbeat", json=beat, headers=headers)
        [status] = (await client.get("/v1/nodes")).json()["items"]
        assert (status["online"], status["fps"]) == (True, 12.5)


async def test_a_frame_over_http_becomes_a_job_under_the_node_s_policy(
    client, settings, make_node, make_consumer, storage
):
    node = await make_node()
    headers = jpeg(bearer(node_token(settings, node.id)))
    accepted = await client.post("/v1/nodes/me/frames", content=T1, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert (job["status"], job["node_id"], job["tasks"]) == ("queued", str(node.id), ["faces"])
    # Never stored: no picture to show, and the links say so rather than point at a 404.
    assert (job["links"]["image"], job["links"]["processed_image"]) == (None, None)
    await make_consumer().run(burst=True)
    own = (await client.get(f"/v1/nodes/me/jobs/{job['id']}", headers=headers)).json()
    assert own["counts"] == {"face": 6}
    assert (own["links"]["image"], own["links"]["processed_image"]) == (None, None)
    listed = (await client.get("/v1/jobs")).json()["items"]
    assert [(j["links"]["image"], j["links"]["processed_image"]) for j in listed] == [(None, None)]
    for path in ("image", "processed-image"):  # asked for anyway: a clear 404
        response = await client.get(f"/v1/jobs/{job['id']}/{path}")
        assert response.status_code == 404
        assert "stored" in response.json()["detail"]
    assert not storage.root.exists() or list(storage.root.iterdir()) == []

    # The policy changes: this node's frames are now kept.
    patched = await client.patch(f"/v1/nodes/{node.id}", json={"store_frames": True})
    assert patched.json()["store_frames"] is True
    stored = (await client.post("/v1/nodes/me/frames", content=T1, headers=headers)).json()
    assert (await client.get(stored["links"]["image"])).content == T1
    assert stored["links"]["processed_image"] == f"/v1/jobs/{stored['id']}/processed-image"


async def test_a_node_s_jobs_carry_its_name_and_uploads_none(
    client, settings, make_node, make_consumer, redis
):
    node = await make_node("gate-cam")
    headers = jpeg(bearer(node_token(settings, node.id)))
    frame = (await client.post("/v1/nodes/me/frames", content=T1, headers=headers)).json()
    assert frame["node_name"] == "gate-cam"
    upload = (await client.post("/v1/images", files={"image": ("t1.jpg", T1)})).json()
    await make_consumer().run(burst=True)

    assert (await client.get(f"/v1/jobs/{frame['id']}")).json()["node_name"] == "gate-cam"
    listed = (await client.get("/v1/jobs")).json()["items"]
    assert {j["id"]: j["node_name"] for j in listed} == {
        frame["id"]: "gate-cam",
        upload["id"]: None,
    }
    entries = await redis.xrange(streams.FIREHOSE)
    events = [json.loads(fields[b"data"]) for _, fields in entries]
    assert {e["job_id"]: e["job"]["node_name"] for e in events if e["type"] == "result"} == {
        frame["id"]: "gate-cam",
        upload["id"]: None,
    }


async def test_wait_returns_the_frame_s_result_inline(client, settings, make_node, make_consumer):
    node = await make_node()
    headers = jpeg(bearer(node_token(settings, node.id)))
    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop))  # a running worker, not a burst
    response = await client.post("/v1/nodes/me/frames?wait=20", content=T1, headers=headers)
    stop.set()
    await worker
    assert response.status_code == 200, response.text
    assert len(response.json()["detections"]) == 6


async def test_bad_frames_get_4xx_and_create_nothing(client, settings, make_node, engine):
    headers = jpeg(bearer(node_token(settings, (await make_node()).id)))
    cases = {
        b"": 422,
        b"GIF89a not supported": 415,
        T1[: len(T1) // 2]: 422,
        b"\xff\xd8\xff" + b"\0" * (settings.nodes.max_frame_bytes + 1): 413,
    }
    for body, expected in cases.items():
        response = await client.post("/v1/nodes/me/frames", content=body, headers=headers)
        assert response.status_code == expected, (expected, response.text)
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM jobs")) == 0


async def test_a_node_with_too_many_frames_waiting_gets_429(settings, make_node):
    node = await make_node()
    async with serve_app(with_node_settings(settings, max_queued_frames=2)) as client:
        headers = jpeg(bearer(node_token(settings, node.id)))
        statuses = [
            (await client.post("/v1/nodes/me/frames", content=blank(), headers=headers)).status_code
            for _ in range(3)
        ]
        assert statuses == [202, 202, 429]
        other = await make_node("other")
        other_headers = jpeg(bearer(node_token(settings, other.id)))
        response = await client.post("/v1/nodes/me/frames", content=blank(), headers=other_headers)
        assert response.status_code == 202  # the cap is per node
