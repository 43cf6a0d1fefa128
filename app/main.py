"""create_app(): the lifespan owns the engine, Redis client and storage; routers; error handlers."""

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
from app.settings import Settings, get_settings
from app.storage import Storage

# Room for the multipart envelope around the image part; the image itself is capped in the route.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

DESCRIPTION = """
Self-hosted vision inference. `POST /v1/images` queues a job; workers find faces (box,
landmarks, embedding, age/gender), objects (COCO classes, counts) and QR codes, as the job's
`tasks` ask; results arrive on `WS /v1/jobs/{id}/events`, on the firehose `WS /v1/ws`, and
at `GET /v1/jobs/{id}`.
Errors are always `{"error": code, "detail": message}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis.url is None:
            raise RuntimeError("no Redis URL: set LOOKOUT_REDIS__URL or run `lookout up`")
        engine = create_engine(settings.database)
        redis = Redis.from_url(settings.redis.url, decode_responses=False)
        await streams.ensure_group(redis)
        app.state.lookout = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            redis=redis,
            storage=Storage(settings.storage_dir),
        )
        try:
            yield
        finally:
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
    app.add_middleware(
        BodySizeLimit, max_body_bytes=settings.api.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    )
    return app
