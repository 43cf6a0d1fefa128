"""A real API process against hostile clients: keys in URLs never reach its logs, slow clients
are cut off, a burst of uploads is told `busy` (not "database unreachable") and memory comes
back. Bounded: a few connections, a few seconds each."""

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import psutil
import pytest
from httpx_ws import aconnect_ws
from websockets.asyncio.client import connect as ws_connect

from app.limits import SMALL_BODY_BYTES
from app.security import Scope, parse_key
from tests.processes import free_port, http_ok, lookout_env, start_python, stop, wait_until

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
MAX_UPLOADS = 2


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: side² × 3 bytes of noise (~3 MB at 1000)."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


@pytest.fixture
def api(settings, tmp_path):  # type: ignore[no-untyped-def]
    port = free_port()
    log_path = tmp_path / "api.log"
    env = lookout_env(
        settings,
        LOOKOUT_LOG_LEVEL="INFO",
        LOOKOUT_DATA_DIR=str(tmp_path / "data"),
        LOOKOUT_MAINTENANCE__ENABLED="false",
        LOOKOUT_API__HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        LOOKOUT_API__BODY_READ_TIMEOUT_S=str(BODY_TIMEOUT_S),
        LOOKOUT_API__MAX_CONCURRENT_UPLOADS=str(MAX_UPLOADS),
        LOOKOUT_API__UPLOAD_WAIT_S="0.2",
        LOOKOUT_AUTH__RATE_LIMIT_REQUESTS="0",
    )
    process = start_python(
        ["app.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_path=log_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            http_ok(f"{base}/health/live"),
            timeout_s=60,
            what="lookout api",
            process=process,
            log_path=log_path,
        )
        yield base, port, process, log_path
    finally:
        stop(process)


async def test_keys_in_urls_and_headers_never_reach_the_logs(api, make_key):
    base, _, _, log_path = api
    token = await make_key("logged", (Scope.read,))
    prefix, secret = parse_key(token)
    bogus = "lk_0123456789ab_" + "S" * 43
    async with httpx.AsyncClient(base_url=base) as http:
        async with aconnect_ws(f"/v1/ws?api_key={token}", http):
            pass
        with pytest.raises(Exception):
            async with aconnect_ws(f"/v1/ws?api_key={bogus}", http) as ws:
                await ws.receive_text()
        await http.get(f"/v1/jobs?api_key={token}", headers={"X-API-Key": token})
        await http.get("/v1/jobs", headers={"X-API-Key": bogus})
    await asyncio.sleep(0.5)
    logs = log_path.read_text()
    assert "WebSocket /v1/ws?api_key=" in logs  # uvicorn logs the handshake: the line exists
    assert secret not in logs and "S" * 43 not in logs
    assert f"lk_{prefix}_[redacted]" in logs  # the prefix still tells keys apart


def test_uvicorn_s_own_access_log_is_redacted_too(settings, tmp_path, api_key):
    """Someone running `uvicorn app.main:create_app --factory` (access log on by default)."""
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    process = start_python(
        ["uvicorn", "app.main:create_app", "--factory", "--port", str(port)],
        env=lookout_env(settings, LOOKOUT_LOG_LEVEL="INFO"),
        log_path=log_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            http_ok(f"{base}/health/live"),
            timeout_s=60,
            what="uvicorn",
            process=process,
            log_path=log_path,
        )
        httpx.get(f"{base}/v1/jobs?api_key={api_key}&limit=1", timeout=10)
    finally:
        stop(process)
    logs = log_path.read_text()
    assert "GET /v1/jobs?api_key=" in logs  # the access line is there
    assert parse_key(api_key)[1] not in logs


def _read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {timeout_s} s; got {received!r}") from None
    return received


def test_slow_request_heads_are_cut_off(api):
    _, port, _, _ = api
    started = time.monotonic()
    connections = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n")
        connections.append(sock)
    # A byte a second: never a complete head.
    for _ in range(HEADER_TIMEOUT_S + 2):
        for sock in connections:
            try:
                sock.sendall(b"X")
            except OSError:
                pass
        time.sleep(1)
    for sock in connections:
        _read_until_closed(sock, timeout_s=2)
        sock.close()
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 6
    # The server still serves everyone else.
    port_ok = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
    assert port_ok.status_code == 200


def test_a_stalled_body_gets_408_and_the_connection_closes(api, api_key):
    _, port, _, _ = api
    sock = socket.create_connection(("127.0.0.1", port))
    body = b'{"name": "slow"}'
    sock.sendall(
        b"POST /v1/people HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {api_key}\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode()
        + body[:5]
    )
    started = time.monotonic()
    answer = _read_until_closed(sock, timeout_s=BODY_TIMEOUT_S + 5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"request_timeout"' in answer
    assert BODY_TIMEOUT_S - 0.5 < time.monotonic() - started < BODY_TIMEOUT_S + 4


async def test_an_open_websocket_outlives_the_header_deadline(api, api_key):
    """The control: the deadline is for request heads, not for upgraded connections."""
    base, _, _, _ = api
    async with httpx.AsyncClient(base_url=base) as http:
        async with aconnect_ws(f"/v1/ws?api_key={api_key}", http) as ws:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(HEADER_TIMEOUT_S + 1.5):
                    await ws.receive_text()


async def test_websocket_messages_go_out_uncompressed(api, api_key):
    """A client that offers permessage-deflate (websockets does, as browsers do) is answered
    without it (app/server.py: compressing each event once per socket was 40% of the API's CPU
    for a delivered event), and its socket works as before."""
    _, port, _, _ = api
    async with ws_connect(f"ws://127.0.0.1:{port}/v1/ws?api_key={api_key}") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        pong = await ws.ping()
        await asyncio.wait_for(pong, 10)


@contextlib.contextmanager
def upload_slots_held(api, api_key: str) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every upload slot of the API held by an upload whose body trickles in (a byte every
    0.5 s, inside the body read timeout), until the block ends. Returns once the server has
    taken them all: a probe upload is refused as busy."""
    base, port, process, log_path = api
    holders = []
    for _ in range(MAX_UPLOADS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"X-API-Key: {api_key}\r\nContent-Length: 200000\r\n\r\n".encode()
        )
        holders.append(sock)
    stop_trickle = threading.Event()

    def trickle() -> None:
        while not stop_trickle.wait(0.5):
            for sock in holders:
                sock.sendall(b"\0")

    trickling = threading.Thread(target=trickle, daemon=True)
    trickling.start()
    probe = b"\0" * (SMALL_BODY_BYTES + 1)  # a body large enough to need a slot
    try:
        wait_until(
            lambda: httpx.post(f"{base}/v1/images", content=probe).status_code == 503,
            timeout_s=30,
            what="every upload slot held",
            process=process,
            log_path=log_path,
        )
        yield
    finally:
        stop_trickle.set()
        trickling.join()
        for sock in holders:
            sock.close()


def test_a_burst_of_uploads_is_told_busy_and_memory_comes_back(api, api_key):
    """While the slots are taken a burst is refused unread; then a burst through the free slots
    leaves the API's memory where it was (at most MAX_UPLOADS bodies held at once)."""
    base, _, process, log_path = api
    image = noise_png(1000)
    assert len(image) > 2_500_000
    server = psutil.Process(process.pid)

    def upload(_: int) -> httpx.Response:
        return httpx.post(
            f"{base}/v1/images",
            files={"image": ("noise.png", image, "image/png")},
            headers={"X-API-Key": api_key},
            timeout=60,
        )

    upload(0)  # warm: the first upload pays for imports and pools
    before_mb = server.memory_info().rss / 2**20
    with (
        upload_slots_held(api, api_key),
        concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool,
    ):
        refused = list(pool.map(upload, range(48)))
    for response in refused:
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "busy", response.text
        assert int(response.headers["retry-after"]) >= 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        statuses = [r.status_code for r in pool.map(upload, range(48))]
    assert set(statuses) <= {202, 503}, statuses
    assert statuses.count(202) >= MAX_UPLOADS
    assert "unreachable" not in log_path.read_text()  # a burst is not a database outage
    time.sleep(1)
    after_mb = server.memory_info().rss / 2**20
    # At most MAX_UPLOADS bodies (and their copies) were ever held at once.
    print(f"API RSS before {before_mb:.0f} MB, after the bursts {after_mb:.0f} MB")
    assert after_mb - before_mb < 120, (before_mb, after_mb)


def test_busy_answers_the_compatible_apis_in_their_own_shapes(api, api_key):
    """With every upload slot held, DeepStack's clients get DeepStack's envelope and
    CompreFace's {message, code 41}, both 503 with Retry-After; Lookout's own route its own
    `busy` body."""
    base = api[0]
    image = ("big.jpg", b"\xff\xd8" + b"\0" * 100_000)
    with upload_slots_held(api, api_key):
        deepstack = httpx.post(
            f"{base}/v1/vision/detection", data={"api_key": api_key}, files={"image": image}
        )
        compreface = httpx.post(
            f"{base}/api/v1/recognition/recognize",
            headers={"x-api-key": api_key},
            files={"file": image},
        )
        native = httpx.post(
            f"{base}/v1/images", headers={"X-API-Key": api_key}, files={"image": image}
        )
    for response in (deepstack, compreface, native):
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
    assert deepstack.json()["success"] is False and deepstack.json()["duration"] == 0.0
    assert f"maximum of {MAX_UPLOADS} uploads" in deepstack.json()["error"]
    assert compreface.json()["code"] == 41 and "uploads" in compreface.json()["message"]
    assert native.json()["error"] == "busy"


def test_a_client_that_leaves_mid_body_is_logged_as_gone_not_as_a_bug(api, api_key):
    """An upload closed halfway (a camera losing its link) ends as 499 in the request log,
    `client_disconnected`, without a traceback: on Lookout's raw-body and form routes and on
    the compatible APIs' form routes alike."""
    base, port, _, log_path = api
    requests = [
        ("/v1/images", "image/jpeg"),
        ("/v1/images", "multipart/form-data; boundary=xyz"),
        ("/v1/vision/detection", "multipart/form-data; boundary=xyz"),
        ("/api/v1/recognition/recognize", "multipart/form-data; boundary=xyz"),
    ]
    part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    for path, content_type in requests:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n".encode()
            + f"X-API-Key: {api_key}\r\nx-api-key: {api_key}\r\n".encode()
            + b"Content-Length: 200000\r\n\r\n"
            + part
            + b"\xff\xd8" * 1000
        )
        time.sleep(0.3)  # the server is reading the body
        sock.close()
    deadline = time.monotonic() + 30
    while log_path.read_text().count("client_disconnected") < len(requests):
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    logs = log_path.read_text()
    assert "unhandled_error" not in logs and "Traceback" not in logs, logs[-3000:]
    assert logs.count("status=499") == len(requests), logs[-3000:]
    assert httpx.get(f"{base}/health/live").status_code == 200


async def test_gunicorn_s_logs_are_redacted_too(settings, tmp_path, api_key):
    """deploy/gunicorn.conf.py with its access log switched on by an operator."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    process = start_python(
        [
            "gunicorn",
            "--config",
            "deploy/gunicorn.conf.py",
            "--workers",
            "1",
            "--access-logfile",
            "-",
            "app.main:create_app()",
        ],
        env=lookout_env(
            settings,
            LOOKOUT_LOG_LEVEL="INFO",
            LOOKOUT_API__HOST="127.0.0.1",
            LOOKOUT_API__PORT=str(port),
        ),
        log_path=log_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            http_ok(f"{base}/health/live"),
            timeout_s=60,
            what="gunicorn",
            process=process,
            log_path=log_path,
        )
        async with httpx.AsyncClient(base_url=base) as http:
            await http.get(f"/v1/jobs?api_key={api_key}")
            async with aconnect_ws(f"/v1/ws?api_key={api_key}", http):
                pass
        await asyncio.sleep(0.5)
    finally:
        stop(process)
    logs = log_path.read_text()
    assert "/v1/jobs?api_key=" in logs and "/v1/ws?api_key=" in logs
    assert parse_key(api_key)[1] not in logs
