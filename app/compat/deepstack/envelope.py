"""What every DeepStack-style route shares: its error envelope, its form, its API key.

DeepStack's server (johnolafenwa/DeepStack, server/server.go and server/middlewares/
middlewares.go) answers every error as `{"success": false, "error": "...", "duration": 0}` with
an HTTP status (400 bad input, 401 bad key, 403 not allowed), reads every field from a
multipart (or url-encoded) form, and takes its key as the form field `api_key`. Routes built on
DeepStackRoute answer the same way: any AppError (the services' own errors), request
validation error, unparsable body or Postgres/Redis outage raised while serving them is
rendered in this envelope, never in Lookout's `{"error", "detail"}` shape. CodeProject.AI's
routes (`/v1/vision/alpr`, …) reuse all of it.
"""

import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.apikeys.service import ANONYMOUS_ADMIN, Principal
from app.compat.deepstack.errors import DeepStackError
from app.compat.deepstack.schemas import DeepStackErrorOut
from app.deps import StateDep, api_key_header, authenticate_client, client_address
from app.errors import (
    UNAVAILABLE_RETRY_AFTER_S,
    AppError,
    PayloadTooLarge,
    is_outage,
    outage_detail,
)
from app.gallery.service import Upload
from app.limits import enforce_rate_limit
from app.schema_types import storable_text
from app.security import Scope
from app.settings import Settings

log = structlog.get_logger()

# The form field DeepStack reads its key from (middlewares.CheckApiKey: c.PostForm("api_key")).
API_KEY_FIELD = "api_key"
# Multipart limits: register takes "any number" of photos, but not without bound.
MAX_FORM_FILES = 32
MAX_FORM_FIELDS = 64


# Lookout statuses that DeepStack's server never used for bad input: it answered 400 for every
# unusable image or field (middlewares.go CheckImage/CheckUserID, face.py "invalid image").
_STATUS_AS_DEEPSTACK = {404: 400, 409: 400, 415: 400, 422: 400}
# ... except an image over the size limits, which stays 413 whoever raised it.
_STATUS_FOR_CODE = {"image_too_large": 413, "payload_too_large": 413}
# DeepStack's wording where a client may recognise it.
_WORDS_FOR_CODE = {
    "unauthorized": "Incorrect api key",
    "invalid_image": "invalid image",
    "unsupported_image_type": "invalid image",
}


def duration_s(request: Request) -> float:
    """Seconds since the route began, for the `duration` field (DeepStack's server declared it
    and always sent 0; here it is the real time the API took)."""
    began = getattr(request.state, "deepstack_started_s", None)
    return 0.0 if began is None else round(time.perf_counter() - began, 4)


def json_response(body: dict[str, Any], status_code: int = 200, **headers: str) -> JSONResponse:
    """Plain JSON with a Content-Length, never chunked: Blue Iris cannot read chunked JSON."""
    return JSONResponse(body, status_code=status_code, headers=headers or None)


def error_response(request: Request, status: int, error: str, **headers: str) -> JSONResponse:
    body = DeepStackErrorOut(success=False, error=error, duration=duration_s(request))
    return json_response(body.model_dump(), status, **headers)


