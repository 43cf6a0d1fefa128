"""API keys: who may call, which jobs they see (no BOLA), rate limits, expiry, revocation."""

import uuid
from datetime import timedelta

import httpx
import pytest
from httpx_ws import aconnect_ws
from httpx_ws._exceptions import WebSocketDisconnect
from pydantic import ValidationError

from app.apikeys.service import revoke_key
from app.main import create_app
from app.security import Scope, generate_key, parse_key, secret_matches
from app.settings import AuthSettings, ConfigError, Settings
from tests.conftest import shared_image

T1 = shared_image("scenes/t1.jpg")
UPLOAD = {"image": ("t1.jpg", T1, "image/jpeg")}


def as_key(client: httpx.AsyncClient, token: str | None) -> dict[str, str]:
    return {"X-API-Key": token} if token is not None else {}


async def ws_close_code(client: httpx.AsyncClient, url: str, **kwargs) -> int:
    """The close code the server ends the WebSocket with before sending anything.

    A socket left open fails after 30 s (TimeoutError), not at the test's overall timeout.
    """
    try:
        async with aconnect_ws(url, client, **kwargs) as ws:
            await ws.receive_json(timeout=30)
    except BaseException as exc:
        closes = [e for e in _leaves(exc) if isinstance(e, WebSocketDisconnect)]
        if not closes:
            raise
        return closes[0].code
    raise AssertionError("the WebSocket was not closed")


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


async def upload(client: httpx.AsyncClient, token: str) -> dict:
    response = await client.post("/v1/images", files=UPLOAD, headers={"X-API-Key": token})
    assert response.status_code == 202, response.text
    return response.json()


def test_keys_are_prefixed_hashed_and_verified_in_constant_time():
    new = generate_key()
    assert new.token.startswith(f"lk_{new.prefix}_")
    prefix, secret = parse_key(new.token)
    assert prefix == new.prefix
    assert secret not in new.secret_sha256 and len(new.secret_sha256) == 64
    assert secret_matches(secret, new.secret_sha256)
    assert not secret_matches(secret + "x", new.secret_sha256)
    assert parse_key("lk_nothex_abc") is None


@pytest.mark.parametrize(
    "token, detail",
    [
        (None, "missing API key"),
        ("Bearer something", "malformed API key"),
        ("lk_0123456789ab_" + "x" * 43, "invalid API key"),
    ],
)
async def test_requests_without_a_valid_key_get_401(client, token, detail):
    client.headers.pop("X-API-Key")
    response = await client.get("/v1/jobs", headers=as_key(client, token))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert detail in response.json()["detail"]
    assert response.headers["www-authenticate"] == "ApiKey"


async def test_a_wrong_secret_for_a_real_prefix_gets_401(client, make_key):
    token = await make_key("alice", (Scope.read,))
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = await client.get("/v1/jobs", headers={"X-API-Key": forged})
    assert response.status_code == 401


async def test_an_expired_key_gets_401(client, make_key):
    token = await make_key("old", (Scope.read,), expires_in=timedelta(seconds=-1))
    response = await client.get("/v1/jobs", headers={"X-API-Key": token})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_a_revoked_key_gets_401(client, make_key, sessionmaker):
    token = await make_key("leaked", (Scope.read,))
    assert (await client.get("/v1/jobs", headers={"X-API-Key": token})).status_code == 200
    async with sessionmaker.begin() as session:
        await revoke_key(session, parse_key(token)[0])
    response = await client.get("/v1/jobs", headers={"X-API-Key": token})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


async def test_a_read_only_key_cannot_upload_or_delete(client, make_key):
    reader = await make_key("reader", (Scope.read,))
    response = await client.post("/v1/images", files=UPLOAD, headers={"X-API-Key": reader})
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "detail": "this API key lacks the 'write' scope",
    }
    response = await client.delete(f"/v1/jobs/{uuid.uuid4()}", headers={"X-API-Key": reader})
    assert response.status_code == 403


