"""Test image factories: real encoders, or hand-built bytes for malformed files."""

import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno
from PIL import Image

# The shared test images (../shared/images beside the checkout; README: Tests), or where
# LOOKOUT_TEST_IMAGES_DIR says for a checkout elsewhere.
SHARED_IMAGES = Path(
    os.environ.get("LOOKOUT_TEST_IMAGES_DIR")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "images"
)


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width×height RGB pixels, with a tiny compressed body.

    Decoding it would need width*height*3 bytes (30 GB by default); the file is under 100 bytes.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def encode(image: np.ndarray, extension: str = ".png") -> bytes:
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return bytes(encoded.tobytes())


def pillow_encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    """`image` encoded by Pillow: formats OpenCV does not write (GIF), Pillow's options (EXIF,
    frames)."""
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()


def in_format(data: bytes, image_format: str) -> bytes:
    """An encoded image again, as `image_format` (BMP, GIF, TIFF: what uploads are converted
    from, app/images.py accept_image)."""
    with Image.open(io.BytesIO(data)) as image:
        return pillow_encoded(image.convert("RGB"), image_format)


def blank(width: int = 64, height: int = 48, extension: str = ".png") -> bytes:
    return encode(np.full((height, width, 3), 127, np.uint8), extension)


def write_video(path: Path, frames: Sequence[np.ndarray], *, fps: float) -> Path:
    """An MJPG AVI of the frames (all resized to the first one's size), with OpenCV."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.resize(frame, (width, height)))
    writer.release()
    return path


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def plate_on_vehicle(
    scene: np.ndarray,
    plate: str,
    corners: Sequence[tuple[float, float]],
    *,
    size: tuple[int, int] = (520, 110),
    font_px: int = 78,
) -> np.ndarray:
    """`scene` with a licence plate composited in perspective.

    The plate is rendered flat with PIL (black characters on a white plate with a dark rim),
    then warped with cv2 so its corners land on `corners` (top-left, top-right, bottom-right,
    bottom-left, scene pixels), as a plate on a vehicle seen at an angle would.
    """
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    flat = Image.new("RGB", (width, height), (250, 250, 245))
    draw = ImageDraw.Draw(flat)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(30, 30, 30), width=6)
    font = ImageFont.load_default(size=font_px)
    # A "\n" makes a plate of two lines, each centred.
    left, top, right, bottom = draw.textbbox((0, 0), plate, font=font, align="center")
    draw.text(
        ((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top),
        plate,
        fill=(15, 15, 15),
        font=font,
        align="center",
    )
    source = np.array(flat)[:, :, ::-1].copy()  # RGB → BGR
    source_corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(source_corners, np.array(corners, dtype=np.float32))
    scene_h, scene_w = scene.shape[:2]
    warped = cv2.warpPerspective(source, matrix, (scene_w, scene_h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(
        np.full((height, width), 255, np.uint8), matrix, (scene_w, scene_h), flags=cv2.INTER_AREA
    )
    alpha = (mask.astype(np.float32) / 255)[:, :, None]
    blended = scene.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
    return blended.round().astype(np.uint8)


# A plate composited on the pickup in ../shared/images/scenes/dog.jpg (car/truck box about
# (466, 78)-(692, 171)), on its front wing, seen at an angle. Read back as "KX51RTA".
PLATE_TEXT = "KX51 RTA"
PLATE_READ = "KX51RTA"
PLATE_CORNERS_ON_DOG = [(612, 136), (682, 131), (683, 152), (613, 157)]


def dog_with_plate(shared_images: Path) -> np.ndarray:
    scene = cv2.imread(str(shared_images / "scenes" / "dog.jpg"), cv2.IMREAD_COLOR)
    assert scene is not None
    return plate_on_vehicle(scene, PLATE_TEXT, PLATE_CORNERS_ON_DOG)


def dog_with_plate_jpeg(shared_images: Path) -> bytes:
    return encode(dog_with_plate(shared_images), ".jpg")


def qr_code(payload: str | bytes, *, module_px: int) -> np.ndarray:
    """A QR code as a BGR image with its quiet zone: text through OpenCV's encoder, bytes in byte
    mode through segno (OpenCV's encoder takes text, and stops at a NUL)."""
    if isinstance(payload, str):
        code = cv2.QRCodeEncoder.create().encode(payload)
    else:
        matrix = segno.make(payload, mode="byte", micro=False).matrix
        code = np.where(np.array([list(row) for row in matrix], np.uint8), 0, 255).astype(np.uint8)
    code = cv2.resize(code, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    quiet = 4 * module_px  # the quiet zone the standard asks for
    code = cv2.copyMakeBorder(code, quiet, quiet, quiet, quiet, cv2.BORDER_CONSTANT, value=255)
    return cv2.cvtColor(code, cv2.COLOR_GRAY2BGR)