def translate(exc: Exception) -> tuple[int, str, dict[str, str]] | None:
    """(status, DeepStack error text, headers) for an exception a DeepStack route may raise;
    None for a bug (re-raised: a 500 with a traceback in the log)."""
    if isinstance(exc, DeepStackError):
        return exc.status, exc.detail, exc.headers or {}
    if isinstance(exc, AppError):
        status = _STATUS_FOR_CODE.get(exc.code) or _STATUS_AS_DEEPSTACK.get(exc.status, exc.status)
        words = _WORDS_FOR_CODE.get(exc.code)
        detail = exc.detail if words is None else f"{words}: {exc.detail}"
        return status, detail, exc.headers or {}
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return 400, f"{where}: {first.get('msg', 'invalid request')}", {}
    if isinstance(exc, StarletteHTTPException):  # a body the form parser cannot read
        return exc.status_code, f"invalid form: {exc.detail}", {}
    if is_outage(exc):
        log.warning("dependency_unavailable", error=repr(exc))
        return 503, outage_detail(exc), {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    return None


class DeepStackRoute(APIRoute):
    """An APIRoute whose errors come out in DeepStack's envelope (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def in_envelope(request: Request) -> Response:
            request.state.deepstack_started_s = time.perf_counter()
            try:
                return await handler(request)
            except Exception as exc:
                translated = translate(exc)
                if translated is None:
                    raise
                status, error, headers = translated
                return error_response(request, status, error, **headers)

        return in_envelope


# --- the form ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepStackForm:
    """The request's form: text fields (first value of each) and every file part, in order.

    A body that is neither multipart nor url-encoded (or no body) is an empty form, as gin's
    c.PostForm reads it: `face/list` needs nothing but a key."""

    fields: dict[str, str]
    files: list[tuple[str, UploadFile]]  # (form field, file), in the order sent

    def text(self, name: str) -> str:
        return self.fields.get(name, "").strip()

    def file(self, name: str) -> UploadFile | None:
        return next((upload for field, upload in self.files if field == name), None)

    def min_confidence(self, default: float) -> float:
        """`min_confidence` as middlewares.CheckConfidence parses it: absent or empty is the
        route's default; not a number, or over 1, is a 400."""
        raw = self.text("min_confidence")
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise DeepStackError("Invalid value for min_confidence") from None
        if not math.isfinite(value):
            raise DeepStackError("Invalid value for min_confidence")
        if value > 1.0:
            raise DeepStackError("min_confidence cannot be greater than 1")
        return value

    def userid(self) -> str:
        """`userid` (middlewares.CheckUserID): missing or empty is a 400."""
        userid = self.text("userid")
        if not userid:
            raise DeepStackError("userid not specified")
        if len(userid) > 200:
            raise DeepStackError("userid is longer than 200 characters")
        try:
            return storable_text(userid)
        except ValueError as exc:
            raise DeepStackError(f"userid {exc}") from None


async def read_form(request: Request) -> DeepStackForm:
    """Parse the body once (Starlette caches it on the request); chunked bodies are fine."""
    form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    fields: dict[str, str] = {}
    files: list[tuple[str, UploadFile]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((key, value))
        else:
            fields.setdefault(key, value)
    return DeepStackForm(fields, files)


FormDep = Annotated[DeepStackForm, Depends(read_form)]


async def read_upload(settings: Settings, field: str, upload: UploadFile) -> Upload:
    """The bytes of one file part (named by its file name, else its field), refused past the
    upload limit."""
    name = upload.filename or field
    data = await upload.read(settings.api.max_upload_bytes + 1)
    if len(data) > settings.api.max_upload_bytes:
        raise PayloadTooLarge(
            f"{name} is larger than the limit of {settings.api.max_upload_bytes} bytes"
        )
    return Upload(name=name, data=data)


async def read_image(settings: Settings, form: DeepStackForm) -> Upload:
    """The file part named `image` (middlewares.CheckImage), or 400."""
    upload = form.file("image")
    if upload is None:
        raise DeepStackError("No valid image file found")
    return await read_upload(settings, "image", upload)


# --- the caller --------------------------------------------------------------------------------


def require_key(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, from the `api_key` form field or Lookout's X-API-Key header,
    holding `scope` (or admin); charged to the key's rate limit like every /v1 call."""

    async def principal(
        request: Request,
        state: StateDep,
        form: FormDep,
        header: Annotated[str | None, Security(api_key_header)],
    ) -> Principal:
        if not state.settings.auth.enabled:
            return ANONYMOUS_ADMIN
        token = header or form.text(API_KEY_FIELD) or None
        # As every /v1 call: an address past its failed-authentication limit is refused (429).
        caller = await authenticate_client(state, token, client_address(request))
        await enforce_rate_limit(state.redis, caller, state.settings.auth)
        if not scope.granted_by(caller.scopes):
            raise DeepStackError(f"this API key lacks the {scope.value!r} scope", status=403)
        return caller

    return principal


ReadCaller = Annotated[Principal, Depends(require_key(Scope.read))]
WriteCaller = Annotated[Principal, Depends(require_key(Scope.write))]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a DeepStack route may answer, all in its envelope."""
    descriptions = {
        400: "Bad input: no image, an unusable image, a bad field (`error` says which)",
        401: "Incorrect api key: missing, unknown, revoked or expired",
        403: "The API key lacks the scope this route needs",
        404: "No such custom model (/v1/vision/custom/list names the one there is)",
        413: "An image over the upload limit",
        429: "Rate limit of the API key exceeded; see Retry-After",
        503: "Postgres or Redis is unreachable, or the image store's disk failed; see Retry-After",
        504: "No worker finished the image in time",
    }
    return {
        status: {
            "model": DeepStackErrorOut,
            "description": descriptions[status],
            "content": {
                "application/json": {
                    "example": {
                        "success": False,
                        "error": "No valid image file found",
                        "duration": 0,
                    }
                }
            },
        }
        for status in statuses
    }


# At most this many predictions: Frigate's DeepStack detector copies them into a 20-row array
# (frigate/detectors/plugins/deepstack.py, `np.zeros((20, 6))`) and its process dies of an
# IndexError at a 21st; `?max_predictions=20` on its api_url keeps the 20 most confident. Not a
# DeepStack parameter (clients that count objects, as Home Assistant's, need them all), and a
# query parameter because Frigate sends no form field but the key.
MAX_PREDICTIONS = "max_predictions"


def max_predictions(request: Request) -> int | None:
    """`?max_predictions=N` (1 or more), or None: every prediction."""
    raw = request.query_params.get(MAX_PREDICTIONS)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise DeepStackError("Invalid value for max_predictions") from None
    if value < 1:
        raise DeepStackError("max_predictions must be 1 or more")
    return value
