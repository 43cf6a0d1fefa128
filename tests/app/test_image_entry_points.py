"""One image check, one answer everywhere: the same bad file gets the same status and error code
on every route that takes an image, and a PNG or WebP whose header is fine but whose body is
corrupt is refused at upload (422), with nothing stored."""

import io
import random
import struct
import zlib

import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from PIL import Image
from sqlalchemy import text

from app import streams
from tests.conftest import bearer, node_token, shared_image

T1 = shared_image("scenes/t1.jpg")
TEXT_FILE = b"name,age\nalice,31\nbob,42\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encoded(image_format: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(T1)).convert("RGB").save(out, image_format)
    return out.getvalue()


def corrupt_png_body() -> bytes:
    """t1 as PNG: a sound header, then pixel data that is not a zlib stream (CRCs are right,
    so only reading the body can tell)."""
    png = encoded("PNG")
    rng = random.Random(5)
    garbage = bytes(rng.randrange(256) for _ in range(50_000))
    return png[:33] + png_chunk(b"IDAT", garbage) + png_chunk(b"IEND", b"")


def corrupt_png_filters() -> bytes:
    """A valid zlib stream of the right size whose rows carry filter type 7 (there are 0–4)."""
    png = encoded("PNG")
    raw = bytes([7]) * (886 * (1 + 1280 * 3))
    return png[:33] + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def corrupt_webp_body() -> bytes:
    """t1 as WebP: RIFF header and VP8 frame header kept, the bitstream replaced by noise."""
    webp = encoded("WEBP")
    rng = random.Random(6)
    return webp[:30] + bytes(rng.randrange(256) for _ in range(len(webp) - 30))


async def count_rows(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM jobs"))).scalar() or 0)


@pytest.mark.parametrize(
    "body",
    [corrupt_png_body(), corrupt_png_filters(), corrupt_webp_body()],
    ids=["png-noise-idat", "png-bad-filters", "webp-noise-bitstream"],
)
async def test_a_corrupt_png_or_webp_body_is_422_at_upload_and_nothing_is_stored(
    client, engine, redis, storage, body
):
    response = await client.post("/v1/images", files={"image": ("x.img", body, "image/png")})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_image"
    assert "corrupt" in response.json()["detail"]
    assert await count_rows(engine) == 0
    assert await redis.xlen(streams.JOBS) == 0
    assert not storage.root.exists() or list(storage.root.rglob("*.*")) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (TEXT_FILE, 415, "unsupported_image_type"),
        (T1[: len(T1) // 2], 422, "invalid_image"),
        (corrupt_png_body(), 422, "invalid_image"),
    ],
    ids=["text-file", "truncated-jpeg", "corrupt-png"],
)
async def test_the_same_bad_file_gets_the_same_answer_on_every_image_route(
    client, settings, make_node, engine, body, status, code
):
    person = (await client.post("/v1/people", json={"name": "ada"})).json()
    node = await make_node()
    calls = {
        "images": client.post("/v1/images", files={"image": ("f", body, "image/jpeg")}),
        "identify": client.post("/v1/identify", files={"image": ("f", body, "image/jpeg")}),
        "faces/search": client.post("/v1/faces/search", files={"image": ("f", body, "image/jpeg")}),
        "verify": client.post(
            "/v1/verify",
            files=[
                ("image_a", ("f", body, "image/jpeg")),
                ("image_b", ("t1.jpg", T1, "image/jpeg")),
            ],
        ),
        "enroll": client.post(
            f"/v1/people/{person['id']}/faces", files={"images": ("f", body, "image/jpeg")}
        ),
        "node frame": client.post(
            "/v1/nodes/me/frames",
            content=body,
            headers={**bearer(node_token(settings, node.id)), "content-type": "image/jpeg"},
        ),
    }
    answers = {}
    for route, call in calls.items():
        response = await call
        answers[route] = (response.status_code, response.json().get("error"))
    assert answers == {route: (status, code) for route in calls}
    assert await count_rows(engine) == 0


async def test_a_malformed_job_id_closes_the_events_socket_with_4422_not_403(client):
    async with aconnect_ws("/v1/jobs/garbage/events", client) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_json()
    assert closed.value.code == 4422
    assert "not a UUID" in (closed.value.reason or "")
