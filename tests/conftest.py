"""Real Postgres (pgvector) and real Redis, started once per test session; cleaned per test.

By default both are embedded (the same code `lookout up` uses). Set LOOKOUT_TEST_DATABASE_URL
and LOOKOUT_TEST_REDIS_URL to run against servers of your own instead. Model files come from
LOOKOUT_MODELS_DIR (the Makefile points it at ../shared/models).
"""

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from httpx_ws.transport import ASGIWebSocketTransport
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import streams
from app.apikeys.service import create_key
from app.db import create_engine, create_sessionmaker, migrate
from app.embedded import start_embedded
from app.images import inspect_image
from app.jobs.service import create_job, enqueue_job
from app.main import create_app
from app.models import Job
from app.nodes.service import register_node
from app.security import Scope, issue_node_token
from app.settings import (
    ClusterSettings,
    DatabaseSettings,
    MaintenanceSettings,
    ModelSettings,
    NodeSettings,
    RedisSettings,
    Settings,
    WorkerSettings,
)
from app.storage import Storage
from tests.images import SHARED_IMAGES
from tests.processes import TEST_NODE_SIGNING_KEY
from workers.consumer import Consumer
from workers.detectors.base import Detector
from workers.detectors.registry import build_detectors

REPO = Path(__file__).resolve().parent.parent


def shared_image(relative: str) -> bytes:
    return (SHARED_IMAGES / relative).read_bytes()


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    database_url = os.environ.get("LOOKOUT_TEST_DATABASE_URL")
    redis_url = os.environ.get("LOOKOUT_TEST_REDIS_URL")
    if database_url and redis_url:
        migrate(database_url)
        yield Servers(database_url, redis_url)
        return
    embedded = start_embedded(tmp_path_factory.mktemp("embedded"))
    try:
        migrate(embedded.database_url)
        yield Servers(embedded.database_url, embedded.redis_url)
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    value = os.environ.get("LOOKOUT_MODELS_DIR")
    if not value or not Path(value, "det_500m.onnx").is_file():
        pytest.fail("LOOKOUT_MODELS_DIR must point at the verified models (../shared/models)")
    return Path(value)


@pytest.fixture(scope="session")
def settings(
    servers: Servers, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        env="dev",
        data_dir=tmp_path_factory.mktemp("data"),
        models_dir=models_dir,
        database=DatabaseSettings(url=servers.database_url),
        redis=RedisSettings(url=servers.redis_url),
        # running_after_ms 0: every job is marked running, so tests see every event in a fixed
        # order; the product's deferred mark has its own tests (tests/workers/test_consumer.py).
        worker=WorkerSettings(
            processes=1, threads=1, job_timeout_s=30, block_ms=100, running_after_ms=0
        ),
        # Tests run the reconciler and janitor themselves, when they mean to.
        maintenance=MaintenanceSettings(enabled=False),
        # Likewise the clustering of unknown faces (tests call cluster_pass).
        clusters=ClusterSettings(enabled=False),
        nodes=NodeSettings(signing_key=TEST_NODE_SIGNING_KEY),
        # The test pack (MODELS.md): SCRFD det_500m + the MobileFaceNet stand-in (192-d) +
        # YOLOX-Nano, all verified copies in LOOKOUT_MODELS_DIR. Never download in tests.
        models=ModelSettings(
            face_pack="scrfd_mobilefacenet", object_pack="yolox_nano", download=False
        ),
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis.url is not None
    client = Redis.from_url(settings.redis.url, decode_responses=False)
    yield client
    await client.aclose()


def separate_frames_url(settings: Settings) -> str:
    """A frames Redis apart from the main one: another database of the test server, so its
    own keyspace and its own clients (a frame written to the wrong Redis is not found there)."""
    assert settings.redis.url is not None
    return f"{settings.redis.url}?db=1"  # the query's db wins over a redis:// URL's path


@pytest.fixture
async def separate_frames_redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(separate_frames_url(settings), decode_responses=False)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["main", "separate"])
def frames_redis(request: pytest.FixtureRequest, redis: Redis) -> Redis:
    """Node frames in the main Redis (`lookout up`) or in a Redis of their own (production)."""
    if request.param == "main":
        return redis
    separate: Redis = request.getfixturevalue("separate_frames_redis")
    return separate


@pytest.fixture(scope="session")
def storage(settings: Settings) -> Storage:
    return Storage(settings.storage_dir)


@pytest.fixture(scope="session")
def detectors(settings: Settings) -> dict[str, Detector]:
    return build_detectors(settings)


async def truncate(engine: AsyncEngine, tables: str) -> None:
    """TRUNCATE takes its tables' locks one by one, so a stack's background pass (clustering,
    outbound events) reading them in another order can deadlock it; Postgres then aborts one
    side, and the reset simply runs again."""
    for attempt in range(5):
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
            return
        except DBAPIError as error:
            if "deadlock detected" not in str(error) or attempt == 4:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(autouse=True)
async def clean_state(engine: AsyncEngine, redis: Redis, settings: Settings) -> None:
    """Every test starts with empty tables, an empty Redis and an empty image store."""
    await truncate(engine, "jobs, detections, api_keys, nodes, people")
    await redis.flushdb()
    shutil.rmtree(settings.storage_dir, ignore_errors=True)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def make_key(sessionmaker: async_sessionmaker[AsyncSession]):  # type: ignore[no-untyped-def]
    """Create an API key in the database; returns the full `lk_…` token."""

    async def factory(
        name: str = "test",
        scopes: tuple[Scope, ...] = (Scope.admin,),
        expires_in=None,
        rate_limit: int | None = None,
    ) -> str:
        async with sessionmaker.begin() as session:
            _, token = await create_key(
                session,
                name=name,
                scopes=list(scopes),
                expires_in=expires_in,
                rate_limit=rate_limit,
            )
        return token

    return factory