async def test_another_keys_job_is_404_everywhere(client, make_key):
    alice = await make_key("alice", (Scope.read, Scope.write))
    bob = await make_key("bob", (Scope.read, Scope.write))
    job = await upload(client, alice)
    as_bob = {"X-API-Key": bob}

    for path in (job["links"]["self"], job["links"]["image"], job["links"]["processed_image"]):
        response = await client.get(path, headers=as_bob)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "detail": f"no job with id {job['id']}"}
    assert (await client.delete(job["links"]["self"], headers=as_bob)).status_code == 404
    assert (await client.get("/v1/jobs", headers=as_bob)).json()["items"] == []

    # The owner, and an admin, still see it; Bob's delete did nothing.
    assert (await client.get(job["links"]["self"], headers={"X-API-Key": alice})).status_code == 200
    listed = (await client.get("/v1/jobs")).json()["items"]  # the client's default admin key
    assert [j["id"] for j in listed] == [job["id"]]


async def test_another_keys_job_events_close_as_not_found(client, make_key):
    alice = await make_key("alice", (Scope.read, Scope.write))
    bob = await make_key("bob", (Scope.read,))
    job = await upload(client, alice)
    code = await ws_close_code(client, job["links"]["events"], headers={"X-API-Key": bob})
    assert code == 4404


async def test_a_websocket_without_a_key_closes_4401(client):
    client.headers.pop("X-API-Key")
    assert await ws_close_code(client, "/v1/ws") == 4401


async def test_the_firehose_shows_a_key_only_its_own_jobs(client, make_key, make_consumer):
    import asyncio

    alice = await make_key("alice", (Scope.read, Scope.write))
    bob = await make_key("bob", (Scope.read, Scope.write))
    client.headers.pop("X-API-Key")  # the key rides in the query, as a browser would send it
    async with aconnect_ws(f"/v1/ws?api_key={bob}", client) as ws:
        await asyncio.sleep(0.1)
        await upload(client, alice)
        bobs = await upload(client, bob)
        await make_consumer().run(burst=True)
        event = await ws.receive_json()
    assert event["type"] == "result"
    assert event["job_id"] == bobs["id"]


async def test_over_the_rate_limit_gets_429_with_retry_after(settings, make_key):
    limited = settings.model_copy(
        update={"auth": AuthSettings(rate_limit_requests=3, rate_limit_window_s=60)}
    )
    app = create_app(limited)
    token = await make_key("busy", (Scope.read,))
    other = await make_key("quiet", (Scope.read,))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            statuses = [
                (await http.get("/v1/jobs", headers={"X-API-Key": token})).status_code
                for _ in range(4)
            ]
            over = await http.get("/v1/jobs", headers={"X-API-Key": token})
            other_key = await http.get("/v1/jobs", headers={"X-API-Key": other})
    assert statuses == [200, 200, 200, 429]
    assert over.status_code == 429
    assert over.json()["error"] == "rate_limited"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert other_key.status_code == 200  # limits are per key


async def test_a_key_s_own_rate_limit_replaces_the_default(settings, make_key, capfd):
    """Frigate's detector posts every frame with motion, far past a default meant for people's
    scripts; its key gets a limit of its own (or none), the other keys keep the default."""
    limited = settings.model_copy(
        update={"auth": AuthSettings(rate_limit_requests=3, rate_limit_window_s=3600)}
    )
    app = create_app(limited)
    plain = await make_key("script", (Scope.read,))
    higher = await make_key("frigate", (Scope.read,), rate_limit=6)
    unlimited = await make_key("nvr", (Scope.read,), rate_limit=0)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

            async def statuses(token: str, n: int) -> list[int]:
                return [
                    (await http.get("/v1/jobs", headers={"X-API-Key": token})).status_code
                    for _ in range(n)
                ]

            described = {
                token: (await http.get("/v1/apikeys/me", headers={"X-API-Key": token})).json()
                for token in (plain, higher, unlimited)
            }
            capfd.readouterr()
            plain_statuses = await statuses(plain, 4)  # one of its 3 went to /me
            higher_statuses = await statuses(higher, 7)
            unlimited_statuses = await statuses(unlimited, 12)
            logged = capfd.readouterr().out.splitlines()
    assert plain_statuses == [200, 200, 429, 429]
    assert higher_statuses == [200] * 5 + [429, 429]
    assert unlimited_statuses == [200] * 12
    assert [described[t]["rate_limit"] for t in (plain, higher, unlimited)] == [3, 6, None]
    assert described[plain]["rate_limit_window_s"] == 3600  # an hour: no window edge mid-test
    # The operator hears of it once a window per key (the dev console's log lines), naming the
    # key and how to raise its limit.
    warned = [line for line in logged if " rate_limited " in line]
    assert len(warned) == 2, logged
    for line, token, limit in zip(warned, (plain, higher), (3, 6), strict=True):
        assert f"key_prefix={token.split('_')[1]}" in line and f"limit={limit}" in line, line
        assert "lookout apikey limit" in line, line


