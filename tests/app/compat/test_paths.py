"""The compatible APIs' paths as their own servers take them (app/compat/refusals.py
CompatiblePaths): a trailing slash is the same route (CompreFace's Spring matches it, DeepStack's
gin redirects it, and clients send it), and a path under their prefixes that is no route of
theirs is a 404 in their shape, not the dashboard's catch-all answering Lookout's 405."""

import pytest

API = "/api/v1"


async def test_compreface_routes_take_a_trailing_slash(client):
    """A Go CompreFace client enrolls with POST /api/v1/recognition/faces/?subject= and checks
    with GET /api/v1/recognition/subjects/ (each was a 405 or a 404)."""
    created = await client.post(f"{API}/recognition/subjects/", json={"subject": "ada"})
    assert created.status_code == 201, created.text
    assert created.json() == {"subject": "ada"}
    listed = await client.get(f"{API}/recognition/subjects/")
    assert listed.json() == {"subjects": ["ada"]}
    faces = await client.get(f"{API}/recognition/faces/", params={"subject": "ada"})
    assert faces.status_code == 200, faces.text
    assert faces.json()["faces"] == []
    renamed = await client.put(f"{API}/recognition/subjects/ada/", json={"subject": "bea"})
    assert renamed.status_code == 200, renamed.text
    assert (await client.get(f"{API}/recognition/subjects")).json() == {"subjects": ["bea"]}


async def test_deepstack_routes_take_a_trailing_slash(client):
    """CodeProject.AI's samples post to /v1/vision/detection/ (gin redirects it to its route)."""
    listed = await client.post("/v1/vision/face/list/")
    assert listed.status_code == 200, listed.text
    assert listed.json()["success"] is True
    refused = await client.post("/v1/vision/detection/", files={"image": ("x.jpg", b"not one")})
    assert refused.status_code == 400  # the route's own answer to a bad image, not a 405
    assert refused.json()["success"] is False and "invalid image" in refused.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/vision/scene"),
        ("GET", "/v1/vision/detection"),
        ("POST", "/v1/vision/x/y/"),
        ("POST", "/v1/vision/"),
    ],
)
async def test_a_deepstack_path_that_is_no_route_is_a_404_in_its_envelope(client, method, path):
    response = await client.request(method, path)
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["success"] is False and body["duration"] == 0.0
    assert path.rstrip("/") in body["error"]


async def test_a_delete_with_a_trailing_slash_is_not_the_collection_s(client):
    """`DELETE /api/v1/recognition/subjects/` (a client that built the URL with an empty
    subject) taken without its slash would be "delete every subject"."""
    assert (
        await client.post(f"{API}/recognition/subjects", json={"subject": "ada"})
    ).status_code == 201
    for path in (f"{API}/recognition/subjects/", f"{API}/recognition/faces/"):
        refused = await client.delete(path)
        assert refused.status_code == 404, refused.text
        assert refused.json()["code"] == 0
    assert (await client.get(f"{API}/recognition/subjects")).json() == {"subjects": ["ada"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", f"{API}/recognition/subjects"),
        ("POST", f"{API}/nothing/here"),
        ("GET", f"{API}/"),
    ],
)
async def test_a_compreface_path_that_is_no_route_is_a_404_in_its_shape(client, method, path):
    response = await client.request(method, path)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == 0 and path.rstrip("/") in response.json()["message"]


async def test_native_paths_keep_their_own_answers(client):
    """Only the compatible APIs' prefixes: Lookout's routes answer a slash and an unknown
    method as before, and the dashboard is still served at /."""
    assert (await client.get("/v1/jobs/")).status_code == 404
    wrong = await client.put("/v1/images")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert (await client.get("/")).status_code == 200
