"""The node socket: frames in, results out, bounded in flight; auth at connect and per frame."""

import asyncio
import json
import socket
import time
from datetime import UTC, datetime, timedelta

import cv2
import pytest
import uvicorn
from httpx_ws import WebSocketDisconnect, aconnect_ws
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.main import create_app
from app.models import Job, JobStatus
from app.security import issue_node_token
from tests.conftest import bearer, node_token, serve_app, shared_image, with_node_settings
from tests.images import decode, encode

T1 = shared_image("scenes/t1.jpg")
DOG = shared_image("scenes/dog.jpg")
WAIT_S = 60


async def test_results_come_back_on_the_socket_in_order_with_their_seq(
    client, settings, make_node, make_consumer
):
    node = await make_node()
    async with aconnect_ws(
        "/v1/nodes/me/stream", client, headers=bearer(node_token(settings, node.id))
    ) as ws:
        for frame in (T1, DOG, T1):
            await ws.send_bytes(frame)
        accepted = [await ws.receive_json() for _ in range(3)]
        assert [(m["type"], m["seq"]) for m in accepted] == [("accepted", n) for n in (1, 2, 3)]
        await make_consumer().run(burst=True)
        answers = [await ws.receive_json() for _ in range(3)]
    by_seq = {m["seq"]: m for m in answers}
    assert {m["type"] for m in answers} == {"result"}
    assert [by_seq[n]["job"]["counts"] for n in (1, 2, 3)] == [{"face": 6}, {}, {"face": 6}]
    assert [by_seq[n]["job_id"] for n in (1, 2, 3)] == [m["job_id"] for m in accepted]
    assert all(by_seq[n]["job"]["node_id"] == str(node.id) for n in (1, 2, 3))


async def test_frames_beyond_the_in_flight_limit_are_refused_then_slots_free_up(
    settings, make_node, make_consumer
):
    node = await make_node()
    async with serve_app(with_node_settings(settings, max_in_flight=2)) as client:
        async with aconnect_ws(
            "/v1/nodes/me/stream", client, headers=bearer(node_token(settings, node.id))
        ) as ws:
            for _ in range(4):
                await ws.send_bytes(T1)
            first = [await ws.receive_json() for _ in range(4)]
            assert [(m["type"], m["seq"]) for m in first] == [
                ("accepted", 1),
                ("accepted", 2),
                ("refused", 3),
                ("refused", 4),
            ]
            assert {m["reason"] for m in first[2:]} == {"busy"}
            await make_consumer().run(burst=True)
            results = [await ws.receive_json() for _ in range(2)]
            assert sorted((m["type"], m["seq"]) for m in results) == [("result", 1), ("result", 2)]
            await ws.send_bytes(T1)  # the slots are free again
            assert (await ws.receive_json())["type"] == "accepted"


async def test_a_bad_frame_is_refused_and_the_socket_stays_open(client, settings, make_node):
    node = await make_node()
    async with aconnect_ws(
        "/v1/nodes/me/stream", client, headers=bearer(node_token(settings, node.id))
    ) as ws:
        await ws.send_bytes(b"definitely not an image")
        refused = await ws.receive_json()
        assert refused == {
            **refused,
            "type": "refused",
            "seq": 1,
            "reason": "unsupported_image_type",
        }
        await ws.send_bytes(T1)
        assert (await ws.receive_json())["type"] == "accepted"


async def test_a_refreshed_token_keeps_the_socket_going(client, settings, make_node):
    node = await make_node()
    async with aconnect_ws(
        "/v1/nodes/me/stream", client, headers=bearer(node_token(settings, node.id))
    ) as ws:
        await ws.send_text(json.dumps({"type": "token", "token": node_token(settings, node.id)}))
        answer = await ws.receive_json()
        assert answer["type"] == "token_ok"
        assert answer["expires_at"].endswith("Z")
        await ws.send_text("{}")  # not a control message
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_json()
        assert closed.value.code == 4422


async def test_a_socket_whose_token_expired_closes_at_its_expiry(client, settings, make_node):
    """Without waiting for a frame: an idle socket must not outlive its token either."""
    node = await make_node()
    # A token with about two seconds left.
    issued = datetime.now(UTC) - timedelta(seconds=settings.nodes.token_ttl_s - 2)
    token = issue_node_token(node.id, settings.nodes, now=issued).token
    async with aconnect_ws("/v1/nodes/me/stream", client, headers=bearer(token)) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            async with asyncio.timeout(6):
                await ws.receive_json()
    assert closed.value.code == 4401
    assert "expired" in closed.value.reason


# --- over real TCP (uvicorn), where a client that stops reading really blocks the sender ------


