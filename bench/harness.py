"""Benchmark harness: real embedded servers, the API and workers as processes, on loopback.

Benchmarks measure ratios side by side in one run on one machine; absolute numbers on a shared
2-core machine are noisy and only describe this run.
"""

import asyncio
import atexit
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets
from tqdm import tqdm

from app.embedded import start_embedded

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORES = len(os.sched_getaffinity(0))
# Where a bench's servers keep their data (images, Postgres, Redis): in the working tree, as
# `make up` keeps .lookout/. On the 2-core machine these benches ran on, the CPU of creating a
# file depended on the folder and the hour (2026-12-04: /tmp 0.2-0.8 ms, here 0.05; 2026-12-05:
# /tmp 0.03, here 0.2-0.66): bench/plumbing.py reports it for the store's folder in each run.
STACK_DIR = Path(os.environ.get("LOOKOUT_BENCH_STACK_DIR") or REPO / "bench" / "out" / "stacks")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile_ms(samples_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples_s) * 1000, q))


# onnxruntime execution providers for the models the benchmarks run, in order of preference:
# LOOKOUT_BENCH_PROVIDERS (comma-separated) or a script's --providers. CPU unless asked: on a GPU
# machine (onnxruntime-gpu) `LOOKOUT_BENCH_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider`.
DEFAULT_PROVIDERS = "CPUExecutionProvider"


def bench_providers(arg: str | None = None) -> list[str]:
    """The providers asked for (--providers, else LOOKOUT_BENCH_PROVIDERS, else CPU)."""
    wanted = arg or os.environ.get("LOOKOUT_BENCH_PROVIDERS") or DEFAULT_PROVIDERS
    return [p.strip() for p in wanted.split(",") if p.strip()]


def effective_providers(providers: Sequence[str]) -> list[str]:
    """What the worker's sessions will use: the asked-for ones this onnxruntime build has
    (workers/detectors/onnx.py choose_providers), CPU as the floor."""
    from workers.detectors.onnx import choose_providers

    return choose_providers(providers)


def gpus() -> list[str]:
    """NVIDIA GPUs as nvidia-smi names them; empty where there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def machine(providers: Sequence[str] | None = None) -> list[str]:
    """Markdown lines describing this machine (and, given `providers`, what models ran on)."""
    import cv2
    import onnxruntime

    from workers.detectors.onnx import available_providers

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    found = gpus()
    ran_on = (
        f"; these figures ran on {', '.join(effective_providers(providers))}" if providers else ""
    )
    return [
        f"- CPU: {cpu}, {CORES} cores usable, {memory_gib:.0f} GiB RAM",
        f"- GPU: {'; '.join(found) if found else 'none found (no nvidia-smi, or no device)'}",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- onnxruntime {onnxruntime.__version__} (available: "
        f"{', '.join(available_providers())}{ran_on}), "
        f"OpenCV {cv2.__version__}, numpy {np.__version__}",
    ]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


# Where RESULTS.md and the plots go: bench/, or LOOKOUT_BENCH_OUT for a trial run that must not
# replace the published figures.
OUT_DIR = Path(os.environ.get("LOOKOUT_BENCH_OUT") or Path(__file__).resolve().parent)
RESULTS = OUT_DIR / "RESULTS.md"
RESULTS_TITLE = """# Lookout benchmarks

Written by `make bench`; each section by its own script, replaced when that script runs again.
Ratios measured side by side in one run are the figures to compare: absolute numbers on a
shared 2-core machine only describe that run.
"""


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section `name` of bench/RESULTS.md, leaving the others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else RESULTS_TITLE
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"wrote section {name!r} of {RESULTS}")


def save_plot(
    name: str, title: str, draw: Callable[[Any], None], *, size: tuple[float, float] = (7.0, 3.5)
) -> str:
    """Draw a figure (draw(figure)) into OUT_DIR/name.png; the markdown line that embeds it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=size)
    draw(figure)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = OUT_DIR / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")
    return f"![{title}]({name}.png)"


@dataclass(frozen=True)
class Target:
    """A target from the benchmark issue; `cell` says whether a figure met it."""

    text: str  # as the issue states it, e.g. "≥ 1,000"
    threshold: float
    at_least: bool  # True: the figure must be ≥ threshold; False: ≤ threshold

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.at_least else value <= self.threshold

    def cell(self, value: float) -> str:
        return f"{self.text}: met" if self.met(value) else f"{self.text}: **missed**"


@dataclass
class Stack:
    base_url: str
    ws_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]
    # The embedded servers' own processes (bench/profiling.py counts their CPU).
    postgres_pid: int | None
    redis_pid: int


def _wait_ready(base_url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/openapi.json", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("API did not start")


def stack_dir(prefix: str) -> contextlib.AbstractContextManager[str]:
    """A temp dir under STACK_DIR for a bench's servers and data, removed when this process
    exits rather than when its stack stops: this machine's ext4 runs without a journal, and
    there the kernel passes over every inode freed in the last minute or more before it hands
    one out (`recently_deleted`), so the next bench's uploads would each pay for the thousands of
    files a stack's teardown deletes (a create: ~15 µs, up to ~600 µs after such deletions;
    bench/RESULTS.md)."""
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=STACK_DIR)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return contextlib.nullcontext(path)


