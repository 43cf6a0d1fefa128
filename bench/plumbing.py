"""Plumbing: jobs/s through HTTP + Postgres + Redis + WebSocket with a no-op detector, and the
latency Lookout adds at low load (one job at a time: POST → its result event on one open
firehose WebSocket, as a client that watches results would see it). The latency with a target
posts as the throughput rounds do, so that the client's own CPU is not counted as Lookout's;
the same figure posted by httpx is measured job by job in turn with it and reported beside.

A second latency figure opens a new job-events WebSocket per job (handshake, auth and the job
lookup included): what a client that subscribes per upload pays. It has no target.

The bare floor (bench/floor.py: a minimal FastAPI route with the same multipart parse, one
INSERT and one XADD, no Lookout code) is measured in the same run, under the same load,
interleaved with Lookout's throughput rounds; plumbing ÷ floor is their ratio. Redis commands
per job are counted by Redis itself (INFO commandstats deltas over Lookout's rounds: API,
worker, the firehose readers, heartbeats, all of it).

`python -m bench.plumbing [--jobs N] [--latency-jobs N] [--rounds N]`.
"""

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import redis
import websockets
from tqdm import tqdm

from bench.harness import (
    CORES,
    LeanPoster,
    Stack,
    Target,
    free_port,
    load_average,
    machine,
    percentile_ms,
    save_plot,
    stack,
    upload_and_collect,
    write_section,
)
from bench.profiling import CpuMeter, Profile, cpu_ms_per_s, py_spy, record, summary
from tests.images import blank

TINY_PNG = blank(64, 48, ".png")
# Targets of the hot-path issue (plumbing table).
THROUGHPUT = Target("≥ 500", 500, at_least=True)
FLOOR_RATIO = Target("≥ 0.6", 0.6, at_least=True)
P50 = Target("≤ 8 ms", 8, at_least=False)
P99 = Target("≤ 20 ms", 20, at_least=False)
COMMANDS = Target("≤ 8", 8, at_least=False)
LATENCY_CLIENTS = ("lean", "httpx")  # posters(): the figure with a target, then httpx's
AT_REST_S = 15.0  # how long the stack's CPU at rest is measured


@dataclass
class PlumbingResult:
    jobs: int
    concurrency: int
    rounds_jobs_per_s: list[float]  # Lookout, one figure per round
    floor_jobs_per_s: list[float]  # the bare floor, one per round, interleaved with Lookout's
    commands_per_job: float  # Redis commands per job over Lookout's rounds
    commands: dict[str, int]  # by command, over Lookout's rounds
    latency_s: list[float]  # POST → result event, one open firehose socket
    httpx_latency_s: list[float]  # the same posted by httpx, job by job in turn with latency_s
    per_socket_latency_s: list[float]  # POST → result event, a new socket per job
    cpu_ms: dict[str, float]  # CPU ms per job by process, over Lookout's rounds
    floor_cpu_ms: dict[str, float]  # the same over the floor's rounds
    profiles: dict[str, Profile]  # py-spy, by process, over one extra (uncounted) round
    file_create_us: float  # CPU of one file create in the image store's folder, before the rounds
    # Postgres connections opened over Lookout's rounds (a pool that closes what it opened for
    # a burst costs a backend start each time, in processes that exit before anything counts them)
    postgres_connections: int
    # CPU ms a second of the stack's processes with nothing to do (workers up, no jobs): what
    # Lookout costs a machine it idles on, its timers and polls
    at_rest_ms_per_s: dict[str, float]

    @property
    def jobs_per_s(self) -> float:
        return float(np.mean(self.rounds_jobs_per_s))

    @property
    def floor_per_s(self) -> float:
        return float(np.mean(self.floor_jobs_per_s))

    @property
    def floor_ratio(self) -> float:
        return self.jobs_per_s / self.floor_per_s

    @property
    def p50_ms(self) -> float:
        return percentile_ms(self.latency_s, 50)

    @property
    def p99_ms(self) -> float:
        return percentile_ms(self.latency_s, 99)


