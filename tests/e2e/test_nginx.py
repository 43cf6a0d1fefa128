"""Debian's nginx, configured from nginx/, in front of a real API process and a real worker.

Everything listens on 127.0.0.1; nginx's workers run as `nobody`, not as the images' owner (as
in compose). Shows: uploads and WebSockets (jobs, firehose, edge nodes) through nginx, image bytes
sent by nginx after the API's X-Accel-Redirect (and refused when asked for directly), /metrics
and readiness detail kept off the public side, the body limit equal to the API's, gzip for JSON,
and the TLS server block.
"""

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_ws import aconnect_ws
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import MULTIPART_OVERHEAD_BYTES
from app.settings import Settings
from tests.conftest import shared_image
from tests.images import blank, png_chunk
from tests.processes import (
    child_uids,
    free_port,
    http_ok,
    lookout_env,
    nginx_body_limit,
    nginx_command,
    self_signed_certificate,
    start,
    start_python,
    stop,
    wait_until,
    write_nginx_site,
)
from workers.health import HEARTBEAT_DIR_NAME
from workers.health import check as check_worker_health

T1 = shared_image("scenes/t1.jpg")
ACCEL_PREFIX = "/_protected_images/"
# Small, so the limit test sends little; T1 (126 KiB) fits.
# Over 1.25 MiB: nginx keeps a body up to 1.25 × client_body_buffer_size (1 MiB) in memory.
MAX_UPLOAD_BYTES = 1_500_000
EVENT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Stack:
    api: str  # the API itself, bypassing nginx
    http: str  # nginx
    https: str  # nginx, TLS server block
    images_dir: Path
    nginx_dir: Path
    nginx_pid: int


@pytest.fixture(autouse=True)
async def clean_state() -> AsyncIterator[None]:
    """Replaces conftest's per-test reset for this module: the API and worker processes live
    across its tests, and flushing Redis would delete the consumer group under the worker.
    The stack fixture resets once before starting them; each test works on its own jobs."""
    yield


