"""Probes, metrics, request ids, and 503 (never 500) when Postgres or Redis is unreachable."""

import asyncio
import uuid

import httpx
from sqlalchemy import text

from app.main import create_app
from app.ops.service import firehose_readers
from app.settings import ClusterSettings, DatabaseSettings, MqttSettings, RedisSettings
from tests.conftest import shared_image, websocket_transport

T1 = shared_image("scenes/t1.jpg")


async def test_live_needs_no_key_and_no_dependency(client):
    client.headers.pop("X-API-Key")
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_fails_without_a_worker_heartbeat_and_passes_with_one(client, make_consumer):
    response = await client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"]
    assert not body["checks"]["workers"]["ok"]

    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer("beating").run(stop))
    try:
        for _ in range(50):
            response = await client.get("/health/ready")
            if response.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["workers"] == {"ok": True, "detail": "1 alive"}
    finally:
        stop.set()
        await worker
    # A worker that stops cleanly takes its heartbeat with it.
    assert (await client.get("/health/ready")).status_code == 503


async def test_metrics_expose_http_queue_job_and_websocket_series(client, make_consumer):
    for _ in range(2):
        await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    await client.post("/v1/images", files={"image": ("x.jpg", b"nope", "image/jpeg")})
    await make_consumer().run(burst=True)
    await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})  # queued

    text = (await client.get("/metrics")).text
    assert 'lookout_jobs{status="done"} 2.0' in text
    assert 'lookout_jobs{status="queued"} 1.0' in text
    assert "lookout_jobs_stream_lag 1.0" in text
    assert "lookout_jobs_stream_pending 0.0" in text
    assert "lookout_jobs_dead_letters 0.0" in text
    # The two results wait for the webhooks' reader (none runs here). MQTT is not configured
    # here and clustering is off: their groups, made at start but read by nobody, are not
    # reported (their lag only grew, an alarm that was not one).
    assert 'lookout_firehose_group_lag{group="webhooks"} 2.0' in text
    assert 'lookout_firehose_group_pending{group="webhooks"} 0.0' in text
    assert 'group="mqtt"' not in text and 'group="clusters"' not in text
    assert "lookout_websocket_clients 0.0" in text
    assert 'lookout_dependency_up{dependency="postgres"} 1.0' in text
    uploads = 'method="POST",route="/v1/images",status="202"'
    assert f"lookout_http_request_duration_seconds_count{{{uploads}}} 3.0" in text
    assert 'route="/v1/images",status="415"' in text


async def test_worker_metrics_record_inference_per_model_and_batch_sizes(make_job, make_consumer):
    for _ in range(3):
        await make_job(T1)
    consumer = make_consumer(batch_size=2)
    await consumer.run(burst=True)
    registry = consumer.metrics.registry
    # One observation per batch (2 + 1 jobs), labelled with the face pack's model files.
    faces = {"model": "det_500m.onnx+mobilefacenet.onnx"}
    assert registry.get_sample_value("lookout_worker_inference_ms_count", faces) == 2
    assert registry.get_sample_value("lookout_worker_batch_size_count") == 2  # 2 + 1
    assert registry.get_sample_value("lookout_worker_batch_size_sum") == 3
    assert registry.get_sample_value("lookout_worker_jobs_total", {"outcome": "done"}) == 3


async def test_every_response_carries_a_request_id(client):
    response = await client.get("/v1/jobs", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/v1/jobs")).headers["x-request-id"]
    assert len(generated) == 32


async def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.request(method, path, **kwargs)


async def test_postgres_unreachable_is_503_not_500(settings, tmp_path, api_key):
    gone = f"postgresql+asyncpg://postgres@/lookout?host={tmp_path}"  # no server there
    app = create_app(settings.model_copy(update={"database": DatabaseSettings(url=gone)}))
    headers = {"X-API-Key": api_key}
    for method, path, kwargs in [
        ("GET", "/v1/jobs", {}),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000", {}),
        ("POST", "/v1/images", {"files": {"image": ("t1.jpg", T1, "image/jpeg")}}),
    ]:
        response = await call(app, method, path, headers=headers, **kwargs)
        assert response.status_code == 503, (path, response.text)
        assert response.json() == {
            "error": "unavailable",
            "detail": "the database is unreachable; the request was not completed, retry later",
        }
        assert response.headers["retry-after"] == "5"
    ready = await call(app, "GET", "/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"]["ok"] is False
    metrics = await call(app, "GET", "/metrics")
    assert 'lookout_dependency_up{dependency="postgres"} 0.0' in metrics.text


async def test_a_websocket_whose_key_cannot_be_checked_is_accepted_then_closed_4503(
    settings, tmp_path, api_key
):
    """Postgres gone while a socket authenticates: accepted, then closed with 4503. A close
    before the accept would be a refused handshake (HTTP 403 from a real server, which a
    browser reads as a bad key); the test transport hides that difference, so this test reads
    the ASGI messages themselves."""
    gone = f"postgresql+asyncpg://postgres@/lookout?host={tmp_path}"  # no server there
    app = create_app(settings.model_copy(update={"database": DatabaseSettings(url=gone)}))
    async with app.router.lifespan_context(app):
        for path in ("/v1/ws", f"/v1/jobs/{uuid.uuid4()}/events"):
            sent = await asgi_websocket_messages(app, path, f"api_key={api_key}")
            assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"], sent
            assert sent[1]["code"] == 4503


async def asgi_websocket_messages(app, path: str, query: str) -> list[dict]:
    """What the app sends a WebSocket client that connects and then waits, until it closes."""
    sent: list[dict] = []
    connected = False

    async def receive() -> dict:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()  # the client says nothing more
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "ws",
        "query_string": query.encode(),
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1234),
        "server": ("t", 80),
        "subprotocols": [],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return sent


