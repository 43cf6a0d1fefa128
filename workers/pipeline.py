"""Image bytes → detections, counts and an annotated JPEG. Pure CPU work, no I/O: testable alone.

Two stages, so a worker can decode the next batch while this one is in inference:
`decode_image` (bytes → upright BGR pixels) and `run_batch` (decoded images → results, every
task's detector called once for the whole batch).
"""

import dataclasses
import time
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


def caption(detection: Detection) -> str:
    """What is written by a box: identity / gender, age for faces; class; QR payload; the text
    read; the plate."""
    attributes = detection.attributes
    if detection.kind == "face":
        parts = []
        identity = attributes.get("identity")
        if isinstance(identity, dict) and identity.get("name"):
            parts.append(str(identity["name"]))
        elif identity:
            parts.append(str(identity))
        elif attributes.get("unknown"):
            parts.append("unknown")
        if "gender" in attributes and "age" in attributes:
            parts.append(f"{attributes['gender'][0].upper()} {attributes['age']}")
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


def render(image: ImageBGR, detections: Sequence[Detection]) -> bytes:
    """The image with every detection drawn (a box, or the outline of a QR code, text region or
    plate; key points; caption)."""
    canvas = image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    font_scale = 0.4 * thickness
    for detection in detections:
        color = _COLORS.get(detection.kind, (255, 255, 255))
        x1, y1, x2, y2 = (round(v) for v in detection.box)
        if detection.kind in _OUTLINED and detection.landmarks:
            outline = np.array([[round(x), round(y)] for x, y in detection.landmarks], np.int32)
            cv2.polylines(canvas, [outline], True, color, thickness)
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            for x, y in detection.landmarks or ():
                cv2.circle(canvas, (round(x), round(y)), thickness + 1, _LANDMARK_COLOR, -1)
        text = caption(detection).encode("ascii", "replace").decode()  # Hershey fonts: ASCII
        (text_w, text_h), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness
        )
        top = max(0, y1 - text_h - baseline - 2)
        left = max(0, min(x1, canvas.shape[1] - text_w))  # a caption near the edge stays whole
        cv2.rectangle(canvas, (left, top), (left + text_w, top + text_h + baseline + 2), color, -1)
        cv2.putText(
            canvas,
            text,
            (left, top + text_h + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()
