"""`lookout events`: the webhook dispatcher and (when LOOKOUT_MQTT__URL is set) the MQTT bridge.

One process of its own, supervised like the API and the workers (`lookout up` starts it; the
compose file and Kubernetes run it as the `events` service). It reads the firehose through its
own consumer groups, so it is never on a job's path: a slow receiver or a broker outage only
grows its backlog. Replicas are safe for webhooks: firehose entries are shared out by the
groups, and each webhook is delivered by one replica at a time (Redis lock), in order. With
MQTT run one: replicas would share a node's results out and could publish its retained states
out of order (docs/deploy.md).
"""

import asyncio
import contextlib
import signal

import structlog

from app.db import close_redis, create_engine, create_redis, create_sessionmaker
from app.events_out.dispatcher import WebhookDispatcher
from app.events_out.mqtt import MqttBridge
from app.logging import configure_logging
from app.settings import Settings

log = structlog.get_logger()


async def serve_events(settings: Settings, stop: asyncio.Event) -> None:
    engine = create_engine(settings.database, "events")
    redis = create_redis(settings.redis)
    sessionmaker = create_sessionmaker(engine)
    tasks = [WebhookDispatcher(settings, sessionmaker, redis).run(stop)]
    if settings.mqtt.url is not None:
        tasks.append(MqttBridge(settings, sessionmaker, redis).run(stop))
    log.info("events_started", mqtt=settings.mqtt.url is not None)
    try:
        await asyncio.gather(*tasks)
    finally:
        await close_redis(redis, redis)
        await engine.dispose()
        log.info("events_stopped")


def run_events(settings: Settings) -> int:
    """Until SIGTERM / SIGINT; in-flight deliveries finish or stay pending for next time."""
    configure_logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_events(settings, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
