"""Faults with real processes on loopback: workers killed, Redis stopped or wiped, Postgres
stopped. The API (uvicorn) and workers are `lookout` subprocesses; uploads go over HTTP."""

import asyncio
import collections
import json
import socket
import time

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import streams
from app.apikeys.service import create_key
from app.db import create_engine, create_sessionmaker, migrate
from app.embedded import start_embedded
from app.security import Scope
from app.settings import DatabaseSettings
from tests.conftest import shared_image
from tests.e2e.processes import (
    RedisServer,
    lookout_env,
    start_api,
    start_postgres,
    start_worker,
    stop_postgres,
    stopping,
    wait_until,
)

FACES_IN_T1 = 6


@pytest.fixture(scope="module")
def small_t1() -> bytes:
    """t1.jpg at half size (640×443): the same six faces, a quarter of the decode work."""
    image = cv2.imdecode(np.frombuffer(shared_image("scenes/t1.jpg"), np.uint8), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, None, fx=0.5, fy=0.5))
    assert ok
    return encoded.tobytes()


async def upload_all(
    base_url: str, key: str, image: bytes, count: int, *, concurrency: int = 8
) -> list[httpx.Response]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as http:

        async def one() -> httpx.Response:
            async with gate:
                return await http.post(
                    "/v1/images", files={"image": ("s.jpg", image, "image/jpeg")}
                )

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def status_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
        return {status: n for status, n in rows}