@contextlib.asynccontextmanager
async def posters(base_url: str) -> AsyncIterator[dict[str, Callable[[], Awaitable[str]]]]:
    """Ways to POST one upload and get its job id, by name: "lean", the throughput rounds'
    pre-built request (bench/harness.py LeanPoster) on one keep-alive connection, so that a
    latency is the time Lookout adds and not the client's; "httpx", a client people run, whose
    own work (building the multipart body, parsing the answer) is in its figure."""
    lean = LeanPoster(base_url, "/v1/images", image=TINY_PNG, content_type="image/png")
    reader, writer = await lean.connect()

    async def post_lean() -> str:
        return str(json.loads(await lean.post(reader, writer))["id"])

    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

            async def post_httpx() -> str:
                response = await client.post(
                    "/v1/images", files={"image": ("t.png", TINY_PNG, "image/png")}
                )
                response.raise_for_status()
                return str(response.json()["id"])

            yield {"lean": post_lean, "httpx": post_httpx}
    finally:
        writer.close()


async def latency_on_firehose(
    base_url: str, ws_url: str, jobs: int, *, clients: Sequence[str] = ("lean",)
) -> dict[str, list[float]]:
    """One job at a time: POST → its result event on an already open firehose socket, `jobs`
    posted by each of `clients` (posters) in turn: the same socket, the same minutes."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    async with (
        posters(base_url) as post,
        websockets.connect(f"{ws_url}/v1/ws", max_size=None) as firehose,
    ):
        for _ in tqdm(range(jobs), desc="plumbing latency, one socket", unit="job"):
            for name in clients:
                started = time.perf_counter()
                job_id = await post[name]()
                while True:  # events of earlier jobs are all read: only this job's come next
                    event = json.loads(await asyncio.wait_for(firehose.recv(), timeout=60))
                    if event.get("job_id") != job_id:
                        continue
                    if event["type"] == "error":
                        raise RuntimeError(f"job {job_id} failed, the measurement is void: {event}")
                    if event["type"] == "result":
                        break
                samples[name].append(time.perf_counter() - started)
    return samples


async def latency_per_job_socket(base_url: str, ws_url: str, jobs: int) -> list[float]:
    """One job at a time: POST, then open that job's events socket and wait for its result."""
    samples = []
    async with posters(base_url) as post:
        for _ in tqdm(range(jobs), desc="plumbing latency, socket per job", unit="job"):
            started = time.perf_counter()
            job_id = await post["lean"]()
            async with websockets.connect(f"{ws_url}/v1/jobs/{job_id}/events") as events:
                async for raw in events:
                    event_type = json.loads(raw)["type"]
                    if event_type == "error":
                        raise RuntimeError(f"job {job_id} failed, the measurement is void")
                    if event_type == "result":
                        break
            samples.append(time.perf_counter() - started)
    return samples


async def post_throughput(base_url: str, *, jobs: int, concurrency: int, desc: str) -> float:
    """POST `jobs` uploads (`concurrency` in flight); jobs/s from the first to the last answer.
    For the floor, which has no results to wait for."""
    poster = LeanPoster(base_url, "/v1/images", image=TINY_PNG, content_type="image/png")
    with tqdm(total=jobs, desc=desc, unit="job") as progress:
        began = time.perf_counter()
        await poster.post_many(jobs, concurrency=concurrency, done=progress.update)
        return jobs / (time.perf_counter() - began)


def start_floor(running: Stack) -> str:
    """The bare floor (bench/floor.py) on the stack's Postgres and Redis; its base URL. The
    stack stops it with its own processes."""
    port = free_port()
    running.processes.append(
        subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--port", str(port)],
            env=running.env,
            stdout=subprocess.DEVNULL,
        )
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/openapi.json", timeout=1).status_code == 200:
                return base_url
        time.sleep(0.2)
    raise RuntimeError("the bare floor did not start")


def command_calls(client: "redis.Redis") -> dict[str, int]:
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("info", "config"))}


def postgres_sessions(database_url: str) -> int:
    """Sessions Postgres has opened on all databases so far (pg_stat_database), this reading's
    own included once it has ended: the difference of two readings less one is what others
    opened between them."""

    async def read() -> int:
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return int(await connection.fetchval("SELECT sum(sessions) FROM pg_stat_database"))
        finally:
            await connection.close()

    return asyncio.run(read())


