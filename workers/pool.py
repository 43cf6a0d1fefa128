"""Worker processes: one consumer per process, single-threaded inference by default.

SIGTERM/SIGINT: stop reading, finish the message in hand, exit. The parent forwards the signal
to every child and waits for them.
"""

import asyncio
import multiprocessing
import os
import signal
import sys

import structlog
import uvloop

from app.db import (
    close_redis,
    create_engine,
    create_frames_redis,
    create_redis,
    create_sessionmaker,
)
from app.gallery.memory_index import MEMORY_INDEXES
from app.logging import configure_logging
from app.settings import Settings
from app.storage import Storage
from workers.consumer import Consumer
from workers.detectors.registry import build_detectors
from workers.health import heartbeat_dir
from workers.metrics import WorkerMetrics
from workers.models import ModelError

log = structlog.get_logger()


async def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    stop: asyncio.Event | None = None,
    index: int = 0,
) -> int:
    """Load models, connect, consume. Returns the number of messages handled.

    `index`: this process's place in the pool; its metrics exporter listens on metrics_port+index.
    """
    settings.check_startup()
    detectors = build_detectors(settings)
    MEMORY_INDEXES.configure(settings.gallery.memory_index)
    engine = create_engine(settings.database, "worker")
    redis = create_redis(settings.redis)
    frames_redis = create_frames_redis(settings.redis, redis)
    metrics = WorkerMetrics()
    if settings.worker.metrics_port is not None:
        metrics.serve(settings.worker.metrics_port + index)
    try:
        consumer = Consumer(
            settings,
            detectors,
            redis,
            create_sessionmaker(engine),
            Storage(settings.storage_dir),
            frames_redis=frames_redis,
            metrics=metrics,
            heartbeat_dir=heartbeat_dir(),
        )
        log.info("worker_started", consumer=consumer.name, tasks=sorted(detectors))
        handled = await consumer.run(stop, burst=burst)
        log.info("worker_stopped", consumer=consumer.name, handled=handled)
        return handled
    finally:
        await close_redis(redis, frames_redis)
        MEMORY_INDEXES.forget()  # their builds read through this engine
        await engine.dispose()


def run_worker_process(settings: Settings, burst: bool = False, index: int = 0) -> None:
    """Entry point of one worker process, with graceful shutdown on SIGTERM/SIGINT.

    A model that cannot be found or verified ends the process with exit code 2 and one line
    saying which file and where to put it (no traceback).
    """
    configure_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, burst=burst, stop=stop, index=index)

    try:
        # uvloop, as uvicorn runs the API on: outside inference a worker's time is mostly
        # round trips to Postgres and Redis, and uvloop's transports are C.
        uvloop.run(main())
    except ModelError as exc:
        log.error("models_unavailable", error=str(exc))
        print(f"lookout worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(settings: Settings, *, processes: int, burst: bool = False, index: int = 0) -> int:
    """Run `processes` worker processes until they all exit. Returns a shell exit code.

    `index`: the first process's place in the pool (`lookout up` runs one per child).
    """
    cores = len(os.sched_getaffinity(0))
    threads = settings.worker.threads
    if processes * threads > cores:
        # More inference threads than cores: they preempt each other and throughput drops.
        log.warning("workers_oversubscribed", processes=processes, threads=threads, cores=cores)
    if processes == 1:
        run_worker_process(settings, burst, index)
        return 0
    # spawn, not fork: onnxruntime and asyncio state must not be copied from the parent.
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=run_worker_process, args=(settings, burst, index + i), name=f"worker-{i}"
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