@contextlib.contextmanager
def stack(
    *, worker_command: list[str], workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Embedded Postgres + Redis in a temp dir, one API process, `workers` worker processes."""
    with stack_dir("lookout-bench-") as tmp:
        services = start_embedded(Path(tmp) / "data")
        processes: list[subprocess.Popen[bytes]] = []
        try:
            port = free_port()
            env = {
                **os.environ,
                "LOOKOUT_DATA_DIR": str(Path(tmp) / "data"),
                "LOOKOUT_DATABASE__URL": services.database_url,
                "LOOKOUT_REDIS__URL": services.redis_url,
                "LOOKOUT_API__PORT": str(port),
                "LOOKOUT_LOG_LEVEL": "WARNING",
                "LOOKOUT_ENV": "dev",
                "LOOKOUT_AUTH__ENABLED": "false",  # a dev server on loopback, as `make up`
                "LOOKOUT_AUTH__RATE_LIMIT_REQUESTS": "0",
                **(extra_env or {}),
            }
            # By the served code's own migrations (`lookout migrate`, as the processes below
            # import it: bench/ab.py serves another checkout), not this one's: an older
            # checkout's worker waited for ever for its own schema head.
            subprocess.run(
                [sys.executable, "-m", "app.cli", "migrate"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "api"], env=env, stdout=subprocess.DEVNULL
                )
            )
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, *worker_command], env=env, stdout=subprocess.DEVNULL
                    )
                )
            base_url = f"http://127.0.0.1:{port}"
            _wait_ready(base_url)
            yield Stack(
                base_url,
                f"ws://127.0.0.1:{port}",
                env,
                processes,
                postmaster_pid(Path(tmp) / "data" / "postgres"),
                services.redis_process.pid,
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            services.stop()


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid, from the first line of its postmaster.pid (None: not found)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_for_workers(running: Stack, count: int, timeout_s: float = 300) -> None:
    """Return once `count` workers beat: a worker beats only after loading and warming its
    models (workers/pool.py), so the measurement starts with all of them ready."""
    from redis.asyncio import Redis

    from app import streams

    async def live() -> int:
        redis = Redis.from_url(running.env["LOOKOUT_REDIS__URL"])
        try:
            return len(await streams.live_workers(redis))
        finally:
            await redis.aclose()

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(live()) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} workers did not start in {timeout_s:.0f} s")


class LeanPoster:
    """POSTs one multipart upload over and over on keep-alive HTTP/1.1 connections, with the
    request's bytes built once and the response read as little as HTTP allows (status line,
    Content-Length, body). A load generator, not a client people run: httpx spent 15-30 ms of
    CPU per upload here (bench/profiling.py), more than the API it was loading, on the same two
    cores; this spends well under one, so the cores go to what is measured."""

    def __init__(self, base_url: str, path: str, *, image: bytes, content_type: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        boundary = "lookoutbench" + os.urandom(8).hex()
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + image
            + f"\r\n--{boundary}--\r\n".encode()
        )
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.request = head + body

    async def post_many(
        self, count: int, *, concurrency: int, done: Callable[[], None] | None = None
    ) -> None:
        """`count` POSTs, `concurrency` connections; any answer but 2xx raises."""
        remaining = count

        async def connection() -> None:
            nonlocal remaining
            reader, writer = await self.connect()
            try:
                while remaining > 0:
                    remaining -= 1
                    await self.post(reader, writer)
                    if done is not None:
                        done()
            finally:
                writer.close()

        await asyncio.gather(*(connection() for _ in range(min(concurrency, count))))

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A keep-alive connection to post on."""
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """One POST on an open connection; the response's body. Any answer but 2xx raises."""
        writer.write(self.request)
        status, body = await self._response(reader)
        if not 200 <= status < 300:
            raise RuntimeError(f"upload answered {status}: {body[:300]!r}")
        return body

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"a response without Content-Length: {head[:300]!r}")
        return status, await reader.readexactly(length)


async def upload_and_collect(
    base_url: str,
    ws_url: str,
    *,
    image: bytes,
    content_type: str,
    jobs: int,
    concurrency: int,
    desc: str,
) -> float:
    """POST `jobs` copies of `image` (`concurrency` in flight) and wait for every result on the
    firehose WebSocket; jobs/s from the first upload to the last result.

    A failed job voids the measurement (RuntimeError): failures are cheap and would flatter it.
    """
    received = 0
    everything = asyncio.Event()
    async with websockets.connect(f"{ws_url}/v1/ws", max_size=None) as firehose:

        async def collect() -> None:
            nonlocal received
            async for raw in firehose:
                event = json.loads(raw)
                if event["type"] == "error":
                    raise RuntimeError(f"a job failed, the measurement is void: {event}")
                if event["type"] == "result":
                    received += 1
                    progress.update()
                    if received == jobs:
                        everything.set()
                        return

        poster = LeanPoster(base_url, "/v1/images", image=image, content_type=content_type)
        with tqdm(total=jobs, desc=desc, unit="job") as progress:
            collector = asyncio.create_task(collect())
            began = time.perf_counter()
            await poster.post_many(jobs, concurrency=concurrency)
            await asyncio.wait_for(everything.wait(), timeout=600)
            elapsed = time.perf_counter() - began
            await collector
    return jobs / elapsed
