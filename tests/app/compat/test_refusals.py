"""A body over the limit is refused before any route runs (app/limits.py BodySizeLimit), and the
refusal comes in the shape of the API the client called: DeepStack's envelope on /v1/vision,
CompreFace's {message, code} on /api/v1, Lookout's own body elsewhere. (The upload slots'
503 `busy`, the other refusal before routing, is driven over real sockets in
tests/e2e/test_server_hardening.py.)"""

from collections.abc import AsyncIterator

import httpx
import pytest

from app.compat.compreface.routes import router as compreface_router
from app.compat.deepstack.routes import router as deepstack_router
from app.compat.refusals import COMPREFACE_PREFIX, DEEPSTACK_PREFIX
from app.main import create_app

DEEPSTACK_ROUTES = ["/v1/vision/detection", "/v1/vision/face/recognize", "/v1/vision/custom/x"]
COMPREFACE_ROUTES = ["/api/v1/recognition/recognize", "/api/v1/detection/detect"]


def too_big(settings) -> bytes:  # type: ignore[no-untyped-def]
    return b"\xff\xd8\xff" + b"\x00" * (settings.api.max_upload_bytes + 70_000)


async def chunks(settings) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
    for _ in range(settings.api.max_upload_bytes // (1 << 20) + 2):
        yield b"\x00" * (1 << 20)


async def oversized(client, settings, path: str, field: str) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """A body over the limit sent to `path` twice: with its length declared (a file in
    `field`), and chunked (no length: read up to the limit)."""
    declared = await client.post(path, files={field: ("big.jpg", too_big(settings))})
    chunked = await client.post(
        path, content=chunks(settings), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    return [declared, chunked]


@pytest.mark.parametrize("path", DEEPSTACK_ROUTES)
async def test_deepstack_routes_refuse_a_body_over_the_limit_in_deepstack_s_envelope(
    client, settings, path
):
    for response in await oversized(client, settings, path, "image"):
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["success"] is False and body["duration"] == 0.0, body
        assert set(body) == {"success", "error", "duration"}, body
        assert "larger than the limit" in body["error"], body


@pytest.mark.parametrize("path", COMPREFACE_ROUTES)
async def test_compreface_routes_refuse_a_body_over_the_limit_with_code_21(client, settings, path):
    for response in await oversized(client, settings, path, "file"):
        assert response.status_code == 413, response.text
        body = response.json()
        assert set(body) == {"message", "code"} and body["code"] == 21, body
        assert "larger than the limit" in body["message"], body


async def test_native_routes_keep_lookout_s_error_body(client, settings):
    response = await client.post("/v1/images", files={"image": ("big.jpg", too_big(settings))})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert set(response.json()) == {"error", "detail"}


def test_each_compatible_api_and_only_it_lives_under_its_prefix(settings):
    """The refusal picks its shape by the path alone: every DeepStack route starts with
    DEEPSTACK_PREFIX, every CompreFace route with COMPREFACE_PREFIX, and no other documented
    route of the app does."""
    deepstack = {route.path for route in deepstack_router.routes}  # type: ignore[attr-defined]
    compreface = {route.path for route in compreface_router.routes}  # type: ignore[attr-defined]
    assert deepstack and all(path.startswith(DEEPSTACK_PREFIX) for path in deepstack)
    assert compreface and all(path.startswith(COMPREFACE_PREFIX) for path in compreface)
    documented = set(create_app(settings).openapi()["paths"])
    others = documented - deepstack - compreface
    assert others and not any(p.startswith((DEEPSTACK_PREFIX, COMPREFACE_PREFIX)) for p in others)
