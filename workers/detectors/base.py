"""What every detector is: a task name, `warm_up()`, and `detect(images) -> detections per image`.

Detectors take a batch of images so that work that batches well (face embeddings) runs once per
batch; they return, for each image in order, its detections in that image's pixel coordinates.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# H × W × 3, OpenCV channel order; app/pixels.py decodes into it (re-exported for detectors).
from app.pixels import ImageBGR as ImageBGR

Point = tuple[float, float]


@dataclass(frozen=True)
class Embedding:
    model: str  # embeddings of different models live in different spaces: never compare them
    vector: npt.NDArray[np.float32]  # L2-normalised: cosine similarity is a dot product

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


@dataclass(frozen=True)
class Detection:
    kind: str  # face | object | qr
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    label: str | None = None
    # Key points in image pixels: a face's five (eyes, nose, mouth corners), a QR code's four
    # corners.
    landmarks: tuple[Point, ...] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    embedding: Embedding | None = None
    # A face's aligned crop (the embedder's input) as JPEG: its thumbnail. Kept only where the
    # job's privacy allows (app/gallery/crops.py); never drawn, never sent in events.
    crop_jpeg: bytes | None = field(default=None, repr=False)

    def scaled(self, factor: float) -> "Detection":
        """The same detection with every coordinate multiplied by `factor`."""
        if factor == 1:
            return self
        x1, y1, x2, y2 = self.box
        landmarks = (
            tuple((x * factor, y * factor) for x, y in self.landmarks)
            if self.landmarks is not None
            else None
        )
        return Detection(
            kind=self.kind,
            score=self.score,
            box=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
            label=self.label,
            landmarks=landmarks,
            attributes=self.attributes,
            embedding=self.embedding,
            crop_jpeg=self.crop_jpeg,
        )


class Detector(Protocol):
    task: str
    model_name: str  # the model file(s) it runs; labels the inference-time metric

    def warm_up(self) -> None:
        """Run every model once on a blank input (called at worker start)."""
        ...

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]: ...