def run(
    *,
    jobs: int = 1000,
    latency_jobs: int = 200,
    concurrency: int = 32,
    rounds: int = 2,
    profile: bool = True,
) -> PlumbingResult:
    with stack(worker_command=["-m", "bench.noop_worker"]) as running:
        base_url, ws_url = running.base_url, running.ws_url
        floor_url = start_floor(running)
        counter = redis.Redis.from_url(running.env["LOOKOUT_REDIS__URL"])
        api, worker, floor = (p.pid for p in running.processes)
        servers = {"Redis": running.redis_pid}
        if running.postgres_pid is not None:
            servers["Postgres"] = running.postgres_pid
        client = {"this client": os.getpid()}
        alone = frozenset(client)  # its children are the servers measured here
        lookout_cpu = CpuMeter({"API": api, "worker": worker, **servers, **client}, alone=alone)
        floor_cpu = CpuMeter({"bare floor": floor, **servers, **client}, alone=alone)
        asyncio.run(latency_on_firehose(base_url, ws_url, 20, clients=LATENCY_CLIENTS))  # warm-up
        asyncio.run(post_throughput(floor_url, jobs=50, concurrency=concurrency, desc="warm-up"))
        create_us = file_create_us(Path(running.env["LOOKOUT_DATA_DIR"]) / "images")
        time.sleep(2)  # the warm-up's work settles
        at_rest = cpu_ms_per_s({"API": api, "worker": worker, **servers}, AT_REST_S)
        lookout_rounds, floor_rounds = [], []
        commands: dict[str, int] = {}
        connections = 0
        for round_number in range(1, rounds + 1):
            counter.config_resetstat()
            sessions_before = postgres_sessions(running.env["LOOKOUT_DATABASE__URL"])
            lookout_cpu.start()
            lookout_rounds.append(
                lookout_round(
                    running, jobs, concurrency, f"plumbing throughput, round {round_number}"
                )
            )
            lookout_cpu.stop()
            connections += (
                postgres_sessions(running.env["LOOKOUT_DATABASE__URL"]) - sessions_before - 1
            )
            for name, calls in command_calls(counter).items():
                commands[name] = commands.get(name, 0) + calls
            floor_cpu.start()
            floor_rounds.append(
                asyncio.run(
                    post_throughput(
                        floor_url,
                        jobs=jobs,
                        concurrency=concurrency,
                        desc=f"bare floor, round {round_number}",
                    )
                )
            )
            floor_cpu.stop()
        counter.close()
        profiles = (
            _profile_round(running, {"API": api, "worker": worker}, jobs, concurrency)
            if profile
            else {}
        )
        latency = asyncio.run(
            latency_on_firehose(base_url, ws_url, latency_jobs, clients=LATENCY_CLIENTS)
        )
        per_socket = asyncio.run(latency_per_job_socket(base_url, ws_url, latency_jobs))
    return PlumbingResult(
        jobs,
        concurrency,
        lookout_rounds,
        floor_rounds,
        sum(commands.values()) / (jobs * rounds),
        dict(sorted(commands.items(), key=lambda item: -item[1])),
        latency["lean"],
        latency["httpx"],
        per_socket,
        lookout_cpu.ms_per(jobs * rounds),
        floor_cpu.ms_per(jobs * rounds),
        profiles,
        create_us,
        connections,
        at_rest,
    )


def file_create_us(folder: Path, count: int = 300) -> float:
    """CPU µs of creating (and closing) one empty file in `folder`, as the image store's
    `create` does once per upload. Measured idle, before the rounds; the run reports it beside
    the CPU table. The files are left for the stack's teardown: on this machine's ext4, which runs
    without a journal, the kernel passes over every inode freed in the last minute or more
    (`recently_deleted`, up to ~6 min while its block is dirty) before it hands one out, so
    deleting them here would make each of the rounds' creates pay for them (bench/RESULTS.md)."""
    names = [folder / f".bench-create-{uuid.uuid4().hex}" for _ in range(count)]
    began = time.process_time()
    for name in names:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return 1e6 * (time.process_time() - began) / count


def lookout_round(running: Stack, jobs: int, concurrency: int, desc: str) -> float:
    """One throughput round through Lookout: jobs/s from the first upload to the last result."""
    return asyncio.run(
        upload_and_collect(
            running.base_url,
            running.ws_url,
            image=TINY_PNG,
            content_type="image/png",
            jobs=jobs,
            concurrency=concurrency,
            desc=desc,
        )
    )


