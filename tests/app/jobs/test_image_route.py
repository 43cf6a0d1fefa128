"""GET /v1/jobs/{id}/image: bytes from the API, or an X-Accel-Redirect for nginx to follow."""

import uuid

import httpx
import pytest
from pydantic import ValidationError

from app.main import create_app
from app.settings import ApiSettings
from tests.conftest import shared_image

T1 = shared_image("scenes/t1.jpg")


@pytest.fixture
async def accel_app(settings):
    api = settings.api.model_copy(update={"accel_redirect_prefix": "/_protected_images/"})
    app = create_app(settings.model_copy(update={"api": api}))
    async with app.router.lifespan_context(app):
        yield app


def client_for(app, key: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(
        transport=transport, base_url="http://lookout.test", headers={"X-API-Key": key}
    )


@pytest.fixture
async def accel_client(accel_app, api_key):
    async with client_for(accel_app, api_key) as http:
        yield http


async def test_with_a_prefix_the_route_names_the_file_and_sends_no_bytes(accel_client, make_job):
    job = await make_job(T1, enqueue=False)
    response = await accel_client.get(f"/v1/jobs/{job.id}/image")
    assert response.status_code == 200
    assert response.headers["x-accel-redirect"] == f"/_protected_images/{job.image_key}"
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == b""


async def test_with_a_prefix_another_keys_job_gets_404_and_no_redirect(
    accel_app, accel_client, make_key
):
    """The API authorizes before nginx serves: a key that does not own the job learns nothing."""
    from app.security import Scope

    upload = await accel_client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    job = upload.json()
    async with client_for(accel_app, await make_key("other", (Scope.read, Scope.write))) as other:
        response = await other.get(job["links"]["image"])
        assert response.status_code == 404
        assert "x-accel-redirect" not in response.headers
    async with client_for(accel_app, "lk_000000000000_forged") as forged:
        response = await forged.get(job["links"]["image"])
        assert response.status_code == 401
        assert "x-accel-redirect" not in response.headers


async def test_with_a_prefix_an_unknown_job_is_still_404(accel_client):
    response = await accel_client.get(f"/v1/jobs/{uuid.uuid4()}/image")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "x-accel-redirect" not in response.headers


async def test_without_a_prefix_the_api_sends_the_bytes(client, make_job):
    job = await make_job(T1, enqueue=False)
    response = await client.get(f"/v1/jobs/{job.id}/image")
    assert response.status_code == 200
    assert "x-accel-redirect" not in response.headers
    assert response.content == T1


@pytest.mark.parametrize("prefix", ["/_protected_images", "_protected_images/", ""])
def test_the_prefix_must_be_a_directory_path(prefix):
    with pytest.raises(ValidationError, match="must start and end with '/'"):
        ApiSettings(accel_redirect_prefix=prefix)
