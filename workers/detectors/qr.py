"""QR codes with OpenCV: every code in the image, its payload and its four corners.

OpenCV has two QR detectors. The ArUco-based one (the default) finds several codes per image
where the classic one finds none on the same photo (two codes pasted into scenes/dog.jpg), and
runs faster on 2 cores; the classic one stays selectable.

A payload is read as bytes and made text here: OpenCV's text API ended a payload at a NUL (a
code of binary data came back empty and was dropped) and raised on bytes its decoder took for
UTF-8 and Python does not (an encoded surrogate), which failed the image's whole job.
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
        found, payloads, corners, _ = self._detector.detectAndDecodeBytesMulti(image)
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
                    attributes={"payload": payload_text(payload)},
                )
            )
        return codes


def payload_text(payload: bytes) -> str:
    """A code's bytes as OpenCV's decoder gives them (UTF-8, or ISO 8859-1 made UTF-8: the
    standard's default for byte mode) as text; what cannot be text reads U+FFFD: bytes that are
    not UTF-8, and NUL, which Postgres stores in no text or JSON."""
    return payload.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
