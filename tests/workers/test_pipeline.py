"""Decode (header checks, EXIF orientation, reduced-scale JPEG, alpha) and the batch pipeline."""

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from app.pixels import BadImage, apply_orientation, decode_image, reduction_for
from tests.conftest import shared_image
from workers.pipeline import run_batch, run_pipeline

MAX_PIXELS = 50_000_000
T1 = shared_image("scenes/t1.jpg")
DOG = shared_image("scenes/dog.jpg")


def encode(rgb: np.ndarray, image_format: str, *, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    kwargs: dict[str, object] = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    Image.fromarray(rgb).save(buffer, image_format, **kwargs)
    return buffer.getvalue()


def t1_rgb() -> np.ndarray:
    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def face_boxes(result) -> list[tuple[float, ...]]:
    return sorted(d.box for d in result.detections if d.kind == "face")


def assert_same_boxes(found, expected, *, tolerance_px: float) -> None:
    assert len(found) == len(expected)
    for a, b in zip(found, expected, strict=True):
        assert np.abs(np.subtract(a, b)).max() <= tolerance_px, (a, b)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_turns_pixels_like_pillow(orientation):
    # An asymmetric picture: every rotation and mirror of it is different.
    rng = np.random.default_rng(orientation)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    data = encode(rgb, "PNG", orientation=orientation)  # lossless: exact comparison
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
    np.testing.assert_array_equal(cv2.cvtColor(decoded.pixels, cv2.COLOR_BGR2RGB), expected)
    assert (decoded.width, decoded.height) == (expected.shape[1], expected.shape[0])


def test_apply_orientation_1_leaves_pixels_alone():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    np.testing.assert_array_equal(apply_orientation(pixels, 1), pixels)


def test_a_photo_with_exif_rotation_gets_boxes_on_the_faces_of_the_upright_image(detectors):
    """A camera stored t1.jpg turned 90° and tagged orientation 6 (turn clockwise to view)."""
    upright = run_pipeline(T1, ["faces"], detectors, max_pixels=MAX_PIXELS)
    stored = np.ascontiguousarray(np.rot90(t1_rgb()))  # 90° counter-clockwise
    rotated_jpeg = encode(stored, "JPEG", orientation=6)
    result = run_pipeline(rotated_jpeg, ["faces"], detectors, max_pixels=MAX_PIXELS)
    assert (result.width, result.height) == (1280, 886)
    assert_same_boxes(face_boxes(result), face_boxes(upright), tolerance_px=6)
    for face in result.detections:
        x1, y1, x2, y2 = face.box
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    # Control: the same pixels without the tag are a sideways picture with other boxes.
    sideways = run_pipeline(encode(stored, "JPEG"), ["faces"], detectors, max_pixels=MAX_PIXELS)
    assert (sideways.width, sideways.height) == (886, 1280)
    assert face_boxes(sideways) != face_boxes(result)


def test_large_jpegs_decode_at_reduced_scale_and_report_full_size_boxes(detectors):
    big = cv2.resize(t1_rgb(), (5120, 3544), interpolation=cv2.INTER_CUBIC)
    data = encode(big, "JPEG")
    assert reduction_for("JPEG", 5120, 3544, target_side_px=2048) == 2
    assert reduction_for("JPEG", 5120, 3544, target_side_px=1000) == 4
    assert reduction_for("PNG", 5120, 3544, target_side_px=1000) == 1
    decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
    assert decoded.pixels.shape == (1772, 2560, 3)
    assert (decoded.width, decoded.height) == (5120, 3544) and decoded.scale == 2
    result = run_pipeline(data, ["faces", "objects"], detectors, max_pixels=MAX_PIXELS)
    small = run_pipeline(T1, ["faces"], detectors, max_pixels=MAX_PIXELS)
    assert (result.width, result.height) == (5120, 3544)
    expected = [tuple(v * 4 for v in box) for box in face_boxes(small)]
    assert_same_boxes(face_boxes(result), expected, tolerance_px=4 * 6)


def test_png_webp_alpha_and_grey_all_become_three_channel_bgr(detectors):
    rgb = t1_rgb()
    alpha = np.full((*rgb.shape[:2], 1), 200, np.uint8)
    rgba_png = encode(np.concatenate([rgb, alpha], axis=2), "PNG")
    webp = encode(rgb, "WEBP")
    grey_png = encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), "PNG")
    for data in (rgba_png, webp, grey_png):
        decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
        assert decoded.pixels.shape == (886, 1280, 3) and decoded.pixels.dtype == np.uint8
    for data in (rgba_png, webp):
        result = run_pipeline(data, ["faces"], detectors, max_pixels=MAX_PIXELS)
        assert result.counts == {"face": 6}


def _png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width × height and whose pixel data is tiny."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_dimensions_are_checked_from_the_header_before_any_decode():
    bomb = _png_header_only(20_000, 20_000)  # 400 MP (1.2 GB decoded) in a 100-byte file
    assert len(bomb) < 200
    with pytest.raises(BadImage, match="limit"):
        decode_image(bomb, max_pixels=MAX_PIXELS, target_side_px=2048)
    with pytest.raises(BadImage, match="the limit is 1000"):
        decode_image(T1, max_pixels=1000, target_side_px=2048)
    with pytest.raises(BadImage, match="truncated"):
        decode_image(T1[: len(T1) // 2], max_pixels=MAX_PIXELS, target_side_px=2048)


def test_one_image_that_fails_in_a_batch_fails_alone(detectors):
    images = [
        decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048) for data in (T1, DOG, T1)
    ]
    results = run_batch(
        images, [["faces"], ["objects", "no-such-task"], ["faces", "qr"]], detectors
    )
    assert results[0].counts == {"face": 6}
    assert isinstance(results[1], BadImage) and "no-such-task" in str(results[1])
    assert results[2].counts == {"face": 6}


def test_detections_follow_the_order_of_the_job_tasks(detectors):
    result = run_pipeline(T1, ["objects", "faces"], detectors, max_pixels=MAX_PIXELS)
    kinds = [d.kind for d in result.detections]
    assert kinds == sorted(kinds, key=["object", "face"].index)
    assert result.counts["face"] == 6 and result.counts["person"] >= 5


@pytest.mark.parametrize("size", [(1, 1), (10_000, 4), (4, 10_000), (2, 5_000)])
def test_a_sliver_or_a_pixel_runs_every_task_and_finds_no_face(detectors, size):
    # A 10,000 × 4 banner, decoded at a quarter scale, is one pixel tall: SCRFD's letterbox made
    # it 0 px and OpenCV's resize raised, which failed the job ("processing error: cv2.error").
    data = encode(np.asarray(Image.fromarray(t1_rgb()).resize(size)), "JPEG")
    image = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=1280)
    tasks = ["faces", "objects", "qr", "text", "plates"]
    [result] = run_batch([image], [tasks], detectors)
    assert not isinstance(result, Exception), result
    assert (result.width, result.height) == size
    assert "face" not in result.counts
