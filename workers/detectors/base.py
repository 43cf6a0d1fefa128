"""What every detector is: a task name and `detect(image) -> detections`."""

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

ImageBGR = npt.NDArray[np.uint8]  # H × W × 3, OpenCV channel order


@dataclass(frozen=True)
class Detection:
    kind: str  # face | object | qr
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    label: str | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class Detector(Protocol):
    task: str
    model: str  # the model file name; labels the inference-time metric

    def detect(self, image: ImageBGR) -> list[Detection]: ...
