"""Image bytes → detections, counts and an annotated JPEG. Pure CPU work, no I/O: testable alone."""

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from app.errors import AppError
from app.images import inspect_image
from workers.detectors.base import Detection, Detector, ImageBGR

JPEG_QUALITY = 90


class BadImage(Exception):
    """The job's image cannot be used; the job fails and is not retried."""


@dataclass(frozen=True)
class PipelineResult:
    width: int
    height: int
    detections: list[Detection]
    counts: dict[str, int]
    decode_ms: float
    inference_ms: float
    processed_jpeg: bytes
    model_ms: dict[str, float]  # inference time per model file


def decode_image(data: bytes, *, max_pixels: int) -> ImageBGR:
    """Header checks first (type, dimensions, truncation), then the real decode."""
    try:
        inspect_image(data, max_pixels=max_pixels)
    except AppError as exc:
        raise BadImage(exc.detail) from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage("the image could not be decoded")
    return np.ascontiguousarray(image)


def run_pipeline(
    data: bytes, tasks: Sequence[str], detectors: Mapping[str, Detector], *, max_pixels: int
) -> PipelineResult:
    started = time.perf_counter()
    image = decode_image(data, max_pixels=max_pixels)
    decoded = time.perf_counter()
    detections: list[Detection] = []
    model_ms: dict[str, float] = {}
    for task in tasks:
        detector = detectors.get(task)
        if detector is None:
            raise BadImage(f"this worker has no detector for task {task!r}")
        before = time.perf_counter()
        detections.extend(detector.detect(image))
        model_ms[detector.model] = round((time.perf_counter() - before) * 1000, 3)
    finished = time.perf_counter()
    height, width = image.shape[:2]
    return PipelineResult(
        width=width,
        height=height,
        detections=detections,
        counts=dict(Counter(d.label or d.kind for d in detections)),
        decode_ms=round((decoded - started) * 1000, 3),
        inference_ms=round((finished - decoded) * 1000, 3),
        processed_jpeg=render(image, detections),
        model_ms=model_ms,
    )


_COLORS = {"face": (80, 220, 60), "object": (40, 160, 255), "qr": (230, 80, 200)}


def render(image: ImageBGR, detections: Sequence[Detection]) -> bytes:
    """The image with every detection drawn: box, landmarks, label and score. Same size."""
    canvas = image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 500))
    for detection in detections:
        color = _COLORS.get(detection.kind, (255, 255, 255))
        x1, y1, x2, y2 = (round(v) for v in detection.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        for x, y in detection.landmarks or ():
            cv2.circle(canvas, (round(x), round(y)), thickness + 1, (0, 0, 255), -1)
        caption = f"{detection.label or detection.kind} {detection.score:.2f}"
        cv2.putText(
            canvas,
            caption,
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            color,
            thickness,
            cv2.LINE_AA,
        )
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()