async def test_auth_off_in_dev_lets_requests_through_as_admin(settings):
    app = create_app(settings.model_copy(update={"auth": AuthSettings(enabled=False)}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/v1/images", files=UPLOAD)
            assert response.status_code == 202
            assert (await http.get(response.json()["links"]["self"])).status_code == 200


@pytest.mark.parametrize("env", ["local", "staging", "prod"])
def test_auth_cannot_be_off_outside_dev(env):
    with pytest.raises(ValidationError, match="only when env is 'dev'"):
        Settings(env=env, auth=AuthSettings(enabled=False))


def test_startup_refuses_placeholder_secrets_outside_dev():
    with pytest.raises(ConfigError, match="LOOKOUT_SECRET_KEY is a placeholder"):
        create_app(Settings(env="prod"))
    with pytest.raises(ConfigError, match="placeholder password"):
        Settings(
            env="staging",
            secret_key="x" * 40,
            database={"url": "postgresql+asyncpg://lookout:postgres@db/lookout"},
        ).check_startup()
    Settings(env="prod", secret_key="x" * 40).check_startup()  # a real secret passes
    Settings(env="dev").check_startup()  # dev accepts placeholders


@pytest.mark.parametrize(
    "placeholder",
    # .env.example's and deploy/k8s's own values, and the marker in any case or position.
    ["change-me-postgres", "change-me-redis", "CHANGE-ME", "xChangeMe", "my_change_me_value"],
)
def test_startup_refuses_any_value_marked_change_me(placeholder):
    real = "x" * 40
    with pytest.raises(ConfigError, match="LOOKOUT_SECRET_KEY is a placeholder"):
        Settings(env="prod", secret_key=placeholder.ljust(40, "x")).check_startup()
    with pytest.raises(ConfigError, match="LOOKOUT_DATABASE__URL uses a placeholder password"):
        Settings(
            env="prod",
            secret_key=real,
            database={"url": f"postgresql+asyncpg://lookout:{placeholder}@postgres/lookout"},
        ).check_startup()
    with pytest.raises(ConfigError, match="LOOKOUT_REDIS__URL uses a placeholder password"):
        Settings(
            env="prod", secret_key=real, redis={"url": f"redis://:{placeholder}@redis:6379/0"}
        ).check_startup()
    # The same shapes with real passwords start.
    Settings(
        env="prod",
        secret_key=real,
        database={"url": "postgresql+asyncpg://lookout:Zq81mWp4r7@postgres/lookout"},
        redis={"url": "redis://:Hh3kT9xv0b@redis:6379/0"},
    ).check_startup()


async def test_a_key_s_last_use_is_written_at_most_once_per_resolution(engine, make_key):
    from sqlalchemy import text

    from app.apikeys.service import authenticate

    token = await make_key("seen", (Scope.read,))
    prefix = token.split("_")[1]

    async def last_used():  # type: ignore[no-untyped-def]
        async with engine.connect() as connection:
            return await connection.scalar(
                text("SELECT last_used_at FROM api_keys WHERE prefix = :prefix"), {"prefix": prefix}
            )

    assert await last_used() is None
    principal = await authenticate(engine, token, last_used_resolution_s=3600)
    assert principal.key_prefix == prefix and principal.scopes == {Scope.read}
    first = await last_used()
    assert first is not None  # committed: another connection sees it
    await authenticate(engine, token, last_used_resolution_s=3600)
    assert await last_used() == first  # within the resolution: not written again
    await authenticate(engine, token, last_used_resolution_s=0)
    assert await last_used() > first