@pytest.fixture(scope="module")
async def reset_once(settings: Settings, engine: AsyncEngine, redis: Redis) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE jobs, detections CASCADE"))
    await redis.flushdb()
    shutil.rmtree(settings.storage_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def open_dir() -> Iterator[Path]:
    """A directory nginx's workers (`nobody`, see write_nginx_site) may enter; pytest's own
    temporary directories are private to their owner."""
    path = Path(tempfile.mkdtemp(prefix="lookout-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(
    settings: Settings,
    reset_once: None,
    tmp_path_factory: pytest.TempPathFactory,
    open_dir: Path,
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack-logs")
    worker_tmp = tmp_path_factory.mktemp("worker-tmp")  # its own TMPDIR: its heartbeat files
    api_port, http_port, https_port = free_port(), free_port(), free_port()
    # The image store, as Dockerfile.api makes /data/images: open to enter, files its own.
    data_dir = open_dir / "data"
    images_dir = data_dir / "images"
    images_dir.mkdir(parents=True)
    for directory in (data_dir, images_dir):
        directory.chmod(0o755)
    env = lookout_env(
        settings,
        LOOKOUT_DATA_DIR=str(data_dir),
        LOOKOUT_API__ACCEL_REDIRECT_PREFIX=ACCEL_PREFIX,
        LOOKOUT_API__MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
    )
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        api = start_python(
            ["app.cli", "api", "--host", "127.0.0.1", "--port", str(api_port)],
            env=env,
            log_path=logs / "api.log",
        )
        processes.append(("api", api))
        worker = start_python(
            ["app.cli", "worker"],
            env={**env, "TMPDIR": str(worker_tmp)},
            log_path=logs / "worker.log",
        )
        processes.append(("worker", worker))

        nginx_dir = open_dir / "nginx"
        nginx_dir.mkdir()
        nginx_dir.chmod(0o755)
        self_signed_certificate(nginx_dir / "certs")
        main = write_nginx_site(
            nginx_dir,
            {
                "NGINX_API_UPSTREAM": f"127.0.0.1:{api_port}",
                "NGINX_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                "NGINX_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                "NGINX_IMAGES_DIR": str(images_dir.resolve()),
                "NGINX_MAX_BODY_BYTES": nginx_body_limit(MAX_UPLOAD_BYTES),
                "LOOKOUT_API__ACCEL_REDIRECT_PREFIX": ACCEL_PREFIX,
            },
            tls=True,
        )
        checked = subprocess.run(nginx_command(main, "-t"), capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        nginx = start(nginx_command(main, "-g", "daemon off;"), env={}, log_path=logs / "nginx.log")
        processes.append(("nginx", nginx))

        api_url = f"http://127.0.0.1:{api_port}"
        wait_until(
            http_ok(f"{api_url}/openapi.json"),
            timeout_s=60,
            what="api",
            process=api,
            log_path=logs / "api.log",
        )
        wait_until(
            http_ok(f"http://127.0.0.1:{http_port}/_nginx/health"),
            timeout_s=10,
            what="nginx",
            process=nginx,
            log_path=nginx_dir / "error.log",
        )
        wait_until(
            lambda: check_worker_health(
                worker_tmp / HEARTBEAT_DIR_NAME, hostname=socket.gethostname(), max_age_s=5
            )[0],
            timeout_s=60,
            what="worker",
            process=worker,
            log_path=logs / "worker.log",
        )
        yield Stack(
            api=api_url,
            http=f"http://127.0.0.1:{http_port}",
            https=f"https://127.0.0.1:{https_port}",
            images_dir=images_dir,
            nginx_dir=nginx_dir,
            nginx_pid=nginx.pid,
        )
    finally:
        codes = {name: stop(process) for name, process in reversed(processes)}
        # uvicorn re-raises SIGTERM after its graceful shutdown; the worker returns 0.
        assert codes.get("api") in (None, 0, -signal.SIGTERM), codes
        assert codes.get("worker") in (None, 0), codes


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    """An admin key for the API behind nginx (created after the per-test cleanup)."""
    return {"X-API-Key": api_key}


async def test_image_without_a_key_is_refused_through_nginx(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        job = await _upload(client)
    async with httpx.AsyncClient(base_url=stack.http) as anonymous:
        response = await anonymous.get(f"/v1/jobs/{job['id']}/image")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "x-accel-redirect" not in response.headers
    assert response.content[:3] != T1[:3]  # no image bytes


async def _upload(client: httpx.AsyncClient) -> dict[str, object]:
    response = await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    assert response.status_code == 202, response.text
    job: dict[str, object] = response.json()
    return job


async def test_upload_and_job_events_websocket_through_nginx(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        job = await _upload(client)
        events = []
        async with aconnect_ws(f"/v1/jobs/{job['id']}/events", client) as ws:
            while True:
                event = await ws.receive_json(timeout=EVENT_TIMEOUT_S)
                events.append(event)
                if event["type"] == "status" and event["status"] in ("done", "failed"):
                    break
    statuses = [e.get("status", e["type"]) for e in events]
    # The worker runs with the product's running_after_ms: `running` comes only when the batch
    # was still in inference by then, and then right after `queued`.
    assert statuses in (["queued", "running", "result", "done"], ["queued", "result", "done"])
    assert events[statuses.index("result")]["job"]["counts"] == {"face": 6}


async def test_firehose_websocket_through_nginx(stack: Stack, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        async with aconnect_ws("/v1/ws", client) as ws:
            await asyncio.sleep(0.2)  # the handler starts reading at the stream's end
            job = await _upload(client)
            while True:
                event = await ws.receive_json(timeout=EVENT_TIMEOUT_S)
                if event["job"]["id"] == job["id"]:
                    break
    assert event["type"] == "result"
    assert event["job"]["counts"] == {"face": 6}


async def test_an_edge_node_streams_frames_over_its_websocket_through_nginx(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as admin:
        created = await admin.post(
            "/v1/nodes", json={"name": f"gate-{uuid.uuid4().hex[:8]}", "tasks": ["faces"]}
        )
    assert created.status_code == 201, created.text
    node = created.json()
    async with httpx.AsyncClient(base_url=stack.http) as client:
        issued = await client.post(
            "/v1/nodes/token", json={"node_id": node["id"], "secret": node["secret"]}
        )
        assert issued.status_code == 200, issued.text
        bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}
        async with aconnect_ws("/v1/nodes/me/stream", client, headers=bearer) as ws:
            await ws.send_bytes(T1)
            accepted = await ws.receive_json(timeout=EVENT_TIMEOUT_S)
            result = await ws.receive_json(timeout=EVENT_TIMEOUT_S)
    assert (accepted["type"], accepted["seq"]) == ("accepted", 1)
    assert (result["type"], result["seq"]) == ("result", 1)
    assert result["job_id"] == accepted["job_id"]
    assert result["job"]["node_id"] == node["id"]
    assert result["job"]["counts"] == {"face": 6}


def padded_png(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a small image with a text chunk as padding."""
    png = blank(64, 48, ".png")
    padding = size - len(png) - 12  # a chunk's length, type and CRC: 12 bytes
    text = b"Comment\x00" + b"x" * (padding - 8)
    return png[:-12] + png_chunk(b"tEXt", text) + png[-12:]  # before IEND


async def test_a_node_frame_posted_over_http_is_never_buffered_to_nginx_s_disk(
    stack: Stack, auth: dict[str, str]
) -> None:
    """nginx spools a request body past 1.25 × client_body_buffer_size (1 MiB) to a temporary
    file and logs that it did; a node's frame must not touch the disk, so its route is not
    buffered. An upload of the same size is (the log line this test watches for is real)."""
    frame = padded_png(1_400_000)  # past what nginx keeps in memory, under the body limit
    assert 1.25 * 2**20 < len(frame) <= MAX_UPLOAD_BYTES
    spooled = "a client request body is buffered to a temporary file"
    error_log = stack.nginx_dir / "error.log"

    def spools() -> int:
        return error_log.read_text(errors="replace").count(spooled)

    async with httpx.AsyncClient(headers=auth, base_url=stack.http, timeout=30) as admin:
        created = await admin.post(
            "/v1/nodes", json={"name": f"door-{uuid.uuid4().hex[:8]}", "tasks": ["qr"]}
        )
        assert created.status_code == 201, created.text
        node = created.json()
        assert node["store_frames"] is False, node
        issued = await admin.post(
            "/v1/nodes/token", json={"node_id": node["id"], "secret": node["secret"]}
        )
        bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}
        before = spools()
        sent = await admin.post(
            "/v1/nodes/me/frames",
            content=frame,
            headers={**bearer, "content-type": "image/png"},
            params={"wait": 10},
        )
        assert sent.status_code in (200, 202), sent.text
        assert spools() == before
        uploaded = await admin.post(
            "/v1/images", content=frame, headers={"content-type": "image/png"}
        )
        assert uploaded.status_code == 202, uploaded.text
    assert spools() == before + 1, error_log.read_text()[-3000:]


async def test_metrics_and_readiness_detail_are_not_served_through_nginx(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api) as api:
        metrics = await api.get("/metrics")
        ready = await api.get("/health/ready")
    assert metrics.status_code == 200 and "# HELP" in metrics.text  # the API has them …
    assert ready.status_code == 200 and "checks" in ready.json()
    async with httpx.AsyncClient(base_url=stack.http) as public:
        # … nginx does not pass them on, however the path is spelled (nginx matches the decoded
        # path, and uvicorn would decode /%6Detrics to /metrics).
        for path in ("/metrics", "/metrics/", "/%6Detrics", "/health/ready"):
            refused = await public.get(path)
            assert refused.status_code == 404, path
            assert refused.json()["error"] == "not_found", path
            assert "# HELP" not in refused.text and "checks" not in refused.text, path
        live = await public.get("/health/live")  # says only "ok": left reachable
    assert live.status_code == 200


async def test_image_bytes_are_sent_by_nginx_after_the_apis_accel_redirect(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        job = await _upload(client)
        through_nginx = await client.get(f"/v1/jobs/{job['id']}/image")
    async with httpx.AsyncClient(headers=auth, base_url=stack.api) as client:
        from_api = await client.get(f"/v1/jobs/{job['id']}/image")

    key = f"{job['id']}.jpg"
    assert from_api.status_code == 200
    assert from_api.headers["x-accel-redirect"] == ACCEL_PREFIX + key
    assert from_api.content == b""  # the API sent no bytes …
    assert through_nginx.status_code == 200
    assert through_nginx.content == T1  # … nginx did, from the shared image store
    assert through_nginx.headers["content-type"] == "image/jpeg"
    assert through_nginx.headers["cache-control"] == "private, max-age=3600"
    assert "x-accel-redirect" not in through_nginx.headers
    # nginx's workers do not own the file (in compose: uid 101, the API 10001), so it was sent
    # because the API stored it readable for them, not because nginx ran as its owner.
    workers = child_uids(stack.nginx_pid)
    assert workers and (stack.images_dir / key).stat().st_uid not in workers, workers


async def test_the_internal_image_location_is_refused_from_outside(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        job = await _upload(client)
        key = f"{job['id']}.jpg"
        assert (stack.images_dir / key).read_bytes() == T1  # the file is there …
        direct = await client.get(f"{ACCEL_PREFIX}{key}")
        sideways = await client.get(f"{ACCEL_PREFIX}../images/{key}")
    assert direct.status_code == 404  # … but nginx serves it only after the API's redirect
    assert T1 not in direct.content
    assert sideways.status_code in (400, 404)
    assert T1 not in sideways.content


async def test_an_unknown_job_gets_the_apis_404_and_no_bytes(
    stack: Stack, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        response = await client.get(f"/v1/jobs/{uuid.uuid4()}/image")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_found"
    assert "x-accel-redirect" not in response.headers


async def test_nginx_body_limit_is_the_apis_limit(stack: Stack, auth: dict[str, str]) -> None:
    limit = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
    headers = {"content-type": "application/octet-stream"}
    async with httpx.AsyncClient(headers=auth, base_url=stack.http, timeout=30) as client:
        at_limit = await client.post("/v1/images", content=b"x" * limit, headers=headers)
        over_limit = await client.post("/v1/images", content=b"x" * (limit + 1), headers=headers)
    # At the limit nginx passes the body on and the API judges it (not an image form: 4xx).
    assert at_limit.status_code not in (413, 502, 503), at_limit.text
    assert at_limit.status_code < 500
    # One byte more and nginx answers itself, in the API's error shape.
    assert over_limit.status_code == 413
    assert over_limit.json() == {
        "error": "payload_too_large",
        "detail": f"request body is larger than the limit of {limit} bytes (proxy)",
    }


async def test_json_is_gzipped_through_nginx(stack: Stack, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.http) as client:
        response = await client.get("/openapi.json", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["info"]["title"] == "Lookout"


async def test_the_tls_server_block_serves_the_api(stack: Stack, auth: dict[str, str]) -> None:
    async with httpx.AsyncClient(headers=auth, base_url=stack.https, verify=False) as client:
        job = await _upload(client)
        image = await client.get(f"/v1/jobs/{job['id']}/image")
    assert image.status_code == 200
    assert image.content == T1


async def test_nginx_s_refusals_take_the_shape_of_the_api_called(
    stack: Stack, auth: dict[str, str], open_dir: Path
) -> None:
    """nginx refuses a body over the limit (and answers for an API that is down) itself: under
    /v1/vision/ and /api/v1/ in DeepStack's and CompreFace's shapes, which their clients read
    (Double Take throws CompreFace's `message`; it threw an empty one on Lookout's body)."""
    too_big = b"\xff\xd8" + b"x" * (MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES + 10)
    async with httpx.AsyncClient(headers=auth, base_url=stack.http, timeout=60) as client:
        deepstack = await client.post("/v1/vision/detection", files={"image": ("x.jpg", too_big)})
        compreface = await client.post(
            "/api/v1/recognition/recognize", files={"file": ("x.jpg", too_big)}
        )
    limit = nginx_body_limit(MAX_UPLOAD_BYTES)
    assert deepstack.status_code == 413
    assert deepstack.json() == {
        "success": False,
        "error": f"request body is larger than the limit of {limit} bytes (proxy)",
        "duration": 0.0,
    }
    assert compreface.status_code == 413
    assert compreface.json() == {
        "message": f"request body is larger than the limit of {limit} bytes (proxy)",
        "code": 21,
    }
    # An nginx whose API is not there (nothing listens on its upstream's port).
    down_dir = open_dir / "nginx-down"
    down_dir.mkdir()
    down_dir.chmod(0o755)
    self_signed_certificate(down_dir / "certs")
    port = free_port()
    main = write_nginx_site(
        down_dir,
        {
            "NGINX_API_UPSTREAM": f"127.0.0.1:{free_port()}",
            "NGINX_HTTP_LISTEN": f"127.0.0.1:{port}",
            "NGINX_HTTPS_LISTEN": f"127.0.0.1:{free_port()}",
            "NGINX_IMAGES_DIR": str(stack.images_dir.resolve()),
            "NGINX_MAX_BODY_BYTES": limit,
            "LOOKOUT_API__ACCEL_REDIRECT_PREFIX": ACCEL_PREFIX,
        },
        tls=True,
    )
    nginx = start(nginx_command(main, "-g", "daemon off;"), env={}, log_path=down_dir / "out.log")
    try:
        wait_until(
            http_ok(f"http://127.0.0.1:{port}/_nginx/health"),
            timeout_s=10,
            what="nginx",
            process=nginx,
            log_path=down_dir / "error.log",
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = {
                path: await client.post(path, files={"image": ("x.jpg", b"x")})
                for path in ("/v1/vision/detection", "/api/v1/recognition/recognize", "/v1/images")
            }
    finally:
        stop(nginx)
    assert {a.status_code for a in answers.values()} == {502}  # nginx's status: refused
    assert all(a.headers["retry-after"] == "5" for a in answers.values())
    detail = "the API is not reachable; try again shortly"
    assert answers["/v1/vision/detection"].json() == {
        "success": False,
        "error": detail,
        "duration": 0.0,
    }
    assert answers["/api/v1/recognition/recognize"].json() == {"message": detail, "code": 41}
    assert answers["/v1/images"].json() == {"error": "unavailable", "detail": detail}