async def test_redis_unreachable_is_503_not_500(settings, tmp_path, api_key):
    gone = f"unix://{tmp_path}/redis.sock"
    app = create_app(settings.model_copy(update={"redis": RedisSettings(url=gone)}))
    response = await call(
        app,
        "POST",
        "/v1/images",
        headers={"X-API-Key": api_key},
        files={"image": ("t1.jpg", T1, "image/jpeg")},
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert "Redis" in response.json()["detail"]
    ready = await call(app, "GET", "/health/ready")
    assert ready.json()["checks"]["redis"]["ok"] is False


async def test_an_upload_that_cannot_be_queued_is_withdrawn(settings, tmp_path, api_key, engine):
    from sqlalchemy import text

    from app.settings import AuthSettings

    gone = f"unix://{tmp_path}/redis.sock"
    app = create_app(
        settings.model_copy(
            update={
                "redis": RedisSettings(url=gone),
                "auth": AuthSettings(rate_limit_requests=0),  # reach the XADD
            }
        )
    )
    response = await call(
        app,
        "POST",
        "/v1/images",
        headers={"X-API-Key": api_key},
        files={"image": ("t1.jpg", T1, "image/jpeg")},
    )
    assert response.status_code == 503
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM jobs"))).scalar() == 0
    assert not settings.storage_dir.exists() or list(settings.storage_dir.iterdir()) == []


async def test_websockets_over_the_limit_close_with_try_again_later(settings, api_key):
    from httpx_ws import aconnect_ws

    from app.settings import ApiSettings
    from tests.app.test_auth import ws_close_code

    app = create_app(settings.model_copy(update={"api": ApiSettings(max_websocket_clients=1)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=websocket_transport(app),
            base_url="http://t",
            headers={"X-API-Key": api_key},
        ) as http:
            async with aconnect_ws("/v1/ws", http):
                await asyncio.sleep(0.05)
                metrics = (await http.get("/metrics")).text
                assert "lookout_websocket_clients 1.0" in metrics
                assert await ws_close_code(http, "/v1/ws") == 1013


async def test_one_maintenance_lock_holder_at_a_time(redis):
    from app import streams

    lock = streams.MAINTENANCE_LOCK
    assert await streams.try_lock(redis, lock, owner="replica-a", ttl_s=0.2)
    assert not await streams.try_lock(redis, lock, owner="replica-b", ttl_s=0.2)
    await asyncio.sleep(0.25)
    assert await streams.try_lock(redis, lock, owner="replica-b", ttl_s=0.2)


async def test_an_upload_finding_every_database_connection_in_use_is_busy(settings):
    """The pool has no overflow (app/db.py): an upload that cannot get a connection within the
    pool timeout is 503 `busy`, not an outage; once one is free, uploads go through again."""
    from app.settings import AuthSettings

    app = create_app(
        settings.model_copy(
            update={
                "database": DatabaseSettings(
                    url=settings.database.url, pool_size=1, connect_timeout_s=2.0
                ),
                "auth": AuthSettings(enabled=False),  # the upload's INSERT is its only statement
            }
        )
    )
    files = {"image": ("t1.jpg", T1, "image/jpeg")}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            async with app.state.lookout.engine.connect() as held:  # the pool's one connection
                await held.exec_driver_sql("SELECT 1")
                refused = await http.post("/v1/images", files=files)
            assert refused.status_code == 503, refused.text
            assert refused.json() == {
                "error": "busy",
                "detail": "all database connections are in use; retry shortly",
            }
            accepted = await http.post("/v1/images", files=files)
            assert accepted.status_code == 202, accepted.text


def test_the_firehose_groups_reported_are_those_something_reads(settings):
    assert firehose_readers(settings) == ("webhooks",)
    everything = settings.model_copy(
        update={
            "mqtt": MqttSettings(url="mqtt://broker:1883"),
            "clusters": ClusterSettings(enabled=True),
        }
    )
    assert firehose_readers(everything) == ("webhooks", "mqtt", "clusters")


async def test_ready_waits_for_the_schema_this_release_needs(client, engine):
    """Kubernetes applies the migration Job and the API together: an API on an empty or an
    older schema was ready (SELECT 1 answered) and served errors. Not ready until migrated."""
    async with engine.begin() as connection:
        head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        await connection.execute(text("UPDATE alembic_version SET version_num = '0013'"))
    try:
        body = (await client.get("/health/ready")).json()
        assert body["ready"] is False
        assert body["checks"]["postgres"] == {
            "ok": False,
            "detail": f"schema at 0013, this release needs {head}: run `lookout migrate`",
        }
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )
    assert (await client.get("/health/ready")).json()["checks"]["postgres"]["ok"] is True
