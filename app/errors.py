"""One error model: every domain error is an AppError rendered as {"error": code, "detail": …}.

A dependency outage (Postgres or Redis unreachable) is not a bug: it renders as 503
{"error": "unavailable"} with Retry-After, never as a 500.
"""

import re
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = structlog.get_logger()

# Seconds a client should wait before retrying after a 503 for a dependency outage.
UNAVAILABLE_RETRY_AFTER_S = 5


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: str = Field(examples=["not_found"], description="stable, machine-readable code")
    detail: str = Field(description="what went wrong, for a person")
    fields: list[FieldError] | None = Field(
        default=None, description="request validation errors, one per invalid field"
    )


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_doc(description: str, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A route's documented error response: its description and an example body, with a detail
    the API really sends for it (and `extra` members: a validation error's `fields`)."""
    return {
        "model": ErrorOut,
        "description": description,
        "content": {"application/json": {"example": error_body(code, detail, **extra)}},
    }


# Every error is rendered by install_error_handlers as ErrorOut (request validation errors too,
# not FastAPI's default body). /v1 routers are included with these so that the schema says what
# any of their routes may really send; routes add their own (404, 409, 413 …).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_doc(
        "The request body could not be parsed", "http_error", "There was an error parsing the body"
    ),
    401: error_doc(
        "Missing, invalid, expired or revoked credentials",
        "unauthorized",
        "missing API key: send it in the X-API-Key header",
    ),
    403: error_doc(
        "The credentials do not allow this", "forbidden", "this API key lacks the 'admin' scope"
    ),
    404: error_doc(
        "No such resource (or it belongs to someone else)",
        "not_found",
        "no job with id 092107a2-2956-457e-958f-19da952495df",
    ),
    408: error_doc(
        "The request body stalled (slow client)",
        "request_timeout",
        "the request body stalled for more than 15 s",
    ),
    409: error_doc(
        "Conflicts with the resource's state, or with a concurrent change",
        "conflict",
        "the resource was changed or deleted by another request meanwhile; re-read it",
    ),
    422: error_doc(
        "Invalid request: `fields` lists each invalid field",
        "invalid_request",
        "query.limit: Input should be less than or equal to 100",
        fields=[{"loc": ["query", "limit"], "msg": "Input should be less than or equal to 100"}],
    ),
    429: error_doc(
        "Rate limit exceeded; see Retry-After",
        "rate_limited",
        "rate limit of 600 requests per 60 s exceeded for this API key",
    ),
    503: error_doc(
        "`unavailable`: Postgres or Redis is unreachable, or the image store's disk failed; "
        "`busy`: too many uploads at once. See Retry-After",
        "unavailable",
        "the database is unreachable; the request was not completed, retry later",
    ),
}


# Every /v1 route of a client key can answer these; routes add their own (404, 409, 413 …).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    422: error_doc(
        "Invalid request parameters",
        "invalid_request",
        "query.limit: Input should be less than or equal to 100",
        fields=[{"loc": ["query", "limit"], "msg": "Input should be less than or equal to 100"}],
    ),
    401: error_doc(
        "Missing, malformed, unknown, revoked or expired API key",
        "unauthorized",
        "missing API key: send it in the X-API-Key header",
    ),
    403: error_doc(
        "The API key lacks the scope this route needs",
        "forbidden",
        "this API key lacks the 'write' scope",
    ),
    429: error_doc(
        "Rate limit of the API key exceeded; see Retry-After",
        "rate_limited",
        "rate limit of 600 requests per 60 s exceeded for this API key",
    ),
    503: error_doc(
        "Postgres or Redis is unreachable, or the image store's disk failed; see Retry-After",
        "unavailable",
        "the database is unreachable; the request was not completed, retry later",
    ),
}


# nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED_REQUEST = 499


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    headers: dict[str, str] | None = None  # extra response headers, e.g. WWW-Authenticate

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        # The class may declare headers (WWW-Authenticate of a token error); a caller's win.
        self.headers = dict(headers if headers is not None else type(self).headers or {})
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "ApiKey"})


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class InvalidInput(AppError):
    # The same code as a request that fails validation: one code for one kind of error (a bad
    # parameter or field), whether FastAPI or a service noticed it.
    status = 422
    code = "invalid_request"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class Busy(AppError):
    """The server is at a limit of its own (uploads being received): retry shortly."""

    status = 503
    code = "busy"


# Exceptions that mean "Postgres or Redis cannot be reached right now". asyncpg raises OSError
# subclasses (ConnectionRefusedError, FileNotFoundError for a missing Unix socket) and its own
# connection errors, which SQLAlchemy wraps as InterfaceError/OperationalError or lets through.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    RedisReadOnlyError,  # a replica in a failover, not yet promoted: writes come back
    ConnectionError,
    TimeoutError,
    OSError,
)


