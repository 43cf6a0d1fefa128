"""Annotated dependency aliases. Resources live on app.state.lookout, built by the lifespan."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.apikeys.service import ANONYMOUS_ADMIN, Principal, authenticate
from app.commits import commit
from app.errors import AppError, Forbidden, Unauthorized
from app.firehose import Firehose
from app.gallery.imports import ImportRunner
from app.limits import (
    FAILED_AUTH,
    WEBSOCKET_CONNECTS,
    check_client_limit,
    count_client_event,
    enforce_rate_limit,
)
from app.ops.metrics import ApiMetrics
from app.security import Scope
from app.settings import Settings
from app.socket_auth import guard_credentials
from app.storage import Storage

API_KEY_HEADER = "X-API-Key"
# WebSocket clients in browsers cannot set headers: they may pass the key as ?api_key=.
API_KEY_QUERY = "api_key"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    frames_redis: Redis  # node frames (app/streams.py); the same client as redis when unset
    storage: Storage
    firehose: Firehose
    metrics: ApiMetrics
    imports: ImportRunner  # bulk enrollments running in this process (app/gallery/imports.py)


# The dependencies that hand out the app's parts are `async def` although they never await:
# FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per dependency per
# request (four on an upload), which cost more than the upload's own work (bench/plumbing.py).
def app_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.lookout
    return state


async def get_state(connection: HTTPConnection) -> AppState:
    return app_state(connection)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The one commit point of a request: when the route returns, commit, then run the work
    queued for after the commit (app/commits.py: XADDs, node events); roll back on error."""
    async with state.sessionmaker() as session:
        yield session
        await commit(session)


# scope="function": commit before the response is sent, so a failed commit is the client's error
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_redis(state: StateDep) -> Redis:
    return state.redis


async def get_frames_redis(state: StateDep) -> Redis:
    return state.frames_redis


async def get_storage(state: StateDep) -> Storage:
    return state.storage


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


RedisDep = Annotated[Redis, Depends(get_redis)]
FramesRedisDep = Annotated[Redis, Depends(get_frames_redis)]
StorageDep = Annotated[Storage, Depends(get_storage)]


async def get_imports(state: StateDep) -> ImportRunner:
    return state.imports


ImportsDep = Annotated[ImportRunner, Depends(get_imports)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

# Declared with auto_error=False so the 401 comes from our error model, not FastAPI's.
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="`lk_<prefix>_<secret>` from `lookout apikey create`",
)


async def get_principal(
    connection: HTTPConnection,
    state: StateDep,
    token: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    """Authenticate the X-API-Key header and charge the key's rate limit (HTTP routes).

    Outside the route's transaction (app/apikeys/service.py authenticate): the key's lookup (and
    the occasional touch of its last use) need no common fate with the route's writes, and a
    route whose writes stand alone then needs no transaction at all."""
    if not state.settings.auth.enabled:
        return ANONYMOUS_ADMIN
    principal = await authenticate_client(state, token, client_address(connection))
    await enforce_rate_limit(state.redis, principal, state.settings.auth)
    return principal


def client_address(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


async def authenticate_client(state: AppState, token: str | None, client: str | None) -> Principal:
    """authenticate(), refused with 429 for an address past its failed-authentication limit
    (guessing keys costs a lookup each); a failure is counted against the address."""
    auth = state.settings.auth
    await check_client_limit(
        state.redis,
        FAILED_AUTH,
        client,
        limit=auth.failed_auth_per_client,
        window_s=auth.rate_limit_window_s,
        charge=False,
    )
    try:
        return await authenticate(
            state.engine, token, last_used_resolution_s=auth.last_used_resolution_s
        )
    except Unauthorized:
        if auth.failed_auth_per_client:
            await count_client_event(
                state.redis, FAILED_AUTH, client, window_s=auth.rate_limit_window_s
            )
        raise


ApiKeyDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets the request through only if the key holds `scope` (or admin)."""

    async def check(principal: ApiKeyDep) -> Principal:
        if not scope.granted_by(principal.scopes):
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")
        return principal

    return check


ReadKey = Annotated[Principal, Depends(require_scope(Scope.read))]
WriteKey = Annotated[Principal, Depends(require_scope(Scope.write))]


async def websocket_principal(
    state: AppState, connection: HTTPConnection, scope: Scope
) -> Principal:
    """Authenticate a WebSocket from its header or ?api_key=; raises Unauthorized/Forbidden.

    WebSockets hold their connection for long, so they are not charged to the key's rate limit;
    connects are counted per client address instead (429 → close 4429).
    """
    if not state.settings.auth.enabled:
        return ANONYMOUS_ADMIN
    auth = state.settings.auth
    client = client_address(connection)
    await check_client_limit(
        state.redis,
        WEBSOCKET_CONNECTS,
        client,
        limit=auth.websocket_connects_per_client,
        window_s=auth.rate_limit_window_s,
        charge=True,
    )
    principal = await authenticate_client(state, websocket_token(connection), client)
    if not scope.granted_by(principal.scopes):
        raise Forbidden(f"this API key lacks the {scope.value!r} scope")
    return principal


def websocket_token(connection: HTTPConnection) -> str | None:
    return connection.headers.get(API_KEY_HEADER) or connection.query_params.get(API_KEY_QUERY)


async def guard_websocket_key(
    state: AppState, connection: HTTPConnection, principal: Principal
) -> AppError:
    """Returns (401) once the socket's key is revoked or expired; see app/socket_auth.py.

    Never returns while auth is off (no key to re-check).
    """
    if not state.settings.auth.enabled or principal.owner_id is None:
        await asyncio.Event().wait()
    token = websocket_token(connection)

    async def check() -> None:
        await authenticate(
            state.engine, token, last_used_resolution_s=state.settings.auth.last_used_resolution_s
        )

    return await guard_credentials(
        check,
        interval_s=state.settings.auth.websocket_recheck_s,
        expires_at=lambda: principal.expires_at,
    )
