"""Refusals made before routing (a body over the limit, the upload slots taken), answered in the
shape of the API the client called.

BodySizeLimit and UploadAdmission (app/limits.py) refuse a request before any route runs, so
the DeepStack and CompreFace routes' own error rendering never sees it. A client of those APIs
reads every answer in its API's shape (deepstack-python and Blue Iris read `success` and `error`,
the CompreFace SDKs and Double Take `message` and `code`), so these refusals take it too.
"""

from typing import Any

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from app.compat.compreface import service as compreface
from app.compat.compreface.routes import router as compreface_router
from app.compat.deepstack.envelope import translate
from app.compat.deepstack.schemas import DeepStackErrorOut
from app.errors import AppError, NotFound
from app.limits import lookout_refusal, send_refusal

# Every DeepStack / CodeProject.AI route (app/compat/deepstack/routes.py) is under it, and no
# native one is (tests/app/compat/test_refusals.py).
DEEPSTACK_PREFIX = "/v1/vision/"
COMPREFACE_PREFIX = f"{compreface_router.prefix}/"


def render_refusal(path: str, error: AppError) -> tuple[int, dict[str, Any]]:
    """(status, body) of `error` for a request to `path`: DeepStack's envelope, CompreFace's
    {message, code}, or Lookout's own error body."""
    if path.startswith(DEEPSTACK_PREFIX):
        translated = translate(error)
        assert translated is not None  # an AppError always translates
        status, text, _ = translated
        return status, DeepStackErrorOut(success=False, error=text, duration=0.0).model_dump()
    if path.startswith(COMPREFACE_PREFIX):
        refusal = compreface.translate(error)
        return refusal.status, refusal.body()
    return lookout_refusal(path, error)


def is_compatible_api(path: str) -> bool:
    return path.startswith((DEEPSTACK_PREFIX, COMPREFACE_PREFIX))


class CompatiblePaths:
    """The compatible APIs' paths as their own servers take them.

    - A trailing slash is the same route (but for a DELETE): CompreFace's Spring matches
      `/api/v1/recognition/faces/` and DeepStack's gin redirects `/v1/vision/detection/` to its
      route, and clients send them (a Go CompreFace client's enrolment, CodeProject.AI's
      samples). They were a 405.
    - A path under their prefixes that is no route of theirs (or not for this method) is a 404
      in their shape, as gin and Spring answer it (the dashboard's catch-all at / answered
      Lookout's 405 or 404).
    """

    # Whether a (method, path) is routed, remembered: matching it against the routes costs
    # ~0.15 ms, on every frame a Frigate or Blue Iris posts. The routes do not change once the
    # app runs; paths with ids in them are many, so the memory is bounded.
    KNOWN_MAX = 4096

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.known: dict[tuple[str, str], bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_compatible_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        asked = scope["path"]  # its prefix says whose shape a refusal takes
        # Not for a DELETE: `DELETE /api/v1/recognition/subjects/` (a client that built the
        # URL with an empty subject) is not "delete every subject".
        if scope["path"].endswith("/") and scope["method"] != "DELETE":
            scope["path"] = scope["path"].rstrip("/")  # in place: RequestContext reads it back
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].rstrip(b"/")
        key = (scope["method"], scope["path"])
        routed = self.known.get(key)
        if routed is None:
            if len(self.known) >= self.KNOWN_MAX:
                self.known.clear()
            routed = self.known[key] = _routed(scope)
        if not routed:
            error = NotFound(f"no {scope['method']} {scope['path']} in this API")
            if asked.startswith(DEEPSTACK_PREFIX):
                body = DeepStackErrorOut(success=False, error=error.detail, duration=0.0)
                await send_refusal(send, 404, body.model_dump())
            else:
                await send_refusal(send, *render_refusal(asked, error))
            return
        await self.app(scope, receive, send)


def _routed(scope: Scope) -> bool:
    """Whether a route of the app (not the dashboard's mount at /) takes this method and path."""
    routes = scope["app"].router.routes
    return any(
        not isinstance(route, Mount) and route.matches(scope)[0] == Match.FULL for route in routes
    )
