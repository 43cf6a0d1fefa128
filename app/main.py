"""create_app(): the lifespan owns the engine, Redis client, storage and the maintenance task."""

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.formparsers import MultiPartParser
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app import streams
from app.apikeys.routes import router as apikeys_router
from app.cancellation import cancel_and_wait
from app.compat.compreface.routes import router as compreface_router
from app.compat.deepstack.routes import router as deepstack_router
from app.compat.refusals import CompatiblePaths, render_refusal
from app.db import (
    close_redis,
    create_engine,
    create_frames_redis,
    create_redis,
    create_sessionmaker,
)
from app.deps import API_KEY_HEADER, AppState
from app.docs_pages import mount_docs
from app.errors import ERROR_RESPONSES, install_error_handlers
from app.events_out.routes import event_payloads
from app.events_out.routes import router as events_out_router
from app.firehose import Firehose
from app.gallery.clusters import cluster_loop
from app.gallery.imports import ImportRunner
from app.gallery.memory_index import MEMORY_INDEXES
from app.gallery.routes import router as gallery_router
from app.headers import SecurityHeaders
from app.jobs.routes import router as jobs_router
from app.limits import BodyReadTimeout, BodySizeLimit, UploadAdmission, WebSocketLimit
from app.logging import configure_logging
from app.maintenance import maintenance_loop
from app.nodes.routes import admin_router as nodes_admin_router
from app.nodes.routes import node_router
from app.nodes.service import sweep_offline_nodes
from app.ops.metrics import ApiMetrics
from app.ops.middleware import REQUEST_ID_HEADER, RequestContext
from app.ops.routes import router as ops_router
from app.security import check_node_signing_keys
from app.settings import Settings, get_settings
from app.stats.routes import router as stats_router
from app.storage import Storage
from app.ui import mount_ui

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# Room for the multipart envelope around the image part; the image itself is capped in the route.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

DESCRIPTION = """
Self-hosted vision inference. `POST /v1/images` queues a job; workers find what its `tasks`
ask for: faces (box, landmarks, embedding, age/gender), `identify` (each face against the
people gallery), objects (COCO classes, counts), QR codes, text and licence plates. Results
arrive on `WS /v1/jobs/{id}/events`, on the firehose `WS /v1/ws`, at `GET /v1/jobs/{id}`, and
through webhooks (`/v1/webhooks`) and MQTT.

The gallery: enroll people's faces (`/v1/people`), identify (`POST /v1/identify`) and search
(`POST /v1/faces/search`); faces nobody enrolled are grouped into unnamed people.

Drop-in APIs for the tools that already speak them: DeepStack / CodeProject.AI (`/v1/vision/…`:
Frigate, Home Assistant, Blue Iris, Double Take) and CompreFace (`/api/v1/…`), each answering
in its own envelope.

Edge nodes authenticate with their own short-lived JWT (`POST /v1/nodes/token`) and push
frames over `WS /v1/nodes/me/stream` or `POST /v1/nodes/me/frames`.

Every other /v1 call needs an API key in `X-API-Key` (scopes read / write / admin); a key sees only
the jobs it created, unless it is an admin key.

Errors are always `{"error": code, "detail": message}`; 503 `unavailable` means Postgres, Redis
or the image store's disk is failing for a moment: retry after `Retry-After` seconds.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Raises ConfigError when the settings are unfit to serve (see Settings.startup_problems)."""
    settings = settings or get_settings()
    settings.check_startup()
    check_node_signing_keys(settings.nodes, env=settings.env, auth_enabled=settings.auth.enabled)
    configure_logging(settings)
    metrics = ApiMetrics()
    app = FastAPI(
        title="Lookout",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, metrics),
        docs_url=None,  # served by mount_docs from local assets, not a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    mount_docs(app)
    _include_routers(app)
    _add_middleware(app, settings, metrics)
    return app


