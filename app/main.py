"""create_app(): the lifespan owns the engine, Redis client and storage; routers; error handlers."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from app import streams
from app.db import create_engine, create_sessionmaker
from app.deps import AppState
from app.errors import install_error_handlers
from app.jobs.routes import router as jobs_router
from app.limits import BodySizeLimit
from app.logging import configure_logging
from app.nodes.routes import admin_router as nodes_admin_router
from app.nodes.routes import node_router
from app.nodes.service import sweep_offline_nodes
from app.security import check_node_signing_keys
from app.settings import Settings, get_settings
from app.stats.routes import router as stats_router
from app.storage import Storage

# Room for the multipart envelope around the image part; the image itself is capped in the route.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

DESCRIPTION = """
Self-hosted vision inference. `POST /v1/images` queues a job; workers detect faces; results
arrive on `WS /v1/jobs/{id}/events`, on the firehose `WS /v1/ws`, and at `GET /v1/jobs/{id}`.
Edge nodes authenticate with their own short-lived JWT (`POST /v1/nodes/token`) and push
frames over `WS /v1/nodes/me/stream` or `POST /v1/nodes/me/frames`.
Errors are always `{"error": code, "detail": message}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_node_signing_keys(settings.nodes, env=settings.env)
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis.url is None:
            raise RuntimeError("no Redis URL: set LOOKOUT_REDIS__URL or run `lookout up`")
        engine = create_engine(settings.database)
        redis = Redis.from_url(settings.redis.url, decode_responses=False)
        await streams.ensure_group(redis)
        sessionmaker = create_sessionmaker(engine)
        app.state.lookout = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            redis=redis,
            storage=Storage(settings.storage_dir),
        )
        sweeper = asyncio.create_task(sweep_offline_nodes(sessionmaker, redis, settings))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Lookout",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(jobs_router)
    app.include_router(node_router)  # first: /v1/nodes/me must not match /v1/nodes/{node_id}
    app.include_router(nodes_admin_router)
    app.include_router(stats_router)
    app.add_middleware(
        BodySizeLimit, max_body_bytes=settings.api.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    )
    return app
