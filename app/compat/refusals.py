"""Refusals made before routing (a body over the limit, the upload slots taken), answered in the
shape of the API the client called.

BodySizeLimit and UploadAdmission (app/limits.py) refuse a request before any route runs, so
the DeepStack and CompreFace routes' own error rendering never sees it. A client of those APIs
reads every answer in its API's shape (deepstack-python and Blue Iris read `success` and `error`,
the CompreFace SDKs and Double Take `message` and `code`), so these refusals take it too.
"""

from typing import Any

from app.compat.compreface import service as compreface
from app.compat.compreface.routes import router as compreface_router
from app.compat.deepstack.envelope import translate
from app.compat.deepstack.schemas import DeepStackErrorOut
from app.errors import AppError
from app.limits import lookout_refusal

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