async def wait_for(condition, *, what: str, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def assert_each_job_written_once(engine: AsyncEngine, job_ids: list[str]) -> None:
    """Every job done, exactly FACES_IN_T1 detection rows each, no row duplicated."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT j.id::text, j.status, count(d.id), count(DISTINCT d.box) "
                    "FROM jobs j LEFT JOIN detections d ON d.job_id = j.id GROUP BY j.id"
                )
            )
        ).all()
    by_id = {job_id: (status, n, distinct) for job_id, status, n, distinct in rows}
    assert sorted(by_id) == sorted(job_ids)
    bad = {k: v for k, v in by_id.items() if v != ("done", FACES_IN_T1, FACES_IN_T1)}
    assert not bad, f"{len(bad)} jobs not done exactly once, e.g. {list(bad.items())[:3]}"


async def firehose_results_per_job(redis) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    counts: collections.Counter[str] = collections.Counter()
    for _, fields in await redis.xrange(streams.FIREHOSE):
        event = json.loads(fields[b"data"])
        if event["type"] == "result":
            counts[event["job_id"]] += 1
    return counts


@pytest.mark.timeout(300)
async def test_kill_9_one_of_two_workers_mid_run_loses_and_duplicates_nothing(
    servers, models_dir, tmp_path, engine, redis, make_key, small_t1
):
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=tmp_path / "data",
        models_dir=models_dir,
    )
    key = await make_key("load")
    api, base_url = start_api(env, tmp_path / "logs")
    doomed = start_worker(env, tmp_path / "logs", "worker-a")
    survivor = start_worker(env, tmp_path / "logs", "worker-b")
    with stopping(survivor, doomed, api):
        wait_until(
            lambda: (
                httpx.get(f"{base_url}/health/ready").json()["checks"]["workers"]["detail"]
                == "2 alive"
            ),
            what="two worker heartbeats",
        )
        responses = await upload_all(base_url, key, small_t1, 200)
        assert [r.status_code for r in responses] == [202] * 200
        job_ids = [r.json()["id"] for r in responses]

        async def some_done() -> bool:
            return (await status_counts(engine)).get("done", 0) >= 40

        await wait_for(some_done, what="40 jobs done", timeout_s=120)
        # A worker consumes as `<host>-<pid>` (its one process: --processes 1).
        doomed_consumer = f"{socket.gethostname()}-{doomed.popen.pid}"
        assert doomed_consumer in await streams.live_workers(redis)
        doomed.kill9()
        # What it had claimed and not acked: the batch in inference and the one read ahead.
        # The survivor takes an entry only after job_timeout_s (3 s) idle; the batch read ahead
        # is younger than that, so reading right after the kill is not a race.
        in_hand = await redis.xpending_range(
            streams.JOBS, streams.GROUP, min="-", max="+", count=100, consumername=doomed_consumer
        )
        done_at_kill = (await status_counts(engine)).get("done", 0)
        assert in_hand, "the worker was killed holding no job: the test proved nothing"
        in_hand_jobs = [
            fields[b"job_id"].decode()
            for entry in in_hand
            for _, fields in await redis.xrange(
                streams.JOBS, min=entry["message_id"], max=entry["message_id"]
            )
        ]

        async def all_done() -> bool:
            return (await status_counts(engine)).get("done", 0) == 200

        started = time.monotonic()
        await wait_for(all_done, what="all 200 jobs done", timeout_s=150)
        print(
            f"\nkill -9 at {done_at_kill}/200 done; the rest took "
            f"{time.monotonic() - started:.1f} s on the surviving worker"
        )
        assert survivor.alive, survivor.log_tail()

    await assert_each_job_written_once(engine, job_ids)
    results = await firehose_results_per_job(redis)
    assert set(results) == set(job_ids)
    assert set(results.values()) == {1}, "a job's result was published twice"
    # The survivor reclaimed them (XAUTOCLAIM) and acked them: the dead consumer holds nothing.
    assert (
        await redis.xpending_range(
            streams.JOBS, streams.GROUP, min="-", max="+", count=100, consumername=doomed_consumer
        )
        == []
    )
    async with engine.connect() as connection:
        retried = (
            await connection.execute(
                text("SELECT count(*) FROM jobs WHERE attempts > 1 AND id::text = ANY(:ids)"),
                {"ids": in_hand_jobs},
            )
        ).scalar()
    print(f"the killed worker held {len(in_hand)} jobs; {retried} were started again")
    # At least the batch in inference had been delivered to the killed worker: its retry counts
    # both deliveries (the stream's delivery count), whether the killed one was marked running
    # (worker.running_after_ms defers the mark) or not.
    assert retried >= 1


@pytest.mark.timeout(300)
async def test_redis_restarted_then_wiped_every_accepted_job_still_finishes(
    servers, models_dir, tmp_path, engine, make_key, small_t1
):
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=own_redis.url,
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        LOOKOUT_LOG_LEVEL="INFO",  # to see the reconciler's job_reenqueued lines
    )
    key = await make_key("load")
    api, base_url = start_api(env, tmp_path / "logs")
    worker = start_worker(env, tmp_path / "logs", "worker")
    try:
        with stopping(worker, api):
            # 1. Stopped and restarted with its data (AOF) while jobs are queued.
            first = await upload_all(base_url, key, small_t1, 60)
            assert [r.status_code for r in first] == [202] * 60

            async def some_done() -> bool:
                return (await status_counts(engine)).get("done", 0) >= 5

            await wait_for(some_done, what="5 jobs done", timeout_s=60)
            own_redis.stop()
            async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": key}) as http:
                refused = await http.post(
                    "/v1/images", files={"image": ("s.jpg", small_t1, "image/jpeg")}
                )
                assert refused.status_code == 503
                assert refused.json()["error"] == "unavailable"
                ready = await http.get("/health/ready")
                assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]
                # Postgres still answers reads.
                assert (await http.get(f"/v1/jobs/{first[0].json()['id']}")).status_code == 200
            await asyncio.sleep(2)
            own_redis.start()

            async def first_done() -> bool:
                return (await status_counts(engine)).get("done", 0) == 60

            await wait_for(first_done, what="the first 60 jobs done", timeout_s=120)

            # 2. Wiped: killed and replaced by an empty Redis. The reconciler re-enqueues.
            second = await upload_all(base_url, key, small_t1, 60)
            assert [r.status_code for r in second] == [202] * 60

            async def more_done() -> bool:
                return (await status_counts(engine)).get("done", 0) >= 65

            await wait_for(more_done, what="a few of the second batch done", timeout_s=60)
            own_redis.wipe()
            own_redis.start()

            async def all_done() -> bool:
                return (await status_counts(engine)).get("done", 0) == 120

            await wait_for(all_done, what="all 120 accepted jobs done", timeout_s=150)
            assert worker.alive and api.alive
            reenqueued = api.log_tail(10_000_000).count("job_reenqueued")
            print(f"\nthe reconciler re-enqueued {reenqueued} jobs after the wipe")
            assert reenqueued > 0
    finally:
        own_redis.close()
    job_ids = [r.json()["id"] for r in first + second]
    await assert_each_job_written_once(engine, job_ids)


@pytest.mark.timeout(240)
async def test_postgres_stopped_gives_503_and_the_api_recovers_without_restart(
    models_dir, tmp_path, small_t1
):
    own = start_embedded(tmp_path / "own")  # a Postgres (and Redis) this test may stop
    engine = create_engine(DatabaseSettings(url=own.database_url))
    try:
        await asyncio.to_thread(migrate, own.database_url)
        async with create_sessionmaker(engine).begin() as session:
            _, key = await create_key(session, name="ops", scopes=[Scope.admin])
        env = lookout_env(
            database_url=own.database_url,
            redis_url=own.redis_url,
            data_dir=tmp_path / "data",
            models_dir=models_dir,
            # An outage longer than max_deliveries × job_timeout_s must not use up deliveries.
            LOOKOUT_WORKER__MAX_DELIVERIES="2",
        )
        api, base_url = start_api(env, tmp_path / "logs")
        worker = start_worker(env, tmp_path / "logs", "worker")
        with stopping(worker, api):
            async with httpx.AsyncClient(
                base_url=base_url, headers={"X-API-Key": key}, timeout=30
            ) as http:

                async def ready() -> bool:
                    return (await http.get("/health/ready")).status_code == 200

                await wait_for(ready, what="ready", timeout_s=60)
                in_flight = await upload_all(base_url, key, small_t1, 40)
                assert [r.status_code for r in in_flight] == [202] * 40
                stop_postgres(own)  # while the worker is busy with them
                outage_started = time.monotonic()
                calls = [
                    await http.get("/v1/jobs"),
                    await http.get("/v1/jobs/00000000-0000-0000-0000-000000000000"),
                    await http.post(
                        "/v1/images", files={"image": ("s.jpg", small_t1, "image/jpeg")}
                    ),
                    await http.delete("/v1/jobs/00000000-0000-0000-0000-000000000000"),
                ]
                for response in calls:
                    assert response.status_code == 503, response.text
                    assert response.json() == {
                        "error": "unavailable",
                        "detail": "the database is unreachable; the request was not completed, "
                        "retry later",
                    }
                not_ready = await http.get("/health/ready")
                assert not_ready.status_code == 503
                assert not not_ready.json()["checks"]["postgres"]["ok"]
                assert (await http.get("/health/live")).status_code == 200
                await asyncio.sleep(max(0.0, 7 - (time.monotonic() - outage_started)))

                start_postgres(own)

                async def recovered() -> bool:
                    return (await http.get("/v1/jobs")).status_code == 200

                await wait_for(recovered, what="the API to recover", timeout_s=30)
                # Readiness comes back too (its own pooled connection, the worker's next beat);
                # in one CI run it answered 503 the instant after the first 200 above.
                await wait_for(ready, what="readiness to recover", timeout_s=30)
                job = await http.post(
                    "/v1/images?wait=30", files={"image": ("s.jpg", small_t1, "image/jpeg")}
                )
                assert job.status_code == 200, job.text  # the worker recovered too
                assert job.json()["counts"] == {"face": FACES_IN_T1}
                assert api.alive and worker.alive

                async def in_flight_done() -> bool:
                    return (await status_counts(engine)).get("done", 0) == 41

                await wait_for(in_flight_done, what="the jobs in flight at the stop", timeout_s=60)
                # The worker did hold jobs through the outage, and none was given up on.
                assert "job_waits_for_dependencies" in worker.log_tail(10_000_000)
                assert (await status_counts(engine)).get("failed", 0) == 0
    finally:
        await engine.dispose()
        own.stop()
