"""Image checks: format, dimensions, completeness, and a body that decodes. One check, one
answer for every entry point (uploads, gallery calls, node frames): a file that is not an image
is 415 `unsupported_image_type` everywhere, a corrupt one 422 `invalid_image`.

The API runs these on every upload; workers run them again before decoding. Dimensions come from
the header first, so a decompression bomb (small file, huge dimensions) is rejected before
anything is allocated. The body check: a PNG's chunks are CRC-checked and its zlib stream
inflated (no unfiltering, no pixels kept); a WebP is decoded by libwebp, the only way to know
that its bitstream is whole. Cheap for a photo, not for 50 MP: the API runs it in a thread
for large images (inspect_image_async). A JPEG's entropy data is left to the
worker: libjpeg decodes a damaged scan with grey blocks rather than failing.

Lookout keeps JPEG, PNG and WebP. An upload (not a node's frame) may also be a BMP, GIF or
TIFF: accept_image turns it into a PNG at the door, its dimensions checked from its header first.
"""

import asyncio
import io
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from PIL import ExifTags, Image, ImageOps

from app.errors import AppError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class InvalidImage(InvalidInput):
    code = "invalid_image"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedImageType(UnsupportedMediaType):
    code = "unsupported_image_type"


@dataclass(frozen=True)
class ImageInfo:
    format: str  # JPEG | PNG | WEBP
    width: int  # as stored, before EXIF orientation
    height: int
    orientation: int = 1  # EXIF orientation 1..8; 5..8 swap width and height when shown

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) once EXIF orientation is applied: the frame detections refer to."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


# A PNG or WebP of more pixels than this has its body checked in a thread by the API (inspect
# off the event loop): inflating or decoding 50 MP is a fraction of a second of CPU, and a file
# of a few KB can claim that many (one colour compresses to nothing).
BODY_CHECK_INLINE_PIXELS = 1 << 20


async def inspect_image_async(data: bytes, *, max_pixels: int) -> ImageInfo:
    """inspect_image for an event loop: the header inline (microseconds), a large PNG's or
    WebP's body check in a thread, so one upload does not stall every other request."""
    info = inspect_header(data, max_pixels=max_pixels)
    if info.format != "JPEG" and info.width * info.height > BODY_CHECK_INLINE_PIXELS:
        await asyncio.to_thread(check_body, info.format, data)
    else:
        check_body(info.format, data)
    return info


# Accepted at the door and turned into a PNG there (a GIF's first frame, a TIFF's first page,
# upright): what DeepStack (anything Pillow opens) and CompreFace (bmp, gif, tif, …) take.
# Everything past the door (storage, workers, drawing) knows JPEG, PNG and WebP only.
CONVERTED_CONTENT_TYPES = ("image/bmp", "image/gif", "image/tiff")
T = TypeVar("T")


async def accept_image(data: bytes, *, max_pixels: int) -> tuple[bytes, ImageInfo]:
    """The image as Lookout keeps it, and its ImageInfo: a BMP, GIF or TIFF converted to PNG (in
    a thread: it is decoded), any other file as it came, checked by inspect_image."""
    converted = _converted_format(data)
    if converted is not None:
        return await asyncio.to_thread(_to_png, data, converted, max_pixels)
    return data, await inspect_image_async(data, max_pixels=max_pixels)


def _converted_format(data: bytes) -> str | None:
    if data[:2] == b"BM":
        return "BMP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _to_png(data: bytes, image_format: str, max_pixels: int) -> tuple[bytes, ImageInfo]:
    """The first frame as an RGB PNG, turned upright (a TIFF's orientation tag), and its info.
    Dimensions are checked from the header before a pixel is decoded, as inspect_header does."""
    upright = _read_header(
        data,
        image_format,
        max_pixels=max_pixels,
        corrupt=lambda exc: f"the {image_format} image is corrupt: {exc}",
        read=lambda image: ImageOps.exif_transpose(image.convert("RGB")),
    )
    out = io.BytesIO()
    upright.save(out, format="PNG", compress_level=1)  # fast: it is stored once, read by a worker
    return out.getvalue(), ImageInfo("PNG", upright.width, upright.height)


