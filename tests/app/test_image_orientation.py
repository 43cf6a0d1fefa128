"""EXIF orientation is read from the header, for every accepted format, without decoding."""

import io

import pytest
from PIL import Image

from app.images import inspect_image


def encoded(image_format: str, orientation: int | None, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif
    Image.new("RGB", size, (10, 20, 30)).save(buffer, image_format, **extra)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_orientation_and_upright_size_come_from_the_header(image_format):
    turned = inspect_image(encoded(image_format, 6), max_pixels=10_000)
    assert (turned.width, turned.height, turned.orientation) == (40, 30, 6)
    assert turned.upright_size == (30, 40)
    mirrored = inspect_image(encoded(image_format, 2), max_pixels=10_000)
    assert mirrored.upright_size == (40, 30)
    plain = inspect_image(encoded(image_format, None), max_pixels=10_000)
    assert plain.orientation == 1


def test_a_nonsense_orientation_counts_as_upright():
    assert inspect_image(encoded("JPEG", 42), max_pixels=10_000).orientation == 1
