"""Header-only image checks: what the API refuses before anything is stored or decoded."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from app.errors import AppError
from app.images import (
    ImageTooLarge,
    InvalidImage,
    UnsupportedImageType,
    accept_image,
    inspect_image,
)
from tests.conftest import shared_image
from tests.images import blank, bomb_png, pillow_encoded

T1 = shared_image("scenes/t1.jpg")
MAX_PIXELS = 50_000_000


@pytest.mark.parametrize(
    ("data", "expected_format"),
    [(T1, "JPEG"), (blank(extension=".png"), "PNG"), (blank(extension=".webp"), "WEBP")],
)
def test_accepts_jpeg_png_webp_and_reads_dimensions(data, expected_format):
    info = inspect_image(data, max_pixels=MAX_PIXELS)
    assert info.format == expected_format
    if expected_format == "JPEG":
        assert (info.width, info.height) == (1280, 886)
    else:
        assert (info.width, info.height) == (64, 48)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", InvalidImage, "empty"),
        (b"GIF89a" + b"\x00" * 100, UnsupportedImageType, "accepted as an upload, not here"),
        (b"hello, this is plainly text and not an image", UnsupportedImageType, "signature"),
        (T1[: len(T1) // 2], InvalidImage, "truncated"),
        (T1[:200], InvalidImage, "JPEG"),
        (blank(extension=".png")[:-20], InvalidImage, "truncated"),
        (blank(extension=".webp")[:-10], InvalidImage, "truncated"),
        (bomb_png(), ImageTooLarge, "pixels"),
        (bomb_png(8000, 8000), ImageTooLarge, "limit"),
    ],
    ids=[
        "empty",
        "gif",
        "text",
        "half-jpeg",
        "jpeg-header-only",
        "png-cut",
        "webp-cut",
        "bomb-100k",
        "bomb-8k",
    ],
)
def test_rejects_bad_images_with_a_reason(data, error, message):
    with pytest.raises(error) as raised:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert message in raised.value.detail
    assert 400 <= raised.value.status < 500


def test_the_status_codes_say_what_went_wrong():
    statuses = {}
    for name, data in {"empty": b"", "gif": b"GIF89a....", "bomb": bomb_png()}.items():
        with pytest.raises(AppError) as raised:
            inspect_image(data, max_pixels=MAX_PIXELS)
        statuses[name] = raised.value.status
    assert statuses == {"empty": 422, "gif": 415, "bomb": 413}


def test_exif_thumbnail_end_marker_does_not_hide_a_truncated_scan():
    """An APP1 segment may embed a whole JPEG (with its own FFD9) before the real scan."""
    thumbnail = blank(16, 16, ".jpg")
    app1 = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + thumbnail
    with_thumbnail = T1[:2] + app1 + T1[2:]
    assert inspect_image(with_thumbnail, max_pixels=MAX_PIXELS).format == "JPEG"
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_image(with_thumbnail[: len(with_thumbnail) - 5000], max_pixels=MAX_PIXELS)


async def test_the_api_checks_a_large_png_or_webp_body_off_its_event_loop(monkeypatch):
    """Inflating or decoding a few megapixels takes the CPU a while (a one-colour 50 MP WebP is
    a few KB): the API's check runs that part in a thread, with the same answers."""
    import threading

    from app import images

    threads: list[str] = []
    check_body = images.check_body

    def recording(image_format: str, data: bytes) -> None:
        threads.append(threading.current_thread().name)
        check_body(image_format, data)

    large_png, large_webp = blank(2000, 1500, ".png"), blank(2000, 1500, ".webp")
    cases = [(d, inspect_image(d, max_pixels=MAX_PIXELS)) for d in (large_png, large_webp)]
    cases.append((blank(extension=".png"), inspect_image(blank(), max_pixels=MAX_PIXELS)))
    monkeypatch.setattr(images, "check_body", recording)
    for data, info in cases:
        assert await images.inspect_image_async(data, max_pixels=MAX_PIXELS) == info
    main = threading.main_thread().name
    assert [name == main for name in threads] == [False, False, True]  # the small one inline

    start = large_png.index(b"IDAT") + 100
    corrupt = large_png[:start] + bytes(b ^ 0xFF for b in large_png[start : start + 16])
    corrupt += large_png[start + 16 :]
    with pytest.raises(InvalidImage, match="corrupt"):
        await images.inspect_image_async(corrupt, max_pixels=MAX_PIXELS)