def _asyncpg_outage_errors() -> tuple[type[Exception], ...]:
    import asyncpg

    return (
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,
    )


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means a dependency is unreachable, not that the work is at fault.

    SQLAlchemy wraps some of asyncpg's connection errors in its generic DBAPIError (a
    connection closed in the middle of a query: Postgres stopped or restarted), so the wrapped
    error and its causes are looked at too. Counting such a failure as the job's own used up
    its deliveries during an outage and dead-lettered it (a CI run of tests/e2e/test_faults.py).
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    kinds = OUTAGE_ERRORS + _asyncpg_outage_errors()
    seen: BaseException | None = exc
    for _ in range(5):  # the wrapper, SQLAlchemy's adapted error, the driver's, their causes
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else seen.__cause__
    return False


def outage_detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file's operation: the image store's disk (full, gone, read-only). A connection's
        # OSError (asyncpg's missing Unix socket included) names no file. Not the path: the
        # client learns what failed, not where the server keeps its files.
        reason = exc.strerror or "an error"
        return (
            f"the image store's disk failed ({reason}); the request was not completed, retry later"
        )
    text = f"{exc.__class__.__module__}.{exc.__class__.__name__}".lower()
    which = "Redis" if "redis" in text else "the database"
    return f"{which} is unreachable; the request was not completed, retry later"


# "<_io.BytesIO object at 0x7f…>", "<class 'str'>": a Python repr tells a client nothing it can
# act on and something about the server it should not learn.
_PYTHON_REPR = re.compile(r"<[^<>]*\b(?:object at 0x[0-9a-fA-F]+|class '[^']*')[^<>]*>")


def without_python_reprs(text: str) -> str:
    return _PYTHON_REPR.sub("the input", text)


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return JSONResponse(
            error_body(exc.code, without_python_reprs(exc.detail)),
            status_code=exc.status,
            headers=exc.headers,
        )

    async def on_outage(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, PoolTimeoutError):
            # Every pooled connection is in use: a burst, not an outage. Say so.
            log.warning("database_pool_exhausted", error=repr(exc))
            return JSONResponse(
                error_body("busy", "all database connections are in use; retry shortly"),
                status_code=503,
                headers={"Retry-After": "1"},
            )
        log.warning("dependency_unavailable", error=repr(exc))
        return JSONResponse(
            error_body("unavailable", outage_detail(exc)),
            status_code=503,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = without_python_reprs(f"{where}: {first.get('msg', 'invalid request')}")
        fields = [
            {"loc": list(e.get("loc", ())), "msg": without_python_reprs(str(e.get("msg")))}
            for e in errors
        ]
        return JSONResponse(error_body("invalid_request", detail, fields=fields), status_code=422)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own 404/405 for unknown routes, rendered in the same shape.
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (allowed := _allowed_methods(app, request.scope)):
            # The API route's methods, not those of the dashboard's catch-all mount at /.
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = ", ".join(allowed)
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    async def on_concurrent_change(_: Request, exc: Exception) -> JSONResponse:
        # Two requests changed the same row at once and this one lost (e.g. PATCH racing a
        # DELETE): nothing was written; the client may re-read and retry.
        log.info("concurrent_change", error=repr(exc))
        return JSONResponse(
            error_body(
                "conflict",
                "the resource was changed or deleted by another request meanwhile; re-read it",
            ),
            status_code=409,
        )

    async def on_client_gone(request: Request, _: Exception) -> Response:
        # The client closed its connection before its body was read whole: nobody reads an
        # answer and nothing was stored. Not a bug: no traceback. 499 in the request log, as
        # nginx logs a request its client closed.
        log.info("client_disconnected", path=request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StarletteHTTPException):  # raised by a middleware, outside routing
            return await on_http_error(request, exc)
        if is_outage(exc):  # a driver's connection error wrapped in SQLAlchemy's generic one
            return await on_outage(request, exc)
        # A bug, not bad input: logged in full; the client gets the error shape, not a
        # plain-text 500 or a dropped connection, and the request id to quote.
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return JSONResponse(
            error_body("internal", "an unexpected error occurred; it has been logged"),
            status_code=500,
        )

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(StaleDataError, on_concurrent_change)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unhandled)
    for outage in OUTAGE_ERRORS + _asyncpg_outage_errors():
        app.add_exception_handler(outage, on_outage)


def _allowed_methods(app: FastAPI, scope: Any) -> list[str]:
    """Methods the API documents for this path (what a 405 must list in `Allow`).

    Read from the OpenAPI document: it lists every route with its methods, however routers
    are nested, and it is what clients are told.
    """
    path = scope.get("path", "")
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(m.upper() for m in operations if m.upper() in _HTTP_METHODS)
    return sorted(methods)


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