def listening_socket(*, send_buffer_bytes: int) -> socket.socket:
    """A loopback listener whose accepted connections get a small send buffer.

    The default buffers hold megabytes on loopback; small ones make a non-reading client block
    the server's writes after a few results, as a congested camera uplink would.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    listener.bind(("127.0.0.1", 0))
    return listener


class RunningServer:
    def __init__(self, app, listener: socket.socket) -> None:
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws_ping_interval=None)
        self.server = uvicorn.Server(config)
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "RunningServer":
        self.task = asyncio.create_task(self.server.serve(sockets=[self.listener]))
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            assert time.monotonic() < deadline and not self.task.done()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT_S)


async def count_jobs(sessionmaker, node_id, status: JobStatus | None = None) -> int:
    query = select(func.count()).select_from(Job).where(Job.node_id == node_id)
    if status is not None:
        query = query.where(Job.status == status)
    async with sessionmaker() as session:
        return await session.scalar(query)


async def test_an_upgrade_without_a_valid_token_is_refused_with_http_401(settings, make_node):
    async with RunningServer(
        create_app(settings), listening_socket(send_buffer_bytes=65536)
    ) as srv:
        url = f"ws://127.0.0.1:{srv.port}/v1/nodes/me/stream"
        for headers in ({}, bearer("not.a.token")):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"] == "invalid_token"


async def test_a_node_that_stops_reading_does_not_hold_up_another(
    settings, make_node, make_consumer, sessionmaker
):
    """The slow node's socket fills up and blocks; its frames are then refused, not queued,
    while another node keeps getting every result on its own socket."""
    slow, brisk = await make_node("slow"), await make_node("brisk")
    app = create_app(with_node_settings(settings, max_in_flight=2))
    stop_worker = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop_worker))
    frame = encode(cv2.resize(decode(T1), (640, 443)), ".jpg")
    try:
        async with RunningServer(app, listening_socket(send_buffer_bytes=8192)) as srv:
            url = f"ws://127.0.0.1:{srv.port}/v1/nodes/me/stream"
            # A small receive buffer, and no compression (identical results would deflate to a
            # few bytes each): the pipe fills after a few dozen results, not thousands.
            slow_sock = socket.socket()
            slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            slow_sock.connect(("127.0.0.1", srv.port))
            async with connect(
                url,
                additional_headers=bearer(node_token(settings, slow.id)),
                sock=slow_sock,
                compression=None,
                ping_interval=None,
            ) as slow_ws:
                slow_ws.transport.pause_reading()  # from now on the slow node reads nothing

                # Send until the server stops accepting the slow node's frames: its results
                # cannot be written, so its in-flight slots never free up. Only sends made
                # while every accepted frame is already done count towards the plateau: a
                # busy machine's slow worker is not mistaken for a full socket.
                plateau, accepted, sent = 0, -1, 0
                deadline = time.monotonic() + WAIT_S
                while plateau < 15 and time.monotonic() < deadline:
                    await slow_ws.send(frame)
                    sent += 1
                    await asyncio.sleep(0.02)
                    now_accepted = await count_jobs(sessionmaker, slow.id)
                    all_done = await count_jobs(sessionmaker, slow.id, JobStatus.done)
                    stalled = now_accepted == accepted and all_done == now_accepted
                    plateau = plateau + 1 if stalled else 0
                    accepted = now_accepted
                assert plateau >= 15, f"the slow node's frames kept being accepted ({accepted})"
                assert accepted < sent

                # Meanwhile the brisk node gets every one of its results, while the slow one
                # keeps sending.
                async with connect(
                    url, additional_headers=bearer(node_token(settings, brisk.id)), max_size=None
                ) as brisk_ws:
                    for n in range(1, 6):
                        await slow_ws.send(frame)
                        await brisk_ws.send(frame)
                        answers = []
                        while not answers or answers[-1]["type"] == "accepted":
                            message = json.loads(await asyncio.wait_for(brisk_ws.recv(), WAIT_S))
                            answers.append(message)
                        assert [(m["type"], m["seq"]) for m in answers] == [
                            ("accepted", n),
                            ("result", n),
                        ]
                        assert answers[-1]["job"]["counts"] == {"face": 6}
                assert await count_jobs(sessionmaker, slow.id) == accepted
                # Reading again, the slow node finds its extra frames were refused as busy
                # (not lost in a stalled connection), each with a notice while there was room.
                slow_ws.transport.resume_reading()
                refused = []
                while not refused:
                    message = json.loads(await asyncio.wait_for(slow_ws.recv(), WAIT_S))
                    if message["type"] == "refused":
                        refused.append(message)
                assert refused[0]["reason"] == "busy"
                slow_ws.transport.abort()
    finally:
        stop_worker.set()
        await worker


async def test_a_node_socket_holds_one_of_the_servers_websocket_slots(settings, api_key, make_node):
    from tests.app.test_auth import ws_close_code

    node = await make_node()
    node_auth = bearer(node_token(settings, node.id))
    one_socket = settings.model_copy(
        update={"api": settings.api.model_copy(update={"max_websocket_clients": 1})}
    )

    async def open_sockets(client) -> str:
        text = (await client.get("/metrics")).text
        return next(line for line in text.splitlines() if line.startswith("lookout_websocket_"))

    async with serve_app(one_socket, api_key) as client:
        async with aconnect_ws("/v1/nodes/me/stream", client, headers=node_auth):
            assert await open_sockets(client) == "lookout_websocket_clients 1.0"
            assert await ws_close_code(client, "/v1/ws") == 1013
            assert await ws_close_code(client, "/v1/nodes/me/stream", headers=node_auth) == 1013
        for _ in range(100):  # the handler returns once it has seen the client leave
            if await open_sockets(client) == "lookout_websocket_clients 0.0":
                break
            await asyncio.sleep(0.02)
        assert await open_sockets(client) == "lookout_websocket_clients 0.0"
        # The other way round: a firehose client holds the slot, a node is turned away.
        async with aconnect_ws("/v1/ws", client):
            assert await ws_close_code(client, "/v1/nodes/me/stream", headers=node_auth) == 1013
