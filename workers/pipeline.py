"""Image bytes → detections, counts and an annotated JPEG. Pure CPU work, no I/O: testable alone.

Two stages, so a worker can decode the next batch while this one is in inference:
`decode_image` (bytes → upright BGR pixels) and `run_batch` (decoded images → results, every
task's detector called once for the whole batch).
"""

import dataclasses
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from app.errors import AppError
from app.images import inspect_image
from workers.detectors.base import Detection, Detector, ImageBGR

JPEG_QUALITY = 90
# libjpeg can decode at 1/2, 1/4 and 1/8 scale (DCT scaling) for much less work than a full
# decode plus resize. Other formats decode at full size.
_REDUCED_JPEG_FLAGS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}


# Tasks with no detector of their own: they work on the faces task's detections after inference
# (identify: the consumer's gallery step, workers/gallery.py). Their jobs also ask for "faces".
AFTER_INFERENCE_TASKS = frozenset({"identify"})


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


@dataclass(frozen=True)
class PipelineResult:
    width: int  # upright, full resolution
    height: int
    detections: list[Detection]  # in full-resolution upright pixels
    counts: dict[str, int]
    decode_ms: float
    inference_ms: float  # wall time of the batch this image ran in
    processed_jpeg: bytes  # at the decoded resolution


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


def decode_image(data: bytes, *, max_pixels: int, target_side_px: int) -> DecodedImage:
    """Header checks first (type, dimensions against max_pixels, truncation), then the decode.

    Large JPEGs decode at reduced scale (see reduction_for); EXIF orientation is applied (by us,
    for every format, from the header's tag); alpha is dropped and grey becomes 3 channels.
    """
    started = time.perf_counter()
    try:
        info = inspect_image(data, max_pixels=max_pixels)
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


def detect_batch(
    images: Sequence[ImageBGR],
    tasks: Sequence[Sequence[str]],
    detectors: Mapping[str, Detector],
    model_ms: dict[str, float] | None = None,
) -> list[list[Detection]]:
    """Detections per image (in that image's pixels), each task's detector called once.

    `tasks[i]` are the tasks of image i; its detections come in the order of its tasks. With
    `model_ms`, each detector's time for the batch is recorded there, by its model_name (ms).
    """
    per_task: dict[str, dict[int, list[Detection]]] = {}
    for task in dict.fromkeys(t for image_tasks in tasks for t in image_tasks):
        if task in AFTER_INFERENCE_TASKS:
            per_task[task] = {}
            continue
        detector = detectors.get(task)
        if detector is None:
            raise BadImage(f"this worker has no detector for task {task!r}")
        indices = [i for i, image_tasks in enumerate(tasks) if task in image_tasks]
        before = time.perf_counter()
        found = detector.detect([images[i] for i in indices])
        if model_ms is not None:
            model_ms[detector.model_name] = round((time.perf_counter() - before) * 1000, 3)
        per_task[task] = dict(zip(indices, found, strict=True))
    return [
        [d for task in image_tasks for d in per_task[task].get(i, [])]
        for i, image_tasks in enumerate(tasks)
    ]


def run_batch(
    images: Sequence[DecodedImage],
    tasks: Sequence[Sequence[str]],
    detectors: Mapping[str, Detector],
    model_ms: dict[str, float] | None = None,
) -> list[PipelineResult | Exception]:
    """Results for a batch; an image whose detection fails gets its exception, alone.

    The batch runs as one; if that raises, each image is retried on its own so that one bad
    input fails only its own job.
    """
    started = time.perf_counter()
    try:
        batch = detect_batch([image.pixels for image in images], tasks, detectors, model_ms)
    except Exception as exc:
        if len(images) == 1:
            return [exc]
        return [
            _run_alone(image, image_tasks, detectors)
            for image, image_tasks in zip(images, tasks, strict=True)
        ]
    inference_ms = round((time.perf_counter() - started) * 1000, 3)
    return [
        _finish_safely(image, detections, inference_ms)
        for image, detections in zip(images, batch, strict=True)
    ]


