"""Outbound events: webhook deliveries per second with 10 subscribers, and what the outbound
path adds to a job's own latency (it should add nothing: it reads the firehose through its own
consumer group, after the job is done).

1. Throughput: `lookout events` running, 10 webhooks on one loopback receiver (uvicorn, 204),
   N firehose entries published with the workers' own publish function; deliveries/s from the
   first publish to the last receipt (N × 10 signed POSTs).
2. Job latency: jobs through the API (`?wait=`) with a no-inference worker, `timings.total_ms`
   (accepted → finished), in interleaved rounds: without `lookout events` and without webhooks,
   then with both and 10 webhooks subscribed to `job.done` (deliveries drained before the next
   round), so drift in the machine's load falls on both sides alike. Reported: the ratio of
   p50s per round, their median and spread.
3. A backlog at rest: one webhook's receiver down, BACKLOG deliveries queued behind a head that
   waits out an hour's backoff, the 10 other webhooks' queues empty, nothing published: the CPU
   `lookout events` and Postgres spend a second on nothing (the dispatcher's polls), and then
   how soon the other webhooks' events still arrive.

`python -m bench.events_out [--events N] [--jobs N] [--rounds N]`.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import uvicorn
from redis.asyncio import Redis

from app import streams
from bench.harness import Stack, free_port, load_average, machine, stack, write_section
from bench.profiling import cpu_ms_per_s

SUBSCRIBERS = 10
BACKLOG = 100_000
# Measured after the dispatcher polled a while: Postgres plans a prepared statement for any
# value (a generic plan) from its sixth run, and that plan is the one every later poll runs.
BACKLOG_SETTLE_S = 8.0
BACKLOG_MEASURE_S = 20.0
IMAGE = Path(__file__).resolve().parent.parent.parent / "shared/images/faces/train/obama/obama.jpg"


class Receiver:
    """Counts POSTs per path and records receipt times; answers 204."""

    def __init__(self) -> None:
        self.port = free_port()
        self.count = 0
        self.received_at: list[float] = []
        self.lock = threading.Lock()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        with self.lock:
            self.count += 1
            self.received_at.append(time.time())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def __enter__(self) -> "Receiver":
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Result:
    events: int
    deliveries: int
    delivered: int
    deliveries_per_s: float
    job_ms_without: list[list[float]]  # per round
    job_ms_with: list[list[float]]
    backends_pinned: int = 0  # the dispatcher's Postgres backends moved to its CPU (pinned)
    # CPU ms a second, `lookout events` and Postgres, with a backlog at rest (None: not run)
    backlog_cpu_ms_per_s: dict[str, float] | None = None
    backlog_deliveries_per_s: float | None = None  # the other webhooks' meanwhile


class BackendPinner:
    """Keeps the Postgres backends of `lookout events` (application_name lookout-events) on one
    CPU: they are forked by the postmaster, on the job path's CPU, whenever its pool opens a
    connection, so they are looked up and moved every 0.2 s while the bench runs."""

    def __init__(self, database_url: str, cpu: int) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.cpu = cpu
        self.stopping = threading.Event()
        self.pinned: set[int] = set()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    async def _loop(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            while not self.stopping.is_set():
                rows = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'lookout-events'"
                )
                for row in rows:
                    if row["pid"] not in self.pinned:
                        with contextlib.suppress(OSError):  # a backend that just ended
                            os.sched_setaffinity(row["pid"], {self.cpu})
                            self.pinned.add(row["pid"])
                await asyncio.sleep(0.2)
        finally:
            await connection.close()

    def __enter__(self) -> "BackendPinner":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def _start_events(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "events"], env=env)


def _subscribe(base_url: str, receiver: Receiver) -> list[str]:
    ids = []
    for i in range(SUBSCRIBERS):
        response = httpx.post(
            f"{base_url}/v1/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.port}/hook/{i}", "event_types": ["job.done"]},
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def _unsubscribe(base_url: str, ids: list[str]) -> None:
    for webhook_id in ids:
        httpx.delete(f"{base_url}/v1/webhooks/{webhook_id}").raise_for_status()


def _wait_for(receiver: Receiver, count: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while receiver.count < count and time.time() < deadline:
        time.sleep(0.1)


def _job_latencies(base_url: str, jobs: int) -> list[float]:
    image = IMAGE.read_bytes()
    totals = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(jobs):
            response = client.post("/v1/images?wait=30", files={"image": ("a.jpg", image)})
            response.raise_for_status()
            totals.append(float(response.json()["timings"]["total_ms"]))
    return totals


async def _publish(redis_url: str, database_url: str, events: int) -> float:
    # The jobs exist (finished, with nothing found): the dispatcher drops the events of jobs
    # gone by the time it reads them. Their rows are written before the clock starts.
    job_ids = [uuid.uuid4() for _ in range(events)]
    await _execute(
        database_url,
        "INSERT INTO jobs (id, status, purpose, tasks, content_type, width, height, counts,"
        " attempts) SELECT id, 'done', 'detect', '{faces}', 'image/jpeg', 1, 1, '{}', 1"
        " FROM unnest($1::uuid[]) AS id",
        job_ids,
    )
    redis = Redis.from_url(redis_url)
    began = time.time()
    try:
        for job_id in job_ids:
            event = streams.make_event(
                "result",
                job_id,
                owner_id=None,
                job={
                    "id": str(job_id),
                    "status": "done",
                    "tasks": ["faces"],
                    "counts": {},
                    "detections": [],
                },
            )
            await streams.publish_job_event(redis, event, ttl_s=60, firehose_maxlen=100_000)
    finally:
        await redis.aclose()
    return began


def run(*, events: int, jobs: int, rounds: int, pinned: bool = False) -> Result:
    """pinned: the job's path (Postgres, Redis, API, worker) on the first CPU and the outbound
    path (`lookout events`, the receiver, this client) on the second, in both arms alike, so
    the ratio shows waiting, not two processes sharing a core. Affinity is inherited: the
    stack is started with this thread on CPU 0, then the thread moves to CPU 1."""
    extra = {"LOOKOUT_EVENTS__ALLOWED_NETWORKS": '["127.0.0.1/32"]'}
    cpus = sorted(os.sched_getaffinity(0))
    if pinned:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        with stack(worker_command=["-m", "bench.noop_worker"], extra_env=extra) as running:
            if not pinned:
                with Receiver() as receiver:
                    return _measure(
                        running, receiver, events=events, jobs=jobs, rounds=rounds, backlog=True
                    )
            os.sched_setaffinity(0, {cpus[1]})
            with (
                Receiver() as receiver,
                BackendPinner(running.env["LOOKOUT_DATABASE__URL"], cpus[1]) as pinner,
            ):
                result = _measure(
                    running, receiver, events=events, jobs=jobs, rounds=rounds, backlog=False
                )
            result.backends_pinned = len(pinner.pinned)
            return result
    finally:
        os.sched_setaffinity(0, set(cpus))


def _measure(
    running: Stack, receiver: Receiver, *, events: int, jobs: int, rounds: int, backlog: bool
) -> Result:
    _job_latencies(running.base_url, 3)  # warm up
    without: list[list[float]] = []
    with_events: list[list[float]] = []
    for _ in range(rounds):
        without.append(_job_latencies(running.base_url, jobs))
        ids = _subscribe(running.base_url, receiver)
        dispatcher = _start_events(running.env)
        try:
            time.sleep(2)  # the dispatcher is reading
            expected = receiver.count + jobs * SUBSCRIBERS
            with_events.append(_job_latencies(running.base_url, jobs))
            _wait_for(receiver, expected, 60)  # drained: the next round starts quiet
        finally:
            dispatcher.terminate()
            dispatcher.wait(30)
        _unsubscribe(running.base_url, ids)

    _subscribe(running.base_url, receiver)
    dispatcher = _start_events(running.env)
    try:
        time.sleep(2)
        before = receiver.count
        began = asyncio.run(
            _publish(
                running.env["LOOKOUT_REDIS__URL"], running.env["LOOKOUT_DATABASE__URL"], events
            )
        )
        _wait_for(receiver, before + events * SUBSCRIBERS, 300)
        delivered = receiver.count - before
        last = receiver.received_at[-1]
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)
    result = Result(
        events=events,
        deliveries=events * SUBSCRIBERS,
        delivered=delivered,
        deliveries_per_s=delivered / (last - began),
        job_ms_without=without,
        job_ms_with=with_events,
    )
    if backlog:
        result.backlog_cpu_ms_per_s, result.backlog_deliveries_per_s = _backlog_at_rest(
            running, receiver, events=events
        )
    return result


def _backlog_at_rest(
    running: Stack, receiver: Receiver, *, events: int
) -> tuple[dict[str, float], float]:
    """Section 3 of the module docstring. The webhooks of the throughput figure stay
    subscribed (their queues empty); the backlog's rows are written straight into Postgres, as
    the dispatcher would have stored them, its head after its third failed attempt."""
    down = httpx.post(
        f"{running.base_url}/v1/webhooks",
        json={"url": f"http://127.0.0.1:{free_port()}/down", "event_types": ["job.done"]},
    )
    down.raise_for_status()
    asyncio.run(_queue_backlog(running.env["LOOKOUT_DATABASE__URL"], down.json()["id"]))
    dispatcher = _start_events(running.env)
    try:
        time.sleep(BACKLOG_SETTLE_S)
        assert running.postgres_pid is not None
        cpu = cpu_ms_per_s(
            {"lookout events": dispatcher.pid, "Postgres": running.postgres_pid},
            BACKLOG_MEASURE_S,
        )
        before = receiver.count
        began = asyncio.run(
            _publish(
                running.env["LOOKOUT_REDIS__URL"], running.env["LOOKOUT_DATABASE__URL"], events
            )
        )
        _wait_for(receiver, before + events * SUBSCRIBERS, 300)
        delivered_per_s = (receiver.count - before) / (receiver.received_at[-1] - began)
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)
    httpx.delete(f"{running.base_url}/v1/webhooks/{down.json()['id']}").raise_for_status()
    return cpu, delivered_per_s


async def _queue_backlog(database_url: str, webhook_id: str) -> None:
    await _execute(
        database_url,
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, status,"
        " attempts, next_attempt_at) SELECT gen_random_uuid(), $1, 'backlog-' || n, 'job.done',"
        " '{}', 'pending', CASE WHEN n = 1 THEN 3 ELSE 0 END,"
        " CASE WHEN n = 1 THEN now() + interval '1 hour' ELSE now() END"
        " FROM generate_series(1, $2) AS n ORDER BY n",
        uuid.UUID(webhook_id),
        BACKLOG,
    )
    await _execute(database_url, "ANALYZE webhook_deliveries")


async def _execute(database_url: str, statement: str, *args: object) -> None:
    """One statement on the bench stack's Postgres, outside Lookout."""
    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _latency_rows(label: str, result: Result) -> list[str]:
    ratios = [
        _p50(with_) / _p50(without)
        for with_, without in zip(result.job_ms_with, result.job_ms_without, strict=True)
    ]
    without = _p50([ms for block in result.job_ms_without for ms in block])
    with_ = _p50([ms for block in result.job_ms_with for ms in block])
    spread = ", ".join(f"{r:.2f}" for r in ratios)
    return [
        f"| {label} | {without:.1f} | {with_:.1f} | {_p50(ratios):.2f} | {spread} |",
    ]


