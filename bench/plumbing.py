"""Plumbing: jobs/s through HTTP + Postgres + Redis + WebSocket with a no-op detector, and the
latency Lookout adds at low load (one job at a time: POST → result event on the WebSocket).
"""

import asyncio
import json
import time
from dataclasses import dataclass

import httpx
import websockets
from tqdm import tqdm

from bench.harness import (
    load_average,
    machine,
    percentile_ms,
    stack,
    upload_and_collect,
    write_section,
)
from tests.images import blank

TINY_PNG = blank(64, 48, ".png")


@dataclass
class PlumbingResult:
    jobs: int
    jobs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


async def _latency(base_url: str, ws_url: str, jobs: int) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for _ in tqdm(range(jobs), desc="plumbing latency", unit="job"):
            started = time.perf_counter()
            job = (
                await client.post("/v1/images", files={"image": ("t.png", TINY_PNG, "image/png")})
            ).json()
            async with websockets.connect(ws_url + job["links"]["events"]) as events:
                async for raw in events:
                    event_type = json.loads(raw)["type"]
                    if event_type == "error":
                        raise RuntimeError(f"job {job['id']} failed, the measurement is void")
                    if event_type == "result":
                        break
            samples.append(time.perf_counter() - started)
    return samples


def run(*, jobs: int = 1000, latency_jobs: int = 200, concurrency: int = 32) -> PlumbingResult:
    with stack(worker_command=["-m", "bench.noop_worker"]) as running:
        asyncio.run(_latency(running.base_url, running.ws_url, 20))  # warm-up
        jobs_per_s = asyncio.run(
            upload_and_collect(
                running.base_url,
                running.ws_url,
                image=TINY_PNG,
                content_type="image/png",
                jobs=jobs,
                concurrency=concurrency,
                desc="plumbing throughput",
            )
        )
        latency = asyncio.run(_latency(running.base_url, running.ws_url, latency_jobs))
    return PlumbingResult(jobs, jobs_per_s, percentile_ms(latency, 50), percentile_ms(latency, 99))


def main() -> int:
    load_before = load_average()
    result = run()
    write_section(
        "plumbing",
        "\n".join(
            [
                "## Plumbing: a no-op detector (bench/plumbing.py)",
                "",
                f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}. Everything but inference: upload,",
                "header checks, image store, Postgres, Redis streams, decode + processed-image render,",
                "result write, events, WebSocket. One API process, one worker process, a 64×48 PNG.",
                "",
                *machine(),
                f"- Load average before {load_before}, after {load_average()}",
                "",
                "| measurement | value | target |",
                "|---|---:|---|",
                f"| throughput, {result.jobs} jobs, 32 in flight | {result.jobs_per_s:.0f} jobs/s | ≥ 1,000 |",
                f"| latency added at low load, p50 (POST → result event) | {result.latency_p50_ms:.1f} ms | ≤ 10 ms |",
                f"| latency added at low load, p99 | {result.latency_p99_ms:.1f} ms | ≤ 30 ms |",
                "",
                "Targets missed. py-spy on both processes under this load: the worker is latency-bound, not",
                "CPU-bound. Each batch costs about 8 sequential Postgres/Redis round trips (mark running: one",
                "UPDATE + one MULTI; results: one transaction; events: one MULTI; acks: one MULTI), and the",
                "API spends its CPU in multipart parsing, SQLAlchemy and the asyncpg/redis-py protocol code",
                "(about 3-5 ms per upload in one Python process). Fixed here: a batch is now started,",
                "written, published and acked together instead of per job (56 → 88 → 128 jobs/s across",
                "today's runs, on a noisy machine). What limits it further on 2 cores: one API process and",
                "one worker process share them with Postgres, Redis and the Python benchmark client, so",
                "1,000 jobs/s would need under 1 ms of CPU per job across all of them. Next steps, not done:",
                "raw asyncpg COPY for results instead of the ORM, and more API processes (gunicorn) where",
                "there are more cores.",
            ]
        ),
    )
    print(result)
    return 0


if __name__ == "__main__":
    main()
