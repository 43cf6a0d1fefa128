"""The jobs API contract: bad input is refused with a clear 4xx and nothing is stored."""

import asyncio
import json
import tempfile
import uuid

import numpy as np
import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from sqlalchemy import text

from app import streams
from tests.conftest import bearer, node_token, shared_image
from tests.images import blank, bomb_png, encode, in_format

T1 = shared_image("scenes/t1.jpg")


async def assert_nothing_stored(engine, redis, storage):
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM jobs"))).scalar() == 0
    assert await redis.xlen(streams.JOBS) == 0
    assert not storage.root.exists() or list(storage.root.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "status", "error", "detail"),
    [
        (
            b"plain text, not an image",
            415,
            "unsupported_image_type",
            "not a JPEG, PNG, WebP, BMP, GIF or TIFF",
        ),
        (T1[: len(T1) // 2], 422, "invalid_image", "truncated"),
        (b"", 422, "invalid_image", "empty"),
        (bomb_png(), 413, "image_too_large", "pixels"),
    ],
    ids=["not-an-image", "truncated-jpeg", "empty", "decompression-bomb"],
)
async def test_bad_images_are_refused_and_nothing_is_stored(
    client, engine, redis, storage, data, status, error, detail
):
    response = await client.post("/v1/images", files={"image": ("x.jpg", data, "image/jpeg")})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert detail in body["detail"]
    await assert_nothing_stored(engine, redis, storage)


async def test_body_over_the_byte_limit_is_refused_before_parsing(
    client, settings, engine, redis, storage
):
    too_big = b"\xff\xd8\xff" + b"\x00" * (settings.api.max_upload_bytes + 70_000)
    response = await client.post("/v1/images", files={"image": ("big.jpg", too_big, "image/jpeg")})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    await assert_nothing_stored(engine, redis, storage)


async def test_chunked_body_over_the_limit_is_refused(client, settings, engine, redis, storage):
    async def chunks():
        for _ in range(settings.api.max_upload_bytes // (1 << 20) + 2):
            yield b"\x00" * (1 << 20)

    response = await client.post(
        "/v1/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 413
    await assert_nothing_stored(engine, redis, storage)


async def test_image_part_just_over_the_limit_is_refused(client, settings, engine, redis, storage):
    data = T1 + b"\x00" * (settings.api.max_upload_bytes - len(T1) + 1)
    response = await client.post("/v1/images", files={"image": ("t1.jpg", data, "image/jpeg")})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    await assert_nothing_stored(engine, redis, storage)


# A multipart form without an image file (httpx sends `data` alone urlencoded: a 415 now).
NO_IMAGE_FILE = {"note": ("note.txt", b"not the image", "text/plain")}


async def test_missing_image_field_is_a_422_naming_the_field(client):
    response = await client.post("/v1/images", data={"tasks": "faces"}, files=NO_IMAGE_FILE)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "image" in response.json()["detail"]


async def test_unknown_task_is_refused(client, engine, redis, storage):
    response = await client.post(
        "/v1/images",
        files={"image": ("t1.jpg", T1, "image/jpeg")},
        data={"tasks": "faces,teleport"},
    )
    assert response.status_code == 422
    assert "teleport" in response.json()["detail"]
    await assert_nothing_stored(engine, redis, storage)


async def test_a_raw_image_body_is_an_upload_like_a_form(client, make_consumer, storage):
    """`curl --data-binary @t1.jpg -H 'Content-Type: image/jpeg' '…/v1/images?tasks=…'`."""
    response = await client.post(
        "/v1/images?tasks=faces,objects", content=T1, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["tasks"] == ["faces", "objects"]
    assert job["image"] == {"width": 1280, "height": 886, "content_type": "image/jpeg"}
    assert storage.get(f"{job['id']}.jpg") == T1
    await make_consumer().run(burst=True)
    done = (await client.get(job["links"]["self"])).json()
    assert done["status"] == "done" and done["counts"]["face"] == 6
    for extension, content_type in ((".png", "image/png"), (".webp", "image/webp")):
        raw = await client.post(
            "/v1/images", content=blank(extension=extension), headers={"content-type": content_type}
        )
        assert raw.status_code == 202, raw.text
        assert raw.json()["tasks"] == ["faces"]  # the default
        assert raw.json()["image"]["content_type"] == content_type


async def test_a_gif_body_or_a_bmp_in_a_form_is_kept_as_a_png(client, make_consumer, storage):
    """Converted on arrival (app/images.py accept_image): the job, its stored image and its
    faces are those of the same picture sent as a PNG."""
    sent = [in_format(T1, "GIF"), in_format(T1, "BMP")]
    as_body = await client.post(
        "/v1/images", content=sent[0], headers={"content-type": "image/gif"}
    )
    in_form = await client.post("/v1/images", files={"image": ("t1.bmp", sent[1], "image/bmp")})
    for response in (as_body, in_form):
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["image"] == {"width": 1280, "height": 886, "content_type": "image/png"}
        assert storage.get(f"{job['id']}.png").startswith(b"\x89PNG")
    await make_consumer().run(burst=True)
    for response in (as_body, in_form):
        done = (await client.get(response.json()["links"]["self"])).json()
        assert done["status"] == "done" and done["counts"]["face"] == 6


@pytest.mark.parametrize(
    ("content_type", "data", "status", "error", "detail"),
    [
        ("text/plain", T1, 415, "unsupported_media_type", "multipart/form-data"),
        ("application/octet-stream", T1, 415, "unsupported_media_type", "image/jpeg"),
        (None, T1, 415, "unsupported_media_type", "no Content-Type"),
        # curl --data-binary's default: was a 422 "the form has no 'image' field".
        (
            "application/x-www-form-urlencoded",
            T1,
            415,
            "unsupported_media_type",
            "-H 'Content-Type: image/jpeg'",
        ),
        ("image/jpeg", b"plain text, not an image", 415, "unsupported_image_type", "not a JPEG"),
        ("image/jpeg", T1[: len(T1) // 2], 422, "invalid_image", "truncated"),
        ("image/png", b"", 422, "invalid_image", "empty"),
        ("image/png", bomb_png(), 413, "image_too_large", "pixels"),
    ],
    ids=[
        "text",
        "octet-stream",
        "no-type",
        "curl-default",
        "not-an-image",
        "truncated",
        "empty",
        "bomb",
    ],
)
async def test_bad_raw_bodies_are_refused_and_nothing_is_stored(
    client, engine, redis, storage, content_type, data, status, error, detail
):
    headers = {"content-type": content_type} if content_type else {}  # httpx adds none
    response = await client.post("/v1/images", content=data, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert detail in response.json()["detail"]
    await assert_nothing_stored(engine, redis, storage)


async def test_a_raw_body_over_the_byte_limit_is_refused(client, settings, engine, redis, storage):
    """Under the server's body limit (which leaves room for a form's overhead), over the
    image limit by one byte."""
    data = T1 + b"\x00" * (settings.api.max_upload_bytes - len(T1) + 1)
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 413
    assert response.json() == {
        "error": "payload_too_large",
        "detail": f"image is larger than the limit of {settings.api.max_upload_bytes} bytes",
    }
    await assert_nothing_stored(engine, redis, storage)


async def test_an_unknown_task_in_the_query_is_refused(client, engine, redis, storage):
    response = await client.post(
        "/v1/images?tasks=faces,teleport", content=T1, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 422
    assert "teleport" in response.json()["detail"]
    await assert_nothing_stored(engine, redis, storage)


async def test_a_form_s_image_field_must_be_a_file(client, engine, redis, storage):
    response = await client.post("/v1/images", data={"image": "t1.jpg"}, files=NO_IMAGE_FILE)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert "must be a file" in response.json()["detail"]
    await assert_nothing_stored(engine, redis, storage)


async def test_a_form_s_large_image_is_not_spilled_to_a_temporary_file(
    client, storage, tmp_path, monkeypatch
):
    """The route reads the image whole; Starlette spilled a file over 1 MiB to a temporary file
    first (created, written and read back). With nowhere to spill to, a 1.4 MB upload is still
    taken, byte for byte."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    large = encode(noise, ".png")
    assert len(large) > 1024 * 1024
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))
    response = await client.post("/v1/images", files={"image": ("noise.png", large, "image/png")})
    assert response.status_code == 202, response.text
    assert storage.get(f"{response.json()['id']}.png") == large


async def test_an_image_store_that_cannot_write_is_a_503_saying_so(
    app, client, engine, redis, storage, tmp_path, monkeypatch
):
    """A disk error is not a database outage: the client is told which part failed (and not
    the server's paths), asked to retry, and nothing of the upload is kept."""
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setattr(app.state.lookout.storage, "root", blocker / "images")  # ENOTDIR
    response = await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert response.json() == {
        "error": "unavailable",
        "detail": "the image store's disk failed (Not a directory); the request was not "
        "completed, retry later",
    }
    await assert_nothing_stored(engine, redis, storage)


async def test_png_and_webp_uploads_are_accepted(client):
    for extension, content_type in ((".png", "image/png"), (".webp", "image/webp")):
        response = await client.post(
            "/v1/images",
            files={"image": ("x" + extension, blank(extension=extension), content_type)},
        )
        assert response.status_code == 202
        assert response.json()["image"] == {"width": 64, "height": 48, "content_type": content_type}


@pytest.mark.parametrize("path", ["", "/image", "/processed-image"])
async def test_unknown_job_is_404(client, path):
    job_id = uuid.uuid4()
    response = await client.get(f"/v1/jobs/{job_id}{path}")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": f"no job with id {job_id}"}


async def test_delete_unknown_job_is_404(client):
    assert (await client.delete(f"/v1/jobs/{uuid.uuid4()}")).status_code == 404


async def test_malformed_job_id_is_422(client):
    response = await client.get("/v1/jobs/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


async def test_processed_image_of_unfinished_job_is_409(client):
    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    response = await client.get(job["links"]["processed_image"])
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]


async def test_events_websocket_for_unknown_job_closes_with_4404(client):
    job_id = uuid.uuid4()
    async with aconnect_ws(f"/v1/jobs/{job_id}/events", client) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_json()
    assert closed.value.code == 4404
    assert str(job_id) in closed.value.reason


async def test_events_websocket_of_a_job_deleted_before_it_finished_closes_with_4404(
    client, monkeypatch
):
    """No worker runs here: the job stays queued, then is deleted. No final event will ever
    come, and the socket used to wait for one until the client gave up."""
    from app.jobs import routes

    monkeypatch.setattr(routes, "WS_READ_BLOCK_MS", 200)
    job = (await client.post("/v1/images", files={"image": ("b.png", blank(), "image/png")})).json()
    async with aconnect_ws(f"/v1/jobs/{job['id']}/events", client) as ws:
        assert (await ws.receive_json())["status"] == "queued"
        assert (await client.delete(f"/v1/jobs/{job['id']}")).status_code == 204
        with pytest.raises(WebSocketDisconnect) as closed:
            await asyncio.wait_for(ws.receive_json(), 10)
    assert closed.value.code == 4404
    assert "deleted" in closed.value.reason


async def test_job_list_pages_are_complete_and_disjoint(client):
    created = []
    for _ in range(5):
        response = await client.post("/v1/images", files={"image": ("b.png", blank(), "image/png")})
        created.append(response.json()["id"])

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/jobs", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))  # newest first, each exactly once


async def test_job_list_filters_by_status(client, make_consumer):
    await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})
    await make_consumer().run(burst=True)
    queued = (
        await client.post("/v1/images", files={"image": ("b.png", blank(), "image/png")})
    ).json()

    done = (await client.get("/v1/jobs", params={"status": "done"})).json()["items"]
    waiting = (await client.get("/v1/jobs", params={"status": "queued"})).json()["items"]
    assert [j["status"] for j in done] == ["done"]
    assert [j["id"] for j in waiting] == [queued["id"]]


async def test_job_list_filters_by_task_source_and_node_and_pages_within_them(
    client, settings, make_node
):
    gate, porch = await make_node("gate-cam"), await make_node("porch-cam")
    frames = {}
    for node in (gate, porch, gate):
        headers = {**bearer(node_token(settings, node.id)), "content-type": "image/png"}
        sent = await client.post("/v1/nodes/me/frames", content=blank(), headers=headers)
        frames.setdefault(node.name, []).append(sent.json()["id"])
    png = {"image": ("b.png", blank(), "image/png")}
    qr = (await client.post("/v1/images", files=png, data={"tasks": "qr"})).json()["id"]
    faces = (await client.post("/v1/images", files=png, data={"tasks": "faces,qr"})).json()["id"]

    async def listed(**params: str) -> list[str]:
        return [j["id"] for j in (await client.get("/v1/jobs", params=params)).json()["items"]]

    assert await listed(task="qr") == [faces, qr]
    assert await listed(task="faces", source="upload") == [faces]
    assert await listed(source="upload") == [faces, qr]
    assert set(await listed(source="node")) == {*frames["gate-cam"], *frames["porch-cam"]}
    assert await listed(node_id=str(gate.id)) == list(reversed(frames["gate-cam"]))
    assert await listed(node_id=str(gate.id), source="upload") == []
    # The cursor pages within the filter: one gate frame per page, then the end.
    first = (await client.get("/v1/jobs", params={"node_id": str(gate.id), "limit": 1})).json()
    params = {"node_id": str(gate.id), "limit": 1, "cursor": first["next_cursor"]}
    second = (await client.get("/v1/jobs", params=params)).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == frames["gate-cam"][::-1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "named"),
    [({"task": "ocr"}, "faces, objects"), ({"source": "camera"}, "source"), ({"node_id": "7"}, "")],
)
async def test_bad_job_list_filters_are_422_naming_the_choices(client, params, named):
    response = await client.get("/v1/jobs", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert named in response.text


async def test_each_detection_carries_its_id(client, make_consumer, engine, redis):
    job = (await client.post("/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")})).json()
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    async with engine.connect() as connection:
        ids = list(
            await connection.scalars(
                text("SELECT id FROM detections WHERE job_id = :job ORDER BY id"),
                {"job": uuid.UUID(job["id"])},
            )
        )
    assert len(ids) == 6 and [d["id"] for d in detail["detections"]] == ids
    # The same ids in the firehose's result event: the Live and Job pages promote faces by them.
    [result] = [e for e in await firehose_events(redis) if e["type"] == "result"]
    assert [d["id"] for d in result["job"]["detections"]] == ids


async def firehose_events(redis) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(fields[b"data"]) for _, fields in await redis.xrange(streams.FIREHOSE)]


async def test_bad_cursor_and_status_are_422(client):
    assert (await client.get("/v1/jobs", params={"cursor": "@@@"})).status_code == 422
    assert (await client.get("/v1/jobs", params={"status": "sleeping"})).status_code == 422


async def test_docs_and_openapi_render_with_examples(client):
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/images" in spec["paths"]
    body = spec["paths"]["/v1/images"]["post"]["requestBody"]
    assert body["required"] is True
    assert sorted(body["content"]) == [
        "image/bmp",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "image/webp",
        "multipart/form-data",
    ]
    assert body["content"]["multipart/form-data"]["schema"]["required"] == ["image"]
    upload_parameters = spec["paths"]["/v1/images"]["post"]["parameters"]
    assert {p["name"] for p in upload_parameters} == {"tasks", "wait"}
    detection = spec["components"]["schemas"]["DetectionOut"]
    assert detection["properties"]["box"]["examples"] == [[10, 20, 110, 150]]
    assert "id" in detection["required"]
    summary = spec["components"]["schemas"]["JobSummary"]["properties"]
    assert {"type": "null"} in summary["node_name"]["anyOf"]