def _run_alone(
    image: DecodedImage, tasks: Sequence[str], detectors: Mapping[str, Detector]
) -> PipelineResult | Exception:
    started = time.perf_counter()
    try:
        [detections] = detect_batch([image.pixels], [tasks], detectors)
    except Exception as exc:
        return exc
    return _finish_safely(image, detections, round((time.perf_counter() - started) * 1000, 3))


def _finish_safely(
    image: DecodedImage, detections: Sequence[Detection], inference_ms: float
) -> PipelineResult | Exception:
    try:
        return finish(image, detections, inference_ms=inference_ms)
    except Exception as exc:
        return exc


def finish(
    image: DecodedImage, detections: Sequence[Detection], *, inference_ms: float
) -> PipelineResult:
    """Counts, the annotated JPEG, and detections scaled to full-resolution pixels."""
    return PipelineResult(
        width=image.width,
        height=image.height,
        detections=[d.scaled(image.scale) for d in detections],
        counts=dict(Counter(count_key(d) for d in detections)),
        decode_ms=image.decode_ms,
        inference_ms=inference_ms,
        processed_jpeg=render(image.pixels, detections),
    )


def count_key(detection: Detection) -> str:
    """What a detection counts as in the job's counts (and so in /v1/stats): its label, and for
    a plate `plate:<string>`, so that each plate is counted on its own."""
    if detection.kind == "plate" and detection.attributes.get("plate"):
        return f"plate:{detection.attributes['plate']}"
    return detection.label or detection.kind


def with_detections(
    image: DecodedImage, result: PipelineResult, detections: Sequence[Detection]
) -> PipelineResult:
    """The result with new detections (full-resolution pixels, e.g. faces given identities) and
    the processed image drawn again from them."""
    factor = 1 / image.scale
    return dataclasses.replace(
        result,
        detections=list(detections),
        processed_jpeg=render(image.pixels, [d.scaled(factor) for d in detections]),
    )


def run_pipeline(
    data: bytes,
    tasks: Sequence[str],
    detectors: Mapping[str, Detector],
    *,
    max_pixels: int,
    target_side_px: int = 2048,
) -> PipelineResult:
    """One image, start to end. Raises BadImage, or what a detector raised."""
    image = decode_image(data, max_pixels=max_pixels, target_side_px=target_side_px)
    [result] = run_batch([image], [tasks], detectors)
    if isinstance(result, Exception):
        raise result
    return result


# --- rendering ---------------------------------------------------------------------------------

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


def class_color(detection: Detection) -> tuple[int, int, int]:
    """Faces green, QR magenta, each object class its own stable colour (BGR)."""
    if detection.kind != "object":
        return _COLORS.get(detection.kind, (255, 255, 255))
    # A hue from the class name: the same class is the same colour in every image.
    hue = zlib.crc32((detection.label or "object").encode()) % 180
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def caption(detection: Detection) -> str:
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


def draw(canvas: ImageBGR, detections: Sequence[Detection]) -> list[Label]:
    """Draw every detection (box, or the outline of a QR code, text region or plate; key
    points) and its caption onto `canvas`; returns the captions as placed (inside the frame,
    none over another where room allows)."""
    frame_h, frame_w = canvas.shape[:2]
    thickness = max(1, round(max(frame_h, frame_w) / 500))
    for detection in detections:
        color = class_color(detection)
        x1, y1, x2, y2 = (round(v) for v in detection.box)
        if detection.kind in _OUTLINED and detection.landmarks:
            outline = np.array([[round(x), round(y)] for x, y in detection.landmarks], np.int32)
            cv2.polylines(canvas, [outline], True, color, thickness)
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            for x, y in detection.landmarks or ():
                cv2.circle(canvas, (round(x), round(y)), thickness + 1, _LANDMARK_COLOR, -1)
    # Captions after every box: a later box's outline never crosses an earlier caption.
    labels: list[Label] = []
    for detection in detections:
        color = class_color(detection)
        box = tuple(round(v) for v in detection.box)
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


def render(image: ImageBGR, detections: Sequence[Detection]) -> bytes:
    """The image with every detection drawn (box or QR outline, key points, caption)."""
    canvas = image.copy()
    draw(canvas, detections)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()
