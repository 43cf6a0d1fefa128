"""The processed image: a job's detections drawn on its picture (boxes or outlines, key points,
captions placed clear of each other). Drawn by the API on demand (app/jobs/service.py), from the
stored image and the stored detections; pure CPU work, no I/O."""

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from app.pixels import ImageBGR, decode_image

JPEG_QUALITY = 90


class Drawable(Protocol):
    """A detection as it is drawn: a stored row (app/models.py Detection) or a worker's."""

    @property
    def kind(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Sequence[float]: ...
    @property
    def landmarks(self) -> Sequence[Sequence[float]] | None: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


_COLORS = {
    "face": (80, 220, 60),
    "object": (40, 160, 255),
    "qr": (230, 80, 200),
    "text": (180, 60, 240),
    "plate": (0, 210, 250),
}
# Kinds whose landmarks are the corners of a polygon, drawn as its outline.
_OUTLINED = frozenset({"qr", "text", "plate"})
_LANDMARK_COLOR = (0, 0, 255)
_MAX_CAPTION_CHARS = 48


@dataclass(frozen=True)
class Label:
    """A caption's filled rectangle on the canvas: (left, top, right, bottom), exclusive."""

    text: str
    left: int
    top: int
    right: int
    bottom: int
    color: tuple[int, int, int]

    def overlaps(self, other: "Label") -> bool:
        return (
            self.left < other.right
            and other.left < self.right
            and self.top < other.bottom
            and other.top < self.bottom
        )


def class_color(detection: Drawable) -> tuple[int, int, int]:
    """Faces green, QR magenta, each object class its own stable colour (BGR)."""
    if detection.kind != "object":
        return _COLORS.get(detection.kind, (255, 255, 255))
    # A hue from the class name: the same class is the same colour in every image.
    hue = zlib.crc32((detection.label or "object").encode()) % 180
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def caption(detection: Drawable) -> str:
    """What is written by a box: a known face's name with its similarity (gender, age);
    otherwise the detection score; QR payload; the text read; the plate."""
    attributes = detection.attributes
    if detection.kind == "face":
        parts = []
        identity = attributes.get("identity")
        if isinstance(identity, dict) and identity.get("name"):
            similarity = identity.get("similarity")
            name = str(identity["name"])
            parts.append(f"{name} {float(similarity):.2f}" if similarity is not None else name)
        elif identity:
            parts.append(str(identity))
        elif attributes.get("unknown"):
            parts.append("unknown")
        if "gender" in attributes and "age" in attributes:
            parts.append(f"{attributes['gender'][0].upper()} {attributes['age']}")
        if isinstance(identity, dict) and identity.get("name"):
            return ", ".join(parts)  # the similarity is the figure that matters here
        text = ", ".join(parts) if parts else "face"
        return f"{text} {detection.score:.2f}"
    if detection.kind == "qr":
        return f"QR: {_shortened(str(attributes.get('payload', '')))}"
    if detection.kind == "text":
        return _shortened(str(attributes.get("text", "")))
    if detection.kind == "plate":
        return f"PLATE {attributes.get('plate', '')}"
    return f"{detection.label or detection.kind} {detection.score:.2f}"


def _shortened(text: str) -> str:
    if len(text) > _MAX_CAPTION_CHARS:
        return text[: _MAX_CAPTION_CHARS - 3] + "..."
    return text


def place_label(
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    frame: tuple[int, int],
    placed: Sequence[Label],
    text: str,
    color: tuple[int, int, int],
) -> Label:
    """Where a caption of `size` (w, h) goes: above its box, else inside its top, else below it,
    shifted to stay inside the frame (w, h) and clear of the captions already placed. When every
    spot is taken it slides down from above the box to the first free row."""
    x1, y1, _, y2 = box
    width, height = size
    frame_w, frame_h = frame
    left = min(max(0, x1), max(0, frame_w - width))

    def at(top: int) -> Label:
        top = min(max(0, top), max(0, frame_h - height))
        return Label(text, left, top, left + width, top + height, color)

    candidates = [at(y1 - height), at(y1), at(y2)]
    for candidate in candidates:
        if not any(candidate.overlaps(other) for other in placed):
            return candidate
    top = candidates[0].top
    while top + height <= frame_h:
        candidate = at(top)
        clash = [other for other in placed if candidate.overlaps(other)]
        if not clash:
            return candidate
        top = max(other.bottom for other in clash)
    return candidates[0]  # no free row left in the frame: overlap rather than drop it


def draw(canvas: ImageBGR, detections: Sequence[Drawable], *, scale: float = 1.0) -> list[Label]:
    """Draw every detection (box, or the outline of a QR code, text region or plate; key
    points) and its caption onto `canvas`; returns the captions as placed (inside the frame,
    none over another where room allows).

    `scale`: canvas pixels per detection pixel (detections are stored at full resolution; a
    large JPEG is drawn on its reduced decode, app/pixels.py).
    """
    frame_h, frame_w = canvas.shape[:2]
    thickness = max(1, round(max(frame_h, frame_w) / 500))
    for detection in detections:
        color = class_color(detection)
        x1, y1, x2, y2 = (round(v * scale) for v in detection.box)
        if detection.kind in _OUTLINED and detection.landmarks:
            outline = np.array(
                [[round(x * scale), round(y * scale)] for x, y in detection.landmarks], np.int32
            )
            cv2.polylines(canvas, [outline], True, color, thickness)
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            for x, y in detection.landmarks or ():
                center = (round(x * scale), round(y * scale))
                cv2.circle(canvas, center, thickness + 1, _LANDMARK_COLOR, -1)
    # Captions after every box: a later box's outline never crosses an earlier caption.
    labels: list[Label] = []
    for detection in detections:
        color = class_color(detection)
        box = tuple(round(v * scale) for v in detection.box)
        text = caption(detection).encode("ascii", "replace").decode()  # Hershey fonts: ASCII
        font_scale, weight = 0.4 * thickness, thickness
        (text_w, text_h), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, weight
        )
        while text_w + 4 > frame_w and font_scale > 0.2:  # a caption wider than the frame
            font_scale *= 0.8
            weight = max(1, round(weight * 0.8))
            (text_w, text_h), baseline = cv2.getTextSize(
                text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, weight
            )
        label = place_label(
            (box[0], box[1], box[2], box[3]),
            (text_w + 4, text_h + baseline + 4),
            (frame_w, frame_h),
            labels,
            text,
            color,
        )
        labels.append(label)
        cv2.rectangle(
            canvas, (label.left, label.top), (label.right - 1, label.bottom - 1), color, -1
        )
        dark = sum(color) > 382  # black text on light colours, white on dark ones
        cv2.putText(
            canvas,
            text,
            (label.left + 2, label.top + 2 + text_h),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0) if dark else (255, 255, 255),
            weight,
            cv2.LINE_AA,
        )
    return labels


def render(image: ImageBGR, detections: Sequence[Drawable], *, scale: float = 1.0) -> bytes:
    """The image with every detection drawn (box or QR outline, key points, caption) as a JPEG
    of the image's size; `scale` as for `draw`."""
    canvas = image.copy()
    draw(canvas, detections, scale=scale)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def processed_jpeg(
    image: bytes, detections: Sequence[Drawable], *, max_pixels: int, target_side_px: int
) -> bytes:
    """A stored image with its detections (full-resolution, upright pixels) drawn: decoded as
    the workers decode it (upright; a large JPEG at reduced scale), drawn at that size. Raises
    BadImage."""
    decoded = decode_image(image, max_pixels=max_pixels, target_side_px=target_side_px)
    return render(decoded.pixels, detections, scale=1 / decoded.scale)