@pytest.fixture
async def api_key(make_key) -> str:
    """An admin key, sent by `client` by default."""
    return await make_key("test-admin")


def websocket_transport(app: FastAPI) -> ASGIWebSocketTransport:
    """httpx's in-process transport with WebSockets. A socket is counted and its key checked
    before the server accepts it (a Redis and a Postgres round trip): on a loaded machine that
    can outlast httpx-ws's default wait for the accept (1 s), which a real client would not give
    up after."""
    return ASGIWebSocketTransport(app, initial_receive_timeout=10)


@pytest.fixture
async def client(app: FastAPI, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP + WebSocket client on the ASGI app, in-process, sending an admin API key.

    The WebSocket transport opens an anyio task group that must be exited by the task that
    entered it, and pytest-asyncio runs fixture setup and teardown in different tasks: one
    task therefore holds the client open for the whole test.
    """
    opened: asyncio.Future[httpx.AsyncClient] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def hold_open() -> None:
        transport = websocket_transport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://lookout.test", headers={"X-API-Key": api_key}
        ) as http:
            opened.set_result(http)
            await finished.wait()

    holder = asyncio.create_task(hold_open())
    yield await opened
    finished.set()
    await holder


@pytest.fixture
def make_consumer(
    settings: Settings,
    detectors: dict[str, Detector],
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: Storage,
):  # type: ignore[no-untyped-def]
    def factory(
        name: str = "test-worker", *, frames_redis: Redis | None = None, **worker_overrides: object
    ) -> Consumer:
        """`frames_redis`: where node frames are (None: the main Redis, as in `lookout up`)."""
        worker = settings.worker.model_copy(update=worker_overrides)
        return Consumer(
            settings.model_copy(update={"worker": worker}),
            detectors,
            redis,
            sessionmaker,
            storage,
            frames_redis=frames_redis,
            name=name,
        )

    return factory


@pytest.fixture
def make_job(
    settings: Settings,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    storage: Storage,
):  # type: ignore[no-untyped-def]
    """Create and enqueue a job the way the API does (bypassing HTTP).

    `node_frame`: as the frame of a node that does not store frames (no file; the bytes go to
    `frames_redis`, None: the main Redis).
    """

    async def factory(
        image: bytes,
        *,
        tasks: tuple[str, ...] = ("faces",),
        enqueue: bool = True,
        owner_id: uuid.UUID | None = None,
        node_frame: bool = False,
        frames_redis: Redis | None = None,
    ) -> Job:
        info = inspect_image(image, max_pixels=settings.api.max_image_pixels)
        async with sessionmaker.begin() as session:
            job = await create_job(
                session,
                storage,
                image=image,
                info=info,
                tasks=tasks,
                owner_id=owner_id,
                store_image=not node_frame,
            )
        if enqueue:
            await enqueue_job(
                redis,
                job,
                jobs_maxlen=1000,
                frame=image if node_frame else None,
                frame_ttl_ms=60_000,
                frames_redis=frames_redis,
            )
        return job

    return factory


async def job_events(redis: Redis, job_id: uuid.UUID) -> list[dict[str, object]]:
    return [event for _, event in await streams.read_job_events(redis, job_id)]


@dataclass(frozen=True)
class RegisteredNode:
    id: uuid.UUID
    name: str
    secret: str


@pytest.fixture
def make_node(sessionmaker: async_sessionmaker[AsyncSession]):  # type: ignore[no-untyped-def]
    """Register a node the way POST /v1/nodes does (bypassing HTTP); returns id and secret."""

    async def factory(
        name: str = "cam-1", *, tasks: tuple[str, ...] = ("faces",), store_frames: bool = False
    ) -> RegisteredNode:
        async with sessionmaker.begin() as session:
            node, secret = await register_node(
                session, name=name, tasks=list(tasks), store_frames=store_frames
            )
        return RegisteredNode(node.id, node.name, secret)

    return factory


T = TypeVar("T")


async def statements_sent(
    engine: AsyncEngine, run: Callable[[], Awaitable[T]], keep: Callable[[str], bool]
) -> tuple[T, list[tuple[str, Any]]]:
    """What `run()` returned, and the statements it sent through `engine` that `keep` picks,
    each with its parameters (as the driver got them: EXPLAIN them again, or PREPARE them)."""
    sent: list[tuple[str, Any]] = []

    def remember(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if keep(statement):
            sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", remember)
    try:
        result = await run()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", remember)
    return result, sent


def node_token(settings: Settings, node_id: uuid.UUID) -> str:
    return issue_node_token(node_id, settings.nodes).token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def with_node_settings(settings: Settings, **overrides: object) -> Settings:
    nodes = NodeSettings.model_validate({**settings.nodes.model_dump(), **overrides})
    return settings.model_copy(update={"nodes": nodes})


@asynccontextmanager
async def serve_app(
    settings: Settings, api_key: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An app with its own settings and an HTTP + WebSocket client on it, in this task.

    With `api_key`, the client sends it (routes for API keys); node routes use bearer tokens.
    """
    application = create_app(settings)
    headers = {"X-API-Key": api_key} if api_key else {}
    async with application.router.lifespan_context(application):
        transport = websocket_transport(application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://lookout.test", headers=headers
        ) as http:
            yield http