def _backlog_rows(result: Result) -> list[str]:
    if result.backlog_cpu_ms_per_s is None or result.backlog_deliveries_per_s is None:
        return []
    cpu = result.backlog_cpu_ms_per_s
    at_rest = f"a backlog at rest ({BACKLOG:,} deliveries behind a head in backoff, nothing sent)"
    return [
        f"| {at_rest}: CPU ms a second, `lookout events` / Postgres | "
        f"{cpu['lookout events']:.1f} / {cpu['Postgres']:.1f} |",
        f"| beside that backlog, webhook deliveries per second ({SUBSCRIBERS} subscribers) | "
        f"{result.backlog_deliveries_per_s:.0f} |",
    ]


def report(shared: Result, pinned: Result | None, load_before: str, measured: str) -> None:
    rounds = len(shared.job_ms_without)
    jobs = len(shared.job_ms_without[0])
    latency = [
        "| cores | job total ms p50, no outbound path | with `lookout events` + "
        f"{SUBSCRIBERS} webhooks | ratio, median of rounds | ratio per round (spread) |",
        "|---|---:|---:|---:|---|",
        *_latency_rows("shared (every process on both cores)", shared),
    ]
    if pinned is not None:
        latency += _latency_rows(
            "pinned: API, worker, Postgres, Redis on CPU 0; `lookout events`, its "
            f"{pinned.backends_pinned} Postgres backends, the receiver, the client on CPU 1",
            pinned,
        )
    write_section(
        "events_out",
        "\n".join(
            [
                "## Outbound events: webhooks (bench/events_out.py)",
                "",
                f"Measured {measured}. One API, one no-inference worker (bench/noop_worker.py),",
                f"`lookout events`, {SUBSCRIBERS} webhooks on one loopback receiver (uvicorn, 204).",
                f"Throughput: {shared.events} firehose entries published back to back, each a",
                f"`job.done` for every webhook: {shared.deliveries} signed POSTs, counted from the",
                "first publish to the last receipt. Job latency: `timings.total_ms` (accepted →",
                f"result committed) of sequential uploads in {rounds} interleaved rounds of {jobs}",
                f"without, then {jobs} with the outbound path running and subscribed (its",
                "deliveries drained before the next round); once with every process free to use",
                "both cores, once pinned so the outbound path has a core of its own.",
                "",
                *machine(),
                f"- Load average before {load_before}, after {load_average()}",
                "",
                "| measurement | value |",
                "|---|---:|",
                f"| deliveries | {shared.delivered} of {shared.deliveries} |",
                f"| webhook deliveries per second ({SUBSCRIBERS} subscribers) | "
                f"{shared.deliveries_per_s:.0f} |",
                f"| events per second out (each to {SUBSCRIBERS} subscribers) | "
                f"{shared.deliveries_per_s / SUBSCRIBERS:.0f} |",
                *_backlog_rows(shared),
                "",
                *latency,
                "",
                "The outbound path is not a step of the job: its own consumer group reads the",
                "firehose after the worker committed the result, where `total_ms` ends. On shared",
                "cores a ratio above 1 is CPU the dispatcher and the receiver take from the API and",
                "the worker while they run. Pinned, the dispatcher and the Postgres backends",
                "that run its statements (per job event: a delivery row per webhook inserted,",
                "each updated after its POST) work on CPU 1; what they still share with the job",
                "is Redis (the firehose read and acks) and Postgres' WAL and locks. What is left",
                "of the ratio there is that, or the job waiting for a delivery.",
                "",
                f"The backlog at rest: a webhook whose receiver is down, {BACKLOG:,} deliveries",
                "queued behind its head, which waits out an hour's backoff; measured over",
                f"{BACKLOG_MEASURE_S:.0f} s after the dispatcher polled for {BACKLOG_SETTLE_S:.0f}"
                f" s (its prepared statements on their generic plans), then {shared.events} events"
                " published",
                "to the other webhooks. A webhook is due when its head is (migration 0018's",
                "pending index finds each head): before, any due delivery made it due, the",
                "backlog was drained at every poll to find its head waiting, after a query that",
                "read every pending delivery to find the due webhooks (6.5 / 22.0 ms a second",
                "on 2026-12-07 00:47, the code before, this same bench).",
            ]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events_out", description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=15, help="per side and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    shared = run(events=args.events, jobs=args.jobs, rounds=args.rounds)
    pinned = None
    if len(os.sched_getaffinity(0)) >= 2:
        pinned = run(events=args.events, jobs=args.jobs, rounds=args.rounds, pinned=True)
    report(shared, pinned, load_before, measured)
    print(shared.deliveries_per_s, shared.delivered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
