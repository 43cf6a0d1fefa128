"""Worker processes: one consumer per process, single-threaded inference by default.

SIGTERM/SIGINT: stop reading, finish the message in hand, exit. The parent forwards the signal
to every child and waits for them.
"""

import asyncio
import multiprocessing
import os
import signal

import structlog
from redis.asyncio import Redis

from app.db import create_engine, create_sessionmaker
from app.logging import configure_logging
from app.settings import Settings
from app.storage import Storage
from workers.consumer import Consumer
from workers.detectors.registry import build_detectors
from workers.health import heartbeat_dir

log = structlog.get_logger()


async def run_worker(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> int:
    """Load models, connect, consume. Returns the number of messages handled."""
    if settings.redis.url is None:
        raise RuntimeError("no Redis URL: set LOOKOUT_REDIS__URL or run `lookout up`")
    detectors = build_detectors(settings)
    engine = create_engine(settings.database)
    redis = Redis.from_url(settings.redis.url, decode_responses=False)
    try:
        consumer = Consumer(
            settings,
            detectors,
            redis,
            create_sessionmaker(engine),
            Storage(settings.storage_dir),
            heartbeat_dir=heartbeat_dir(),
        )
        log.info("worker_started", consumer=consumer.name, tasks=sorted(detectors))
        handled = await consumer.run(stop, burst=burst)
        log.info("worker_stopped", consumer=consumer.name, handled=handled)
        return handled
    finally:
        await redis.aclose()
        await engine.dispose()


def run_worker_process(settings: Settings, burst: bool = False) -> None:
    """Entry point of one worker process, with graceful shutdown on SIGTERM/SIGINT."""
    configure_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, burst=burst, stop=stop)

    asyncio.run(main())


def serve(settings: Settings, *, processes: int, burst: bool = False) -> int:
    """Run `processes` worker processes until they all exit. Returns a shell exit code."""
    if processes == 1:
        run_worker_process(settings, burst)
        return 0
    # spawn, not fork: onnxruntime and asyncio state must not be copied from the parent.
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=run_worker_process, args=(settings, burst), name=f"worker-{i}")
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
