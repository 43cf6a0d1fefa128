"""Request limits: body size (before routing), per-key rate, WebSocket clients per process."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import streams
from app.errors import AppError, Busy, PayloadTooLarge, RateLimited, error_body
from app.settings import AuthSettings

if TYPE_CHECKING:
    from app.apikeys.service import Principal

log = structlog.get_logger()


def limit_of(principal: "Principal", auth: AuthSettings) -> int:
    """The caller's requests per window; 0: not limited (its key's own 0, the deployment's 0,
    or keys off)."""
    if principal.owner_id is None:
        return 0
    return principal.rate_limit if principal.rate_limit is not None else auth.rate_limit_requests


async def enforce_rate_limit(redis: Redis, principal: "Principal", auth: AuthSettings) -> None:
    """Count one request against the key's fixed window in Redis; RateLimited when over.

    Fixed windows are shared by every API replica (the counter lives in Redis) and cost one
    round trip. A burst of up to twice the limit can straddle a window edge; that is accepted.
    """
    limit = limit_of(principal, auth)  # the key's own, or the deployment's default
    if limit == 0:
        return
    window = int(time.time() // auth.rate_limit_window_s)
    key = streams.rate_limit_key(str(principal.owner_id), window)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, auth.rate_limit_window_s + 1)
            count, _ = await pipe.execute()
    except (RedisError, OSError) as exc:
        # Fail open: with Redis down the limit cannot be counted, and a read that needs only
        # Postgres must keep working (routes that need Redis still answer 503 on their own).
        log.warning("rate_limit_unavailable", key_prefix=principal.key_prefix, error=repr(exc))
        return
    if cast(int, count) > limit:
        if count == limit + 1:
            # Once a window per key: a client such as Frigate's detector reads a 429 as "no
            # detections" and logs nothing, so the operator learns it here.
            log.warning(
                "rate_limited",
                key_prefix=principal.key_prefix,
                limit=limit,
                window_s=auth.rate_limit_window_s,
                hint="raise it for this key: lookout apikey limit <prefix> <requests>",
            )
        raise RateLimited(
            f"rate limit of {limit} requests per {auth.rate_limit_window_s} s exceeded "
            "for this API key",
            retry_after_s=streams.retry_after_s(auth.rate_limit_window_s),
        )


# How a middleware renders a refusal made before any route ran: (request path, the error) →
# (status, JSON body). Lookout's own error body unless the app passes one that answers each
# compatible API's clients in their API's shape (app/compat/refusals.py).
RenderRefusal = Callable[[str, AppError], tuple[int, dict[str, Any]]]


def lookout_refusal(_: str, error: AppError) -> tuple[int, dict[str, Any]]:
    return error.status, error_body(error.code, error.detail)


FAILED_AUTH = "failed_auth"
WEBSOCKET_CONNECTS = "ws_connects"


async def check_client_limit(
    redis: Redis, kind: str, client: str | None, *, limit: int, window_s: int, charge: bool
) -> None:
    """RateLimited when `client` has reached `limit` of `kind` in the current window.

    `charge`: count this call too (a WebSocket connect); else only look (failed authentications
    are counted by `count_client_event` once they have failed). Fails open without Redis.
    """
    if limit == 0 or client is None:
        return
    key = streams.client_limit_key(kind, client, int(time.time() // window_s))
    try:
        if charge:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window_s + 1)
                count, _ = await pipe.execute()
            over = cast(int, count) > limit
        else:
            over = int(await redis.get(key) or 0) >= limit
    except (RedisError, OSError) as exc:
        log.warning("client_limit_unavailable", kind=kind, error=repr(exc))
        return
    if over:
        what = "failed authentications" if kind == FAILED_AUTH else "WebSocket connects"
        raise RateLimited(
            f"too many {what} from this address ({limit} per {window_s} s)",
            retry_after_s=streams.retry_after_s(window_s),
        )


async def count_client_event(redis: Redis, kind: str, client: str | None, *, window_s: int) -> None:
    """Count one event (a failed authentication) against `client`'s window; fails open."""
    if client is None:
        return
    key = streams.client_limit_key(kind, client, int(time.time() // window_s))
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s + 1)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("client_limit_unavailable", kind=kind, error=repr(exc))


# RFC 6455 "try again later": the client should reconnect after a while.
WS_CLOSE_TRY_AGAIN_LATER = 1013


class WebSocketLimit:
    """At most `limit` open WebSockets in this process, on every WebSocket route; `clients` counts.

    A middleware, so that every WebSocket route (job events, firehose, node stream, any added
    later) holds a slot from before its handler runs until it returns, however it ends. Over the
    limit the socket is accepted, then closed with 1013: a browser cannot read why a handshake
    was refused. Single event loop: no lock needed.
    """

    def __init__(self, app: ASGIApp, *, limit: int, clients: Gauge) -> None:
        self.app = app
        self.limit = limit
        self.clients = clients
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if self.open >= self.limit:
            websocket = WebSocket(scope, receive, send)
            await websocket.accept()
            await websocket.close(
                code=WS_CLOSE_TRY_AGAIN_LATER,
                reason=f"the server holds its maximum of {self.limit} WebSockets",
            )
            return
        self.open += 1
        self.clients.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.clients.dec()


class BodySizeLimit:
    """Refuse request bodies over `max_body_bytes` with 413, before the multipart parser runs.

    A declared Content-Length over the limit is refused without reading. A chunked body is read
    up to the limit, then replayed to the app, so no route ever sees a body over the limit.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, render: RenderRefusal = lookout_refusal
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_body_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body is larger than the limit of {self.max_body_bytes} bytes"
        )
        status, body = self.render(scope["path"], error)
        await send_refusal(send, status, body)


# Bodies at most this large pass admission freely: JSON calls, not uploads.
SMALL_BODY_BYTES = 64 * 1024
BUSY_RETRY_AFTER_S = 1


class UploadAdmission:
    """At most `limit` large request bodies in flight per process; decided before any is read.

    A body over SMALL_BODY_BYTES (declared, or chunked with no length) takes a slot for the
    whole request; when none frees up within `wait_s` the client gets 503 `busy` with
    Retry-After, its body unread. This bounds the memory a burst of uploads holds (each is read
    whole to be decoded) and the database connections it asks for, so a burst reads as "busy,
    retry" rather than as a database outage. Single event loop: a semaphore is enough.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, wait_s: float, render: RenderRefusal = lookout_refusal
    ) -> None:
        self.app = app
        self.limit = limit
        self.wait_s = wait_s
        self.render = render
        self.slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_large_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            if self.slots.locked():  # no free slot now: wait a little for one
                if self.wait_s <= 0:
                    raise TimeoutError
                async with asyncio.timeout(self.wait_s):
                    await self.slots.acquire()
            else:
                await self.slots.acquire()  # immediate
        except TimeoutError:
            status, body = self.render(
                scope["path"],
                Busy(
                    f"the server is receiving its maximum of {self.limit} uploads; retry in "
                    f"{BUSY_RETRY_AFTER_S} s"
                ),
            )
            await send_refusal(
                send,
                status,
                body,
                extra_headers=[(b"retry-after", str(BUSY_RETRY_AFTER_S).encode())],
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()


def _has_large_body(scope: Scope) -> bool:
    if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return False
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is None:
        return True  # chunked: its size is unknown until read
    return not declared.isdigit() or int(declared) > SMALL_BODY_BYTES


class ClientTooSlow(StarletteHTTPException):
    """The client stopped sending its body. An HTTPException so that body parsers re-raise it
    (FastAPI turns other errors while reading a body into 400)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body stalled for more than {timeout_s:g} s",
            headers={"Connection": "close"},
        )


class BodyReadTimeout:
    """A request body may pause at most `timeout_s` between two reads; then 408 and close.

    uvicorn has no body timeout: a client sending a byte a second would hold its connection,
    and an upload slot, for as long as it liked.
    """

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()  # waiting for a disconnect is not a body read
            try:
                message = await asyncio.wait_for(receive(), timeout=self.timeout_s)
            except TimeoutError:
                raise ClientTooSlow(self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, receive_in_time, send)


async def send_refusal(
    send: Send,
    status: int,
    body: dict[str, Any],
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *(extra_headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
