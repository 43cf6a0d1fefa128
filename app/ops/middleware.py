"""Per-request context: request id (bound into every log line), access log, latency metric."""

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops.metrics import ApiMetrics

log = structlog.get_logger()

REQUEST_ID_HEADER = "X-Request-ID"
# A client-supplied id is kept only if it is short and plain (it ends up in logs).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Probes and scrapes would drown the access log.
_QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})


class RequestContext:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = (
            dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        )
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                elapsed_s = time.perf_counter() - started
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.metrics.http_request_seconds.labels(
                    scope["method"], template, str(status)
                ).observe(elapsed_s)
                if scope["path"] not in _QUIET_PATHS:
                    log.info(
                        "http_request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        ms=round(elapsed_s * 1000, 2),
                    )
            structlog.contextvars.unbind_contextvars("request_id", "job_id")
