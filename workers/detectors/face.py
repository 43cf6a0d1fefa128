"""Face detection with insightface's SCRFD: boxes, scores and five landmarks per face."""

from pathlib import Path
from typing import Literal

from insightface.model_zoo.scrfd import SCRFD
from pydantic import BaseModel

from workers.detectors.base import Detection, ImageBGR
from workers.detectors.onnx import create_session


class FaceDetectorConfig(BaseModel):
    type: Literal["scrfd"] = "scrfd"
    model: str = "det_500m.onnx"
    input_size: int = 640  # the image is letterboxed to this square
    score_threshold: float = 0.5
    nms_threshold: float = 0.4


class FaceDetector:
    task = "faces"

    def __init__(self, config: FaceDetectorConfig, model_path: Path, *, threads: int) -> None:
        self.model = model_path.name
        session = create_session(model_path, intra_op_threads=threads)
        # static_shape_sessions=False: use our session as is, rather than letting insightface
        # build extra per-resolution sessions with its own thread settings.
        self._scrfd = SCRFD(
            model_file=str(model_path), session=session, static_shape_sessions=False
        )
        self._scrfd.prepare(
            ctx_id=-1,
            input_size=(config.input_size, config.input_size),
            det_thresh=config.score_threshold,
            nms_thresh=config.nms_threshold,
        )

    def detect(self, image: ImageBGR) -> list[Detection]:
        boxes, keypoints = self._scrfd.detect(image)
        faces = []
        for (x1, y1, x2, y2, score), points in zip(boxes, keypoints, strict=True):
            faces.append(
                Detection(
                    kind="face",
                    label="face",
                    score=round(float(score), 4),
                    box=(float(x1), float(y1), float(x2), float(y2)),
                    landmarks=tuple((float(x), float(y)) for x, y in points),
                )
            )
        return faces
