"""Encoded image bytes → upright BGR pixels: the one decode of workers (before inference) and of
the API (the processed image, drawn on demand). Header checks first (app/images.py)."""

import time
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from app.errors import AppError
from app.images import ImageInfo, check_body, inspect_header

ImageBGR = npt.NDArray[np.uint8]  # H × W × 3, OpenCV channel order

# libjpeg can decode at 1/2, 1/4 and 1/8 scale (DCT scaling) for much less work than a full
# decode plus resize. Other formats decode at full size.
_REDUCED_JPEG_FLAGS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}


class BadImage(Exception):
    """The job's image cannot be used; the job fails and is not retried."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: ImageBGR  # upright (EXIF orientation applied), 3 channels, maybe reduced
    width: int  # upright size at full resolution: the frame reported boxes refer to
    height: int
    decode_ms: float

    @property
    def scale(self) -> float:
        """Full-resolution pixels per decoded pixel (1, or about 2, 4 or 8 for large JPEGs)."""
        return float(self.width / self.pixels.shape[1])


def reduction_for(format_name: str, width: int, height: int, *, target_side_px: int) -> int:
    """The largest JPEG scale-down that keeps the longer side at least target_side_px."""
    if format_name != "JPEG":
        return 1
    longer = max(width, height)
    for factor in sorted(_REDUCED_JPEG_FLAGS, reverse=True):
        if longer / factor >= target_side_px:
            return factor
    return 1


def apply_orientation(pixels: ImageBGR, orientation: int) -> ImageBGR:
    """Turn stored pixels upright per the EXIF orientation tag (1..8)."""
    turned: npt.NDArray[np.generic] = pixels
    if orientation == 2:
        turned = cv2.flip(pixels, 1)
    elif orientation == 3:
        turned = cv2.rotate(pixels, cv2.ROTATE_180)
    elif orientation == 4:
        turned = cv2.flip(pixels, 0)
    elif orientation == 5:
        turned = cv2.transpose(pixels)
    elif orientation == 6:
        turned = cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    elif orientation == 7:
        turned = cv2.rotate(cv2.transpose(pixels), cv2.ROTATE_180)
    elif orientation == 8:
        turned = cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return np.asarray(turned, dtype=np.uint8)


def decode_image(
    data: bytes, *, max_pixels: int, target_side_px: int, header: ImageInfo | None = None
) -> DecodedImage:
    """Header checks first (type, dimensions against max_pixels, truncation), then the decode.

    Large JPEGs decode at reduced scale (see reduction_for); EXIF orientation is applied (by us,
    for every format, from the header's tag); alpha is dropped and grey becomes 3 channels.
    `header`: the data's inspect_header, where the caller has it already (the body is still
    checked).
    """
    started = time.perf_counter()
    try:
        info = header if header is not None else inspect_header(data, max_pixels=max_pixels)
        check_body(info.format, data)
    except AppError as exc:
        raise BadImage(exc.detail) from exc
    factor = reduction_for(info.format, info.width, info.height, target_side_px=target_side_px)
    # Orientation is applied below, the same way for every format, so OpenCV must not also.
    flags = _REDUCED_JPEG_FLAGS.get(factor, cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None:
        raise BadImage(f"the {info.format} image could not be decoded")
    upright = np.ascontiguousarray(
        apply_orientation(np.asarray(pixels, np.uint8), info.orientation)
    )
    width, height = info.upright_size
    return DecodedImage(
        pixels=upright,
        width=width,
        height=height,
        decode_ms=round((time.perf_counter() - started) * 1000, 3),
    )
