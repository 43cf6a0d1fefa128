"""Image bytes → detections and counts. Pure CPU work, no I/O: testable alone.

Two stages, so a worker can decode the next batch while this one is in inference:
`decode_image` (app/pixels.py: bytes → upright BGR pixels) and `run_batch` (decoded images →
results, every task's detector called once for the whole batch). No picture is drawn here: the
processed image is the API's, drawn on demand from the stored image and detections.
"""

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.pixels import BadImage, DecodedImage, decode_image
from workers.detectors.base import Detection, Detector, ImageBGR

# Tasks with no detector of their own: they work on the faces task's detections after inference
# (identify: the consumer's gallery step, workers/gallery.py). Their jobs also ask for "faces"
# (or "face_crop").
AFTER_INFERENCE_TASKS = frozenset({"identify"})


@dataclass(frozen=True)
class PipelineResult:
    width: int  # upright, full resolution
    height: int
    detections: list[Detection]  # in full-resolution upright pixels
    counts: dict[str, int]
    decode_ms: float
    inference_ms: float  # wall time of the batch this image ran in


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
    """Counts, and detections scaled to full-resolution pixels. No picture: the processed image
    is drawn by the API when someone asks for it (app/drawing.py)."""
    return PipelineResult(
        width=image.width,
        height=image.height,
        detections=[d.scaled(image.scale) for d in detections],
        counts=dict(Counter(count_key(d) for d in detections)),
        decode_ms=image.decode_ms,
        inference_ms=inference_ms,
    )


def count_key(detection: Detection) -> str:
    """What a detection counts as in the job's counts (and so in /v1/stats): its label, and for
    a plate `plate:<string>`, so that each plate is counted on its own."""
    if detection.kind == "plate" and detection.attributes.get("plate"):
        return f"plate:{detection.attributes['plate']}"
    return detection.label or detection.kind


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