def _lifespan(settings: Settings, metrics: ApiMetrics) -> Lifespan:
    """Open the shared resources, run the background loops; close them all at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _open_state(settings, metrics)
        app.state.lookout = state
        MEMORY_INDEXES.configure(settings.gallery.memory_index)
        maintenance = (
            asyncio.create_task(
                maintenance_loop(
                    settings,
                    state.sessionmaker,
                    state.redis,
                    state.storage,
                    frames_redis=state.frames_redis,
                )
            )
            if settings.maintenance.enabled
            else None
        )
        sweeper = asyncio.create_task(
            sweep_offline_nodes(state.sessionmaker, state.redis, settings)
        )
        clusters = (
            asyncio.create_task(cluster_loop(settings, state.sessionmaker, state.redis))
            if settings.clusters.enabled
            else None
        )
        await state.imports.resume()  # imports a stopped API process left unfinished
        try:
            yield
        finally:
            await state.imports.close()  # each resumes after its last batch at the next start
            await state.firehose.close()
            await cancel_and_wait(t for t in (maintenance, clusters, sweeper) if t is not None)
            await close_redis(state.redis, state.frames_redis)
            MEMORY_INDEXES.forget()  # their builds read through this engine
            await state.engine.dispose()

    return lifespan


async def _open_state(settings: Settings, metrics: ApiMetrics) -> AppState:
    engine = create_engine(settings.database, "api")
    redis = create_redis(settings.redis)
    with contextlib.suppress(Exception):  # Redis may be down at boot; workers create it too
        await streams.ensure_group(redis)
        await streams.ensure_firehose_groups(redis)  # events wait for `lookout events`
    sessionmaker = create_sessionmaker(engine)
    storage = Storage(settings.storage_dir)
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis=redis,
        frames_redis=create_frames_redis(settings.redis, redis),
        storage=storage,
        firehose=Firehose(redis, max_queued_per_client=settings.api.ws_max_queued_events),
        metrics=metrics,
        imports=ImportRunner(settings, sessionmaker, redis, storage),
    )


def _include_routers(app: FastAPI) -> None:
    app.include_router(jobs_router, responses=ERROR_RESPONSES)
    app.include_router(apikeys_router, responses=ERROR_RESPONSES)
    app.include_router(
        node_router, responses=ERROR_RESPONSES
    )  # first: /v1/nodes/me must not match /v1/nodes/{node_id}
    app.include_router(nodes_admin_router, responses=ERROR_RESPONSES)
    app.include_router(stats_router, responses=ERROR_RESPONSES)
    app.include_router(gallery_router, responses=ERROR_RESPONSES)
    app.include_router(events_out_router, responses=ERROR_RESPONSES)
    app.webhooks.include_router(event_payloads)  # the OpenAPI `webhooks` section: event bodies
    app.include_router(ops_router)
    app.include_router(deepstack_router)  # errors in DeepStack's own envelope, not ErrorOut
    app.include_router(compreface_router)  # CompreFace's /api/v1, its own error shape
    mount_ui(app)  # last: a catch-all at / behind every API route


def _add_middleware(app: FastAPI, settings: Settings, metrics: ApiMetrics) -> None:
    # Added innermost first: requests pass RequestContext → SecurityHeaders → TrustedHost → CORS
    # → WebSocketLimit → CompatiblePaths → UploadAdmission → BodyReadTimeout → BodySizeLimit.
    # Refusals before routing answer the compatible APIs' clients in their APIs' shapes.
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.api.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        render=render_refusal,
    )
    # Every route reads its uploaded files whole (to check and decode them), BodySizeLimit
    # bounds a body and UploadAdmission how many large ones are read at once. Starlette's form
    # parser first spilled a file over 1 MiB to a temporary file: created, written and read
    # back for nothing, a quarter of the API's CPU on a 1.2 MB upload (py-spy, bench/RESULTS.md).
    # Files stay in memory. A class attribute, so for the whole process: every app's limits
    # bound what it holds.
    MultiPartParser.spool_max_size = sys.maxsize
    app.add_middleware(BodyReadTimeout, timeout_s=settings.api.body_read_timeout_s)
    # Outside the body readers: a request waits for its slot before a byte of it is read.
    app.add_middleware(
        UploadAdmission,
        limit=settings.api.max_concurrent_uploads,
        wait_s=settings.api.upload_wait_s,
        render=render_refusal,
    )
    # Outside the upload slots: a path that is no route of a compatible API is refused first.
    app.add_middleware(CompatiblePaths)
    app.add_middleware(
        WebSocketLimit,
        limit=settings.api.max_websocket_clients,
        clients=metrics.websocket_clients,
    )
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            # PUT: the CompreFace API renames a subject with it (its JS SDK does from browsers).
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Content-Type", REQUEST_ID_HEADER],
            expose_headers=["Retry-After", REQUEST_ID_HEADER],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.api.trusted_hosts)
    app.add_middleware(SecurityHeaders)  # on every answer, refusals of the layers inside too
    app.add_middleware(RequestContext, metrics=metrics)