def progressive_jpeg_with_repeated_scans(copies: int) -> bytes:
    """A small progressive JPEG whose second scan is repeated `copies` times: libjpeg only warns
    ("Inconsistent progression sequence") and makes a pass over the image for each."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (64, 64), 128).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    second, third = starts[1], starts[2]  # the scan runs up to the next scan's marker
    return data[:third] + data[second:third] * copies + data[third:]


def jpeg_with_comment_segments(count: int) -> bytes:
    """T1 with `count` empty comment segments after its start-of-image marker."""
    return T1[:2] + b"\xff\xfe\x00\x02" * count + T1[2:]


def test_a_jpeg_of_too_many_scans_or_segments_is_refused_before_any_decode():
    """A few KB that cost seconds: thousands of repeated scans (each a pass of libjpeg over the
    image, in the worker and again for the processed image) or millions of empty segments
    (each a step of the header parse, on the API's event loop)."""
    assert inspect_image(progressive_jpeg_with_repeated_scans(10), max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidImage, match=r"progressive JPEG has 1\d\d scans; at most 100"):
        inspect_image(progressive_jpeg_with_repeated_scans(100), max_pixels=MAX_PIXELS)
    assert inspect_image(jpeg_with_comment_segments(500), max_pixels=MAX_PIXELS)
    with pytest.raises(InvalidImage, match="more than 1000 marker segments"):
        inspect_image(jpeg_with_comment_segments(1_000_000), max_pixels=MAX_PIXELS)
    # Fill bytes (0xFF before a marker) cost Pillow a step each too: 19 MB of them took 10 s.
    with pytest.raises(InvalidImage, match="more than 1000 marker segments or fill bytes"):
        inspect_image(T1[:2] + b"\xff" * 1_000_000 + T1[2:], max_pixels=MAX_PIXELS)
    # What follows the image (a Motion Photo's video, a gain map) holds no scans of it.
    appended = progressive_jpeg_with_repeated_scans(10) + b"\xff\xda\x00\x08" * 200
    assert inspect_image(appended, max_pixels=MAX_PIXELS).format == "JPEG"


def png_declaring(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose header declares this size, bit depth and colour type (chunks CRC-correct)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(16)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (png_declaring(0, 0), "the PNG header is corrupt: it declares 0x0 pixels"),
        (png_declaring(4, 4, depth=3), "bit depth 3 with colour type 2, which PNG does not allow"),
        (png_declaring(4, 4, colour=5), "bit depth 8 with colour type 5, which PNG does not allow"),
        (b"RIFF\x04\x00\x00\x00WEBP", "the WEBP header is corrupt: the file holds no image data"),
    ],
)
def test_a_header_pillow_refuses_is_refused_saying_what_is_wrong(data, message):
    """Pillow's "cannot identify image file <_io.BytesIO …>" reached clients as "cannot
    identify image file the input": nothing to act on."""
    with pytest.raises(InvalidImage) as refused:
        inspect_image(data, max_pixels=MAX_PIXELS)
    assert message in refused.value.detail
    assert "cannot identify" not in refused.value.detail


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def test_a_bmp_gif_or_tiff_upload_becomes_a_png_of_its_first_frame():
    """DeepStack read anything Pillow opens and CompreFace lists bmp, gif and tif: such a file
    was a 415. It is kept as a PNG: lossless for a BMP or TIFF, a GIF's palette as it is."""
    with Image.open(io.BytesIO(T1)) as photo:
        rgb = photo.convert("RGB")
    second = Image.new("RGB", rgb.size, "red")
    for image_format, data in [
        ("BMP", pillow_encoded(rgb, "BMP")),
        ("TIFF", pillow_encoded(rgb, "TIFF", compression="tiff_lzw")),
        ("GIF", pillow_encoded(rgb, "GIF", save_all=True, append_images=[second])),
    ]:
        kept, info = await accept_image(data, max_pixels=MAX_PIXELS)
        assert kept.startswith(b"\x89PNG"), image_format
        assert (info.format, info.width, info.height) == ("PNG", 1280, 886), image_format
        expected = pixels(data)  # Pillow's first frame of the file as sent
        assert np.array_equal(pixels(kept), expected), image_format
        if image_format != "GIF":
            assert np.array_equal(expected, np.asarray(rgb)), image_format


async def test_a_tiff_turned_by_its_orientation_tag_is_kept_upright():
    wide = Image.new("RGB", (60, 20), "white")
    wide.paste(Image.new("RGB", (10, 20), "black"), (0, 0))  # a black band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: the band at the top
    kept, info = await accept_image(pillow_encoded(wide, "TIFF", exif=exif), max_pixels=MAX_PIXELS)
    assert (info.width, info.height, info.orientation) == (20, 60, 1)
    upright = pixels(kept)
    assert upright[:10].max() == 0 and upright[-10:].min() == 255


async def test_a_converted_format_s_bomb_or_damage_is_refused_before_any_decode():
    """Dimensions come from the header, as for the others: a 100k×100k BMP is a few bytes."""

    def bmp_header(width: int, height: int) -> bytes:
        return struct.pack("<2sIHHI", b"BM", 0, 0, 0, 54) + struct.pack(
            "<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0
        )

    for width, limit, message in [
        (100_000, MAX_PIXELS, "limit of 50000000 pixels"),  # Pillow's own bomb check
        (8_000, MAX_PIXELS, "8000x8000 = 64000000 pixels"),
    ]:
        with pytest.raises(ImageTooLarge) as bomb:
            await accept_image(bmp_header(width, width) + b"\x00" * 64, max_pixels=limit)
        assert message in bomb.value.detail and bomb.value.status == 413
    gif = pillow_encoded(Image.new("RGB", (64, 48), "blue"), "GIF")
    with pytest.raises(InvalidImage) as damaged:
        await accept_image(gif[:30], max_pixels=MAX_PIXELS)
    assert "GIF" in damaged.value.detail and damaged.value.status == 422
