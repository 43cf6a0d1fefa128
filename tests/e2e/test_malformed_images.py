"""200 malformed images through the real API and a real worker: every answer is a 4xx or a job
that ends (failed, or done when the damage still decodes), the worker stays up, memory stays
flat."""

import asyncio
import random
import struct
import uuid
import zlib

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import text

from app.images import ImageInfo
from app.jobs.service import create_job, enqueue_job
from tests.conftest import shared_image
from tests.e2e.processes import (
    free_port,
    lookout_env,
    start_api,
    start_worker,
    stopping,
    wait_until,
)

# RSS growth allowed over 200 malformed uploads after warm-up (allocator noise is a few MB).
MAX_GROWTH_BYTES = 40 * 1024 * 1024


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def malformed_images(jpeg: bytes, count: int, seed: int) -> list[tuple[str, bytes]]:
    """(kind, bytes) covering truncation, noise, wrong magic, huge dims, zero size, and damage
    that keeps every marker intact (so only a real decode can tell)."""
    rng = random.Random(seed)
    scan = jpeg.index(b"\xff\xda")

    def noise(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    makers = {
        "truncated_jpeg": lambda: jpeg[: rng.randrange(10, len(jpeg) - 10)],
        "random_bytes": lambda: noise(rng.randrange(1, 4000)),
        "wrong_magic": lambda: rng.choice([b"GIF89a", b"BM", b"%PDF-1.7", b"<svg"]) + jpeg[6:],
        "huge_png": lambda: png(rng.randrange(60_000, 100_000), 60_000, zlib.compress(b"\0" * 64)),
        "huge_jpeg": lambda: _jpeg_with_size(jpeg, 65_000, 65_000),
        "zero_size": lambda: b"",
        "garbled_scan": lambda: (
            jpeg[: scan + 20] + noise(3000).replace(b"\xff", b"\x00") + b"\xff\xd9"
        ),
        "corrupt_png_idat": lambda: png(64, 64, noise(500)),
        "riff_noise": lambda: b"RIFF" + struct.pack("<I", 1000) + b"WEBP" + noise(1000),
    }
    kinds = list(makers)
    return [(kinds[i % len(kinds)], makers[kinds[i % len(kinds)]]()) for i in range(count)]


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    image = cv2.imdecode(np.frombuffer(shared_image("scenes/t1.jpg"), np.uint8), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, None, fx=0.25, fy=0.25))
    assert ok
    return encoded.tobytes()


async def post_all(
    base_url: str, key: str, images: list[tuple[str, bytes]]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as http:
        return [
            await http.post("/v1/images", files={"image": (f"{kind}.jpg", data, "image/jpeg")})
            for kind, data in images
        ]


@pytest.mark.timeout(240)
async def test_200_malformed_images_get_4xx_or_a_finished_job_and_memory_stays_flat(
    servers, models_dir, tmp_path, engine, redis, sessionmaker, make_key, small_jpeg
):
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        LOOKOUT_WORKER__METRICS_PORT=str(metrics_port := free_port()),
    )
    key = await make_key("fuzz")
    api, base_url = start_api(env, tmp_path / "logs")
    worker = start_worker(env, tmp_path / "logs", "worker")
    with stopping(worker, api):
        wait_until(
            lambda: httpx.get(f"{base_url}/health/ready").status_code == 200, what="a worker"
        )
        warmup = await post_all(base_url, key, malformed_images(small_jpeg, 40, seed=1))
        await _wait_until_no_job_is_open(engine)
        api_before, worker_before = api.rss_bytes(), worker.rss_bytes()

        images = malformed_images(small_jpeg, 200, seed=2)
        responses = await post_all(base_url, key, images)
        # Bytes that fail in the worker, not the API: straight into storage and the stream, as
        # if the API's header check had been fooled.
        from app.storage import Storage

        storage = Storage(tmp_path / "data" / "images")
        bypassing: dict[str, str] = {}  # job id → kind
        for kind, data in malformed_images(small_jpeg, 40, seed=3):
            async with sessionmaker.begin() as session:
                job = await create_job(
                    session,
                    storage,
                    image=data,
                    info=ImageInfo("JPEG", 100, 100),
                    tasks=("faces",),
                    owner_id=None,
                )
            await enqueue_job(redis, job, jobs_maxlen=10_000)
            bypassing[str(job.id)] = kind
        await _wait_until_no_job_is_open(engine)
        api_after, worker_after = api.rss_bytes(), worker.rss_bytes()
        assert worker.alive and api.alive
        async with httpx.AsyncClient() as http:
            worker_metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text

    by_kind: dict[str, set[int]] = {}
    for (kind, _), response in zip(images, responses, strict=True):
        by_kind.setdefault(kind, set()).add(response.status_code)
        assert response.status_code < 500, (kind, response.text)
        assert response.status_code in (202, 413, 415, 422), (kind, response.text)
        if response.status_code != 202:
            assert set(response.json()) == {"error", "detail"}
    async with engine.connect() as connection:
        statuses = dict(
            (
                await connection.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
            ).all()
        )
        bypass_statuses = {
            str(job_id): status
            for job_id, status in await connection.execute(
                text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(job_id) for job_id in bypassing]},
            )
        }
    print(f"\nstatus codes by kind: {by_kind}")
    print(f"jobs by status (warm-up + 200 via API + 40 straight to the worker): {statuses}")
    print(
        f"RSS api {api_before / 2**20:.1f} → {api_after / 2**20:.1f} MiB, "
        f"worker {worker_before / 2**20:.1f} → {worker_after / 2**20:.1f} MiB"
    )
    assert by_kind["zero_size"] == {422}
    assert by_kind["random_bytes"] <= {415, 422}
    assert by_kind["huge_png"] == {413} and by_kind["huge_jpeg"] == {413}
    assert set(statuses) <= {"done", "failed"}
    # Bytes no decoder can read fail in the worker; damage inside a JPEG's scan or a cut-off JPEG
    # may still decode (OpenCV fills in grey), so those jobs may end done.
    may_decode = {"garbled_scan", "truncated_jpeg"}
    assert bypass_statuses.keys() == bypassing.keys()
    must_fail = [job_id for job_id, kind in bypassing.items() if kind not in may_decode]
    assert len(must_fail) >= 30
    not_failed = [
        (bypassing[i], bypass_statuses[i]) for i in must_fail if bypass_statuses[i] != "failed"
    ]
    assert not_failed == []
    assert api_after - api_before < MAX_GROWTH_BYTES
    assert worker_after - worker_before < MAX_GROWTH_BYTES
    assert len(warmup) == 40
    # The worker's own exporter: inference time per model, batch sizes, outcomes.
    assert (
        'lookout_worker_inference_ms_count{model="det_500m.onnx+mobilefacenet.onnx"}'
        in worker_metrics
    )
    assert "lookout_worker_batch_size_count" in worker_metrics
    failed_line = next(
        line
        for line in worker_metrics.splitlines()
        if line.startswith('lookout_worker_jobs_total{outcome="failed"}')
    )
    assert float(failed_line.rsplit(" ", 1)[1]) >= len(must_fail)


async def _wait_until_no_job_is_open(engine, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        async with engine.connect() as connection:
            open_jobs = (
                await connection.execute(
                    text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
                )
            ).scalar()
        if open_jobs == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("jobs still queued or running")
