"""A worker whose detector finds nothing: measures everything but inference.

Decode, Postgres writes, stream events and acks all still run (workers draw no processed
image: the API draws it when asked).
"""

import asyncio
import signal
from collections.abc import Sequence

import uvloop
from redis.asyncio import Redis

from app.db import create_engine, create_sessionmaker
from app.logging import configure_logging
from app.settings import get_settings
from app.storage import Storage
from workers.consumer import Consumer
from workers.detectors.base import Detection, ImageBGR


class NoopDetector:
    task = "faces"
    model_name = "noop"

    def warm_up(self) -> None:
        pass

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        return [[] for _ in images]


async def main() -> None:
    settings = get_settings()
    # As workers/pool.py does for real workers: without it structlog's default logger renders
    # every job's `job_done` line, at any level, on this worker's CPU (never on a real one's).
    configure_logging(settings)
    assert settings.redis.url is not None
    engine = create_engine(settings.database)
    redis = Redis.from_url(settings.redis.url)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    consumer = Consumer(
        settings,
        {"faces": NoopDetector()},
        redis,
        create_sessionmaker(engine),
        Storage(settings.storage_dir),
    )
    await consumer.run(stop)
    await redis.aclose()
    await engine.dispose()


if __name__ == "__main__":
    uvloop.run(main())  # the event loop workers/pool.py runs real workers on
