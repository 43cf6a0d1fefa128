"""A real API process against hostile clients: keys in URLs never reach its logs, slow clients
are cut off, a burst of uploads is told `busy` (not "database unreachable") and memory comes
back. Bounded: a few connections, a few seconds each."""

import asyncio
import concurrent.futures
import socket
import time

import cv2
import httpx
import numpy as np
import psutil
import pytest
from httpx_ws import aconnect_ws

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


def test_a_burst_of_uploads_is_told_busy_and_memory_comes_back(api, api_key):
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
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(upload, range(48)))
    statuses = [r.status_code for r in responses]
    busy = [r for r in responses if r.status_code == 503]
    assert set(statuses) <= {202, 503}, statuses
    assert statuses.count(202) >= MAX_UPLOADS
    assert busy, "48 uploads over 24 connections never found the 2 slots taken"
    for response in busy:
        assert response.json()["error"] == "busy", response.text
        assert int(response.headers["retry-after"]) >= 1
    assert "unreachable" not in log_path.read_text()
    time.sleep(1)
    after_mb = server.memory_info().rss / 2**20
    # At most MAX_UPLOADS bodies (and their copies) were ever held at once.
    print(f"API RSS before {before_mb:.0f} MB, after the burst {after_mb:.0f} MB")
    assert after_mb - before_mb < 120, (before_mb, after_mb)


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