def _profile_round(
    running: Stack, pids: dict[str, int], jobs: int, concurrency: int
) -> dict[str, Profile]:
    """One more throughput round, not counted, with py-spy on the API and the worker."""
    with tempfile.TemporaryDirectory(prefix="lookout-profile-") as folder:
        with record(pids, Path(folder)) as outputs:
            lookout_round(running, jobs, concurrency, "plumbing throughput, profiled round")
        # py-spy writes nothing where it may not read other processes (no ptrace permission,
        # e.g. a container without SYS_PTRACE): then there is no profile, not a failed bench.
        missing = [name for name, path in outputs.items() if not path.exists()]
        if missing:
            print(f"py-spy recorded nothing for {', '.join(missing)}: no profile in this run")
        return {name: summary(path) for name, path in outputs.items() if path.exists()}


def cpu_lines(result: PlumbingResult) -> list[str]:
    """CPU per job by process, Lookout beside the floor, and what that allows on these cores."""
    names = [*result.cpu_ms, *(n for n in result.floor_cpu_ms if n not in result.cpu_ms)]
    total, floor_total = sum(result.cpu_ms.values()), sum(result.floor_cpu_ms.values())
    rows = [
        f"| {name} | {_ms(result.cpu_ms.get(name))} | {_ms(result.floor_cpu_ms.get(name))} |"
        for name in names
    ]
    return [
        "CPU per job (user + system, psutil; Postgres with its backends), over the throughput",
        "rounds: what each process costs, whatever else shared the machine.",
        "",
        "| process | Lookout, ms per job | bare floor, ms per job |",
        "|---|---:|---:|",
        *rows,
        f"| **all** | **{total:.2f}** | **{floor_total:.2f}** |",
        "",
        f"Throughput here is CPU-bound: at {total:.1f} ms of CPU per job, {CORES} cores carry at "
        f"most {1000 * CORES / total:.0f} jobs/s ({1000 * CORES / floor_total:.0f} for the floor "
        f"at {floor_total:.1f} ms); {THROUGHPUT.threshold:.0f} jobs/s needs "
        f"{1000 * CORES / THROUGHPUT.threshold:.1f} ms per job, all processes together.",
        "",
        f"The upload's one file (the image store's `create`) starts with a create, which cost "
        f"{result.file_create_us:.0f} µs of CPU in the store's folder in this run (measured idle, "
        "before the rounds; on this machine's ext4, 9-16 µs where no files were deleted nearby "
        "in the last minutes and up to ~600 µs after thousands were, since without a journal "
        "the kernel passes over recently freed inodes); the floor stores no file.",
        "",
        f"At rest (workers up, no jobs; {AT_REST_S:.0f} s before the rounds), ms of CPU a second: "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in result.at_rest_ms_per_s.items())
        + f"; {sum(result.at_rest_ms_per_s.values()):.1f} all together.",
    ]


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def profile_lines(profiles: dict[str, Profile]) -> list[str]:
    """The py-spy round's summary: per process, where its samples were."""
    if not profiles:
        return []
    lines = [
        "py-spy (`--nonblocking`, 250 samples/s, on-CPU threads only) on the API and the",
        "worker over one more throughput round (not counted above). Shares of each process's",
        "samples: by the package whose code was running, by function (self time), and by the",
        "innermost Lookout function on the stack (what Lookout code the CPU was spent for).",
    ]
    for name, profile in profiles.items():
        lines += [
            "",
            f"**{name}** ({profile.samples:,} samples; another {profile.waiting:.0%} were waits "
            "for I/O or for a core, left out: the event loop's epoll, idle pool threads):",
            "",
        ]
        lines += ["| package (self) | share | function (self) | share | Lookout step | share |"]
        lines += ["|---|---:|---|---:|---|---:|"]
        width = max(len(profile.by_package), len(profile.by_function), len(profile.by_step))
        for i in range(width):
            cells = []
            for column in (profile.by_package, profile.by_function, profile.by_step):
                label, share = column[i] if i < len(column) else ("", None)
                cells += [f"`{label}`" if label else "", "" if share is None else f"{share:.0%}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def gap_lines(result: PlumbingResult) -> list[str]:
    """Why the targets that were missed are missed, from this run's own figures."""
    rounds = len(result.rounds_jobs_per_s)
    per_job = {n: c / (result.jobs * rounds) for n, c in result.commands.items()}
    batched = {n: v for n, v in per_job.items() if v < 0.9}
    api_ms = result.cpu_ms.get("API", 0.0)
    total, floor_total = sum(result.cpu_ms.values()), sum(result.floor_cpu_ms.values())
    reasons = []
    if not THROUGHPUT.met(result.jobs_per_s):
        reasons.append(
            "**Throughput**: the table above gives every process's CPU per job, against the "
            f"floor's; the API is one process, and at {api_ms:.2f} ms a job it was busy "
            f"{api_ms * result.jobs_per_s / 1000:.0%} of a core at {result.jobs_per_s:.0f} "
            f"jobs/s: {THROUGHPUT.threshold:.0f} jobs/s needs it at "
            f"{1000 / THROUGHPUT.threshold:.1f} ms or less, whatever the other processes spend."
        )
    if not FLOOR_RATIO.met(result.floor_ratio):
        # jobs/s = CPU the processes get a second ÷ their CPU a job, for Lookout as for the
        # floor: the ratio is exactly (how busy each kept the cores) × (CPU a job, inverted).
        busy = result.jobs_per_s * total / 1000
        floor_busy = result.floor_per_s * floor_total / 1000
        reasons.append(
            "**÷ floor**: jobs/s is the CPU the processes got a second over their CPU a job, so "
            f"the ratio is (cores kept busy, Lookout's {busy / CORES:.0%} of {CORES} ÷ the "
            f"floor's {floor_busy / CORES:.0%}: {busy / floor_busy:.2f}) × (the floor's CPU a "
            f"job over Lookout's, {floor_total:.2f} ÷ {total:.2f} ms: "
            f"{floor_total / total:.2f}) = {busy / floor_busy * floor_total / total:.2f}. The "
            "floor is one process (a parse, an INSERT, an XADD) and cannot use a second core; "
            "Lookout's job also crosses a second process (the worker reads the stream, the "
            "stored file and its header, writes the job's result and publishes it, acks), "
            "stores a file, checks the image, and is followed on a firehose socket. Even with "
            f"both cores busy, {FLOOR_RATIO.threshold} of the floor's "
            f"{result.floor_per_s:.0f} jobs/s would need all of that in "
            f"{1000 * CORES / (FLOOR_RATIO.threshold * result.floor_per_s):.2f} ms a job, all "
            "processes together."
        )
    if not COMMANDS.met(result.commands_per_job):
        reasons.append(
            "**Redis commands**: one job's own are fixed by the event protocol: the upload's "
            "EVALSHA (its XADD to the work stream and SET of the entry marker: 3), the result "
            "and final status as one entry of the job's stream, the result on the firehose, one "
            "EXPIRE (3), and `running` (XADD, EXPIRE) only for a batch still in inference after "
            "worker.running_after_ms, which a no-op batch never is: 6; the rest is per batch or "
            "per client "
            f"({', '.join(f'{n} {v:.2f}' for n, v in sorted(batched.items(), key=lambda i: -i[1])[:6])})"
            ": smaller batches cost more a job."
        )
    if not reasons:
        return []
    return [" ".join(["Where the targets are missed, this run says why.", *reasons])]


def report(result: PlumbingResult, load_before: str, measured: str) -> None:
    per_socket_p50 = percentile_ms(result.per_socket_latency_s, 50)
    per_socket_p99 = percentile_ms(result.per_socket_latency_s, 99)
    httpx_p50 = percentile_ms(result.httpx_latency_s, 50)
    httpx_p99 = percentile_ms(result.httpx_latency_s, 99)
    missed = not (
        THROUGHPUT.met(result.jobs_per_s)
        and FLOOR_RATIO.met(result.floor_ratio)
        and P50.met(result.p50_ms)
        and P99.met(result.p99_ms)
        and COMMANDS.met(result.commands_per_job)
    )
    rounds = len(result.rounds_jobs_per_s)
    each = ", ".join(f"{v:.0f}" for v in result.rounds_jobs_per_s)
    floor_each = ", ".join(f"{v:.0f}" for v in result.floor_jobs_per_s)
    top_commands = ", ".join(
        f"{name} {calls / (result.jobs * rounds):.2f}"
        for name, calls in list(result.commands.items())[:8]
    )
    plot = save_plot("plumbing", "Plumbing: latency added at low load", lambda f: _draw(f, result))
    lines = [
        "## Plumbing: a no-op detector (bench/plumbing.py)",
        "",
        f"Measured {measured}. Everything but inference: upload, header checks, image store,",
        "Postgres, Redis streams, decode, result write, events, WebSocket (no processed image:",
        "it is drawn when someone asks for it). One API process, one worker process, a 64×48",
        "PNG. Latency: one job at a time, POST → its result event on one open firehose",
        "WebSocket, posted as the throughput rounds post (a pre-built request on a keep-alive",
        "connection: the client's own CPU left out) and, job by job in turn, by httpx (a client",
        "people run: its CPU in the figure). The bare floor (bench/floor.py): a minimal FastAPI",
        "route with the same multipart parse, one INSERT and one XADD, no Lookout code, on the",
        "same Postgres and Redis, served the same way; its rounds alternate with Lookout's",
        f"({rounds} each).",
        "",
        *machine(),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| measurement | value | target |",
        "|---|---:|---|",
        f"| throughput, {result.jobs} jobs, {result.concurrency} in flight (rounds: {each}) | "
        f"{result.jobs_per_s:.0f} jobs/s | {THROUGHPUT.cell(result.jobs_per_s)} |",
        f"| bare floor, the same load (rounds: {floor_each}) | "
        f"{result.floor_per_s:.0f} jobs/s | none |",
        f"| plumbing ÷ floor | {result.floor_ratio:.2f} | {FLOOR_RATIO.cell(result.floor_ratio)} |",
        f"| Redis commands per job, under that load (INFO commandstats) | "
        f"{result.commands_per_job:.1f} | {COMMANDS.cell(result.commands_per_job)} |",
        f"| latency added at low load, p50 ({len(result.latency_s)} jobs) | "
        f"{result.p50_ms:.1f} ms | {P50.cell(result.p50_ms)} |",
        f"| latency added at low load, p99 | {result.p99_ms:.1f} ms | {P99.cell(result.p99_ms)} |",
        f"| same, posted by httpx, p50 / p99 | {httpx_p50:.1f} / {httpx_p99:.1f} ms | none |",
        f"| same, a new job-events WebSocket per job, p50 | {per_socket_p50:.1f} ms | none |",
        f"| same, a new job-events WebSocket per job, p99 | {per_socket_p99:.1f} ms | none |",
        f"| Postgres connections opened during the throughput rounds | "
        f"{result.postgres_connections} | none |",
        "",
        f"Redis commands per job by command (the eight most frequent): {top_commands}.",
        "",
        plot,
        "",
        *cpu_lines(result),
    ]
    if result.profiles:
        lines += ["", *profile_lines(result.profiles)]
    if missed:
        lines += ["", *gap_lines(result)]
    write_section("plumbing", "\n".join(lines))


def _draw(figure, result: PlumbingResult) -> None:  # type: ignore[no-untyped-def]
    axis = figure.add_subplot()
    for samples, label in (
        (result.latency_s, "one open firehose socket"),
        (result.httpx_latency_s, "the same, posted by httpx"),
        (result.per_socket_latency_s, "a new socket per job"),
    ):
        ms = np.sort(np.asarray(samples) * 1000)
        axis.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=label)
    for target, name in ((P50, "p50 target"), (P99, "p99 target")):
        axis.axvline(target.threshold, color="grey", linestyle=":", linewidth=1)
        axis.text(target.threshold, 0.02, f" {name}", fontsize=7, color="grey")
    axis.set_xscale("log")
    axis.set_xlabel("POST → result event, ms (log)")
    axis.set_ylabel("share of jobs")
    axis.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plumbing", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for the throughput figure")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs per latency figure")
    parser.add_argument(
        "--rounds", type=int, default=2, help="throughput rounds, Lookout's and the floor's"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy round (py-spy missing: skipped)"
    )
    args = parser.parse_args(argv)
    profile = not args.no_profile and py_spy() is not None
    if not args.no_profile and not profile:
        print("py-spy not found: no profile round (make install installs it)")
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    print(f"{CORES} cores")
    result = run(
        jobs=args.jobs, latency_jobs=args.latency_jobs, rounds=args.rounds, profile=profile
    )
    report(result, load_before, measured)
    print(
        f"{result.jobs_per_s:.0f} jobs/s (rounds {result.rounds_jobs_per_s}); bare floor "
        f"{result.floor_per_s:.0f} jobs/s (rounds {result.floor_jobs_per_s}); plumbing ÷ floor "
        f"{result.floor_ratio:.2f}; Redis commands per job {result.commands_per_job:.1f} "
        f"{result.commands}; latency p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