def _read_header(
    data: bytes,
    image_format: str,
    *,
    max_pixels: int,
    corrupt: Callable[[Exception], str],
    read: Callable[[Image.Image], T],
) -> T:
    """`read` of Pillow's lazy open of the file (its header only), its dimensions checked
    against max_pixels first. Pillow's errors, in the open or in `read`, are a 422 saying
    `corrupt(error)`; its own decompression-bomb refusal is ours (413). A function, not a
    context manager: inspect_header runs on every upload and job, and a context manager added
    1.7 µs a call to it (timeit, 2026-12-06; this adds ~0.5)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[image_format]) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise InvalidImage(f"the image has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"image is {width}x{height} = {width * height} pixels; the limit is "
                        f"{max_pixels}"
                    )
                return read(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image dimensions exceed the limit of {max_pixels} pixels") from exc
    except AppError:
        raise
    except Exception as exc:  # PIL raises a zoo of types for corrupt files
        raise InvalidImage(corrupt(exc)) from exc


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Validate an encoded image without decoding pixels; raise a 4xx AppError if unusable."""
    info = inspect_header(data, max_pixels=max_pixels)
    check_body(info.format, data)
    return info


def inspect_header(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Format, dimensions (against max_pixels), orientation and completeness; not the body."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    image_format = _sniff_format(data)
    if not _is_complete(image_format, data):
        raise InvalidImage(f"the {image_format} data is truncated (the file ends early)")
    width, height, orientation = _read_header(
        data,
        image_format,
        max_pixels=max_pixels,
        corrupt=lambda exc: (
            f"the {image_format} header is corrupt: {_why(image_format, data, exc)}"
        ),
        read=lambda image: (*image.size, _exif_orientation(image)),
    )
    return ImageInfo(image_format, width, height, orientation)


# The bit depths PNG allows with each colour type (PNG spec, 11.2.2 IHDR).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _why(image_format: str, data: bytes, exc: Exception) -> str:
    """What is wrong with a header Pillow refused, in words: Pillow's own "cannot identify
    image file <_io.BytesIO …>" says nothing a client can act on."""
    if image_format == "PNG" and data[12:16] == b"IHDR" and len(data) >= 29:
        width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
        if width == 0 or height == 0:
            return f"it declares {width}x{height} pixels"
        if depth not in _PNG_DEPTHS.get(colour, ()):
            return (
                f"it declares bit depth {depth} with colour type {colour}, which PNG does not allow"
            )
    if image_format == "WEBP" and len(data) <= 20:
        return "the file holds no image data"
    if "cannot identify image file" in str(exc):
        return f"it cannot be read as a {image_format} image"
    return str(exc)


def check_body(image_format: str, data: bytes) -> None:
    """A PNG's chunks and zlib stream, a WebP's bitstream (module docstring); JPEG: nothing."""
    if image_format == "PNG":
        _check_png_body(data)
    elif image_format == "WEBP":
        _check_webp_body(data)


# Inflate in steps of this many bytes: memory stays bounded whatever the stream claims.
_INFLATE_STEP = 1 << 20


# Channels per PNG colour type (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def _png_rows(header: bytes) -> list[tuple[int, int]]:
    """(row count, bytes per row including its filter byte) of each pass of the image."""
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    bits = bit_depth * _PNG_CHANNELS.get(colour_type, 4)
    passes = _ADAM7 if interlace == 1 else ((0, 0, 1, 1),)
    rows = []
    for x0, y0, dx, dy in passes:
        pass_width = max(0, (width - x0 + dx - 1) // dx)
        pass_height = max(0, (height - y0 + dy - 1) // dy)
        if pass_width and pass_height:
            rows.append((pass_height, 1 + (pass_width * bits + 7) // 8))
    return rows


def _check_png_body(data: bytes) -> None:
    """Every chunk's CRC; the IDAT zlib stream inflates to its end, to exactly the bytes the
    header's dimensions need, and every row starts with a valid filter type (0–4). The inflated
    bytes are looked at in steps and dropped: no pixels are kept or unfiltered."""
    rows = _png_rows(data[16:29])
    expected = sum(count * stride for count, stride in rows)
    boundaries = iter([(n, stride) for n, stride in rows])
    row_count, stride = next(boundaries, (0, 1))
    next_row_at = 0  # offset of the next filter byte in the inflated stream
    pass_end = row_count * stride
    inflated = 0
    inflater = zlib.decompressobj()
    saw_data = False

    def take(out: bytes) -> None:
        nonlocal inflated, next_row_at, pass_end, stride
        end = inflated + len(out)
        while next_row_at < end and next_row_at < expected:
            if out[next_row_at - inflated] > 4:
                raise InvalidImage("the PNG pixel data is corrupt (a row has no valid filter)")
            next_row_at += stride
            if next_row_at >= pass_end:
                count, stride = next(boundaries, (0, 1))
                next_row_at = pass_end
                pass_end += count * stride
        inflated = end

    pos = 8
    try:
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            chunk_type = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
            if zlib.crc32(chunk_type + body) != crc:
                # A chunk type is four ASCII letters; anything else is shown in hex: the reason
                # is stored (a job's error, an import's problems) and Postgres refuses NUL.
                name = chunk_type.decode() if chunk_type.isalpha() else f"0x{chunk_type.hex()}"
                raise InvalidImage(f"the PNG data is corrupt (bad checksum in a {name} chunk)")
            if chunk_type == b"IDAT":
                saw_data = True
                pending = body
                while pending and not inflater.eof:
                    take(inflater.decompress(pending, _INFLATE_STEP))
                    pending = inflater.unconsumed_tail
                    if inflated > expected:
                        break
            if chunk_type == b"IEND":
                break
            pos += 12 + length
    except zlib.error as exc:
        raise InvalidImage(f"the PNG pixel data is corrupt ({exc})") from exc
    if not saw_data or not inflater.eof or inflated != expected:
        raise InvalidImage(
            f"the PNG pixel data is corrupt ({inflated} bytes where its size needs {expected})"
        )


def _check_webp_body(data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as image:
            image.load()
    except Exception as exc:  # PIL raises OSError and others for a damaged bitstream
        raise InvalidImage(f"the WEBP image data is corrupt: {exc}") from exc


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); a corrupt EXIF block counts as 1, not an error.

    Only EXIF that the header parse already holds (JPEG APP1, WebP EXIF, PNG eXIf before the
    pixel data) is read: Image.getexif() may decode the whole image to find more, which would
    undo the point of checking dimensions first.
    """
    raw = image.info.get("exif")
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        orientation = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:  # PIL raises many types for malformed EXIF
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _sniff_format(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    converted = _converted_format(data)
    if converted is not None:  # not through accept_image: a node's frame
        raise UnsupportedImageType(
            f"a {converted} image is accepted as an upload, not here: send JPEG, PNG or WebP"
        )
    raise UnsupportedImageType(
        "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (unrecognised file signature)"
    )


def _is_complete(image_format: str, data: bytes) -> bool:
    if image_format == "JPEG":
        return _jpeg_complete(data)
    if image_format == "PNG":
        return _png_complete(data)
    # WebP: the RIFF header states the payload size.
    riff_size: int = struct.unpack_from("<I", data, 4)[0]
    return len(data) >= 8 + riff_size


# A photo's JPEG has a few dozen marker segments before its first scan, and a progressive one
# about ten scans. Each segment is a step of Pillow's header parse (Python) and each scan a pass
# of libjpeg over the whole image: a 19 MB file of millions of empty comment segments stalled
# the API's event loop for 9 s, and a progressive file of 5,000 repeated scans took a worker
# 19 s to decode (job_timeout_s does not cover decoding). Above these, refused.
MAX_JPEG_SEGMENTS = 1000
MAX_JPEG_SCANS = 100
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg_complete(data: bytes) -> bool:
    """Walk marker segments to the first scan, then look for the end-of-image marker.

    Inside entropy-coded data a 0xFF byte is always stuffed (FF00) or a restart marker, so the
    first FFD9 after the scan starts is the real end. Segments before the scan (EXIF thumbnails
    carry their own FFD9) are skipped by length. There is one after the scan exactly when the
    last one is after it: searched from the end, where it is, in a fraction of a microsecond
    (from the scan forwards, through entropy-coded data full of 0xFF bytes: 108 µs for
    t1.jpg's 126 KB, ~7% of the API's CPU for the upload).
    """
    pos, steps, progressive = 2, 0, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        # A fill byte is a step too: Pillow's parse takes one per byte, as per segment.
        steps += 1
        if steps > MAX_JPEG_SEGMENTS:
            raise InvalidImage(
                f"the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments or fill bytes "
                "before its image data (a photo has a few dozen)"
            )
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        progressive = progressive or marker in _PROGRESSIVE_SOF
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker == 0xDA:  # start of scan
            if progressive:
                _check_scans(data, pos)
            return data.rfind(b"\xff\xd9", pos + 2 + length) != -1
        pos += 2 + length
    return False


def _check_scans(data: bytes, first_scan: int) -> None:
    """Only a progressive JPEG repeats scans over the image; counting them (up to its end: a
    Motion Photo's video or a gain map may follow) is a pass over the data (~1 µs a KB) that a
    baseline photo does not pay."""
    end = data.find(b"\xff\xd9", first_scan)
    scans = data.count(b"\xff\xda", first_scan, end if end != -1 else len(data))
    if scans > MAX_JPEG_SCANS:
        raise InvalidImage(
            f"the progressive JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are accepted "
            "(a photo has about ten)"
        )


def _png_complete(data: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length  # length + type + data + crc
        if end > len(data):
            return False
        if chunk_type == b"IEND":
            return True
        pos = end
    return False
