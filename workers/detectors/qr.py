"""QR codes with OpenCV: every code in the image, its payload and its four corners.

OpenCV has two QR detectors. The ArUco-based one (the default) finds several codes per image
where the classic one finds none on the same photo (two codes pasted into scenes/dog.jpg), and
runs faster on 2 cores; the classic one stays selectable.
"""

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel

from workers.detectors.base import Detection, ImageBGR


class QrDetectorConfig(BaseModel):
    type: Literal["opencv_qr"] = "opencv_qr"
    method: Literal["aruco", "classic"] = "aruco"


class QrDetector:
    task = "qr"
    model_name = "opencv-qrcode"  # OpenCV's built-in detector: no model file

    def __init__(self, config: QrDetectorConfig) -> None:
        self.config = config
        self._detector = (
            cv2.QRCodeDetectorAruco() if config.method == "aruco" else cv2.QRCodeDetector()
        )

    def warm_up(self) -> None:
        self._detector.detectAndDecodeMulti(np.full((64, 64, 3), 255, dtype=np.uint8))

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: ImageBGR) -> list[Detection]:
        found, payloads, corners, _ = self._detector.detectAndDecodeMulti(image)
        if not found or corners is None:
            return []
        codes = []
        for payload, points in zip(payloads, corners, strict=True):
            # A code that was located but not decoded has an empty payload: without a payload
            # it tells a client nothing, and such hits include false finder-pattern matches.
            if not payload:
                continue
            xs, ys = points[:, 0], points[:, 1]
            codes.append(
                Detection(
                    kind="qr",
                    label="qr",
                    score=1.0,  # OpenCV gives no confidence; a decoded payload is certain
                    box=(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
                    landmarks=tuple((float(x), float(y)) for x, y in points),
                    attributes={"payload": str(payload)},
                )
            )
        return codes
