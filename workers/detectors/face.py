"""Faces: SCRFD boxes + five landmarks, an embedding per face, age and gender when available.

Embeddings are computed on crops aligned with insightface's `norm_crop` (the ArcFace five-point
template; plain box crops do not work). One Embedder serves every embedding model: ArcFace and
the MobileFaceNet stand-in differ only in their EmbedderSpec. All faces of a batch of images go
through the embedder in one call.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align
from pydantic import BaseModel, Field

from app.embedders import EmbedderSpec
from workers.detectors.base import Detection, Embedding, ImageBGR
from workers.detectors.onnx import OnnxModel, RuntimeOptions, Tensor, create_session
from workers.models import GenderAgeSpec, ModelError

Landmarks5 = npt.NDArray[np.float32]  # 5 × 2: eyes, nose, mouth corners (x, y)


class FaceDetectorConfig(BaseModel):
    type: Literal["scrfd"] = "scrfd"
    input_size_px: int = 640  # the image is letterboxed to this square
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    # Faces per embedder call; a crowd photo beyond this is split to bound memory.
    max_embed_batch: int = Field(default=64, ge=1)


def to_blob(
    crops: npt.NDArray[np.uint8],
    *,
    channel_order: Literal["RGB", "BGR"],
    mean: float,
    std: float,
    layout: Literal["NCHW", "NHWC"],
) -> Tensor:
    """N × H × W × 3 BGR uint8 crops → the float tensor a model wants."""
    pixels = crops.astype(np.float32)
    if channel_order == "RGB":
        pixels = pixels[..., ::-1]
    pixels = (pixels - mean) / std
    if layout == "NCHW":
        pixels = pixels.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(pixels, dtype=np.float32)


class Embedder:
    """Aligned face crop → L2-normalised embedding, for any model described by an EmbedderSpec."""

    def __init__(self, spec: EmbedderSpec, model: OnnxModel) -> None:
        self.spec = spec
        self.model = model
        self._check_signature()

    def _check_signature(self) -> None:
        size = self.spec.input_size_px
        expected = (3, size, size) if self.spec.layout == "NCHW" else (size, size, 3)
        actual = self.model.input_shape[1:]
        fixed = [(a, e) for a, e in zip(actual, expected, strict=False) if isinstance(a, int)]
        output_dim = self.model.output_shapes[0][-1]
        if len(actual) != 3 or any(a != e for a, e in fixed):
            raise ModelError(
                f"{self.model.path.name} takes input {list(self.model.input_shape)}, but the "
                f"embedder spec {self.spec.model!r} says {self.spec.layout} {size}px"
            )
        if isinstance(output_dim, int) and output_dim != self.spec.dim:
            raise ModelError(
                f"{self.model.path.name} outputs {output_dim}-d embeddings, but the embedder "
                f"spec {self.spec.model!r} says {self.spec.dim}-d"
            )

    def align(self, image: ImageBGR, landmarks: Landmarks5) -> npt.NDArray[np.uint8]:
        crop: npt.NDArray[np.uint8] = face_align.norm_crop(
            image, landmark=landmarks, image_size=self.spec.input_size_px
        )
        return crop

    def embed(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """N aligned crops → N × dim unit vectors, in one model call (if the graph allows)."""
        if not crops:
            return np.empty((0, self.spec.dim), dtype=np.float32)
        blob = to_blob(
            np.stack(crops),
            channel_order=self.spec.channel_order,
            mean=self.spec.mean,
            std=self.spec.std,
            layout=self.spec.layout,
        )
        vectors = self.model.run_batched(blob).reshape(len(crops), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def warm_up(self) -> None:
        size = self.spec.input_size_px
        self.embed([np.zeros((size, size, 3), dtype=np.uint8)])


# Thumbnails are small: quality 85 keeps a 112-px face recognisable in about 3 KB.
CROP_JPEG_QUALITY = 85


def crop_jpeg(crop: npt.NDArray[np.uint8]) -> bytes:
    """The aligned crop as JPEG (the face's thumbnail, and the input a re-embedding needs)."""
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding of a face crop failed")
    return bytes(encoded.tobytes())


def sharpness(crop: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey aligned crop: low means blurred (or featureless).

    Measured on the aligned crop, so it does not depend on how large the face is in the photo.
    """
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 1)


class GenderAge:
    """insightface's genderage model: (gender, age) per face box."""

    def __init__(self, spec: GenderAgeSpec, model: OnnxModel) -> None:
        self.spec = spec
        self.model = model

    def crop(
        self, image: ImageBGR, box: tuple[float, float, float, float]
    ) -> npt.NDArray[np.uint8]:
        x1, y1, x2, y2 = box
        size = self.spec.input_size_px
        center = ((x1 + x2) / 2, (y1 + y2) / 2)
        scale = size / (max(x2 - x1, y2 - y1) * self.spec.box_scale)
        crop, _ = face_align.transform(image, center, size, scale, 0)
        return np.asarray(crop, dtype=np.uint8)

    def predict(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[tuple[str, int]]:
        """(gender "female" | "male", age in years) per crop."""
        if not crops:
            return []
        blob = to_blob(
            np.stack(crops),
            channel_order=self.spec.channel_order,
            mean=self.spec.mean,
            std=self.spec.std,
            layout="NCHW",
        )
        predictions = self.model.run_batched(blob).reshape(len(crops), -1)
        return [
            ("male" if int(np.argmax(p[:2])) == 1 else "female", round(float(p[2]) * 100))
            for p in predictions
        ]

    def warm_up(self) -> None:
        size = self.spec.input_size_px
        self.predict([np.zeros((size, size, 3), dtype=np.uint8)])


# A face in an image: (score, box x1 y1 x2 y2, its five landmarks or None, the embedder's input
# crop of it).
PlacedFace = tuple[
    float, tuple[float, float, float, float], Landmarks5 | None, npt.NDArray[np.uint8]
]


class FaceDetector:
    task = "faces"

    def __init__(
        self,
        config: FaceDetectorConfig,
        detector_path: Path,
        embedder: Embedder,
        *,
        genderage: GenderAge | None = None,
        options: RuntimeOptions,
    ) -> None:
        self.config = config
        self.embedder = embedder
        self.genderage = genderage
        self.model_name = "+".join(
            [detector_path.name, embedder.model.path.name]
            + ([genderage.model.path.name] if genderage is not None else [])
        )
        # static_shape_sessions=False: use our session as is, rather than letting insightface
        # build extra per-resolution sessions with its own thread settings.
        self._scrfd = SCRFD(
            model_file=str(detector_path),
            session=create_session(detector_path, options),
            static_shape_sessions=False,
        )
        self._scrfd.prepare(
            # ctx_id < 0 would make insightface reset the session to CPU only; 0 keeps the
            # providers our session was created with (CUDA where configured and present).
            ctx_id=0,
            input_size=(config.input_size_px, config.input_size_px),
            det_thresh=config.score_threshold,
            nms_thresh=config.nms_threshold,
        )

    def warm_up(self) -> None:
        size = self.config.input_size_px
        self._scrfd.detect(np.zeros((size, size, 3), dtype=np.uint8))
        self.embedder.warm_up()
        if self.genderage is not None:
            self.genderage.warm_up()

    def find_faces(self, image: ImageBGR) -> list[tuple[float, tuple[float, ...], Landmarks5]]:
        """(score, box, landmarks) per face, SCRFD only."""
        height, width = image.shape[:2]
        if min(height, width) * self.config.input_size_px < 2 * max(height, width):
            # A sliver (a 10,000 × 4 banner): its letterbox would be under 2 px across, where no
            # face fits, and 0 px made insightface's resize raise (the whole job failed).
            return []
        boxes, keypoints = self._scrfd.detect(image)
        return [
            (float(row[4]), tuple(float(v) for v in row[:4]), np.asarray(points, np.float32))
            for row, points in zip(boxes, keypoints, strict=True)
        ]

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        placed = [
            [
                (score, (x1, y1, x2, y2), landmarks, self.embedder.align(image, landmarks))
                for score, (x1, y1, x2, y2), landmarks in self.find_faces(image)
            ]
            for image in images
        ]
        return self.describe(images, placed)

    def describe(
        self,
        images: Sequence[ImageBGR],
        placed: Sequence[Sequence[PlacedFace]],
        **extra: object,
    ) -> list[list[Detection]]:
        """The faces placed in each image (score, box, landmarks or None, the embedder's input
        crop) as detections: embedded max_embed_batch at a time, with age and gender where the
        pack has the model; `extra` attributes on each."""
        faces = [
            (image, face)
            for image, image_faces in zip(images, placed, strict=True)
            for face in image_faces
        ]
        crops = [crop for _, (_, _, _, crop) in faces]
        step = self.config.max_embed_batch
        vectors = [
            vector
            for start in range(0, len(crops), step)
            for vector in self.embedder.embed(crops[start : start + step])
        ]
        attributes: list[tuple[str, int]] | None = None
        if self.genderage is not None:
            genderage = self.genderage
            attributes = genderage.predict(
                [genderage.crop(image, box) for image, (_, box, _, _) in faces]
            )
        results: list[list[Detection]] = []
        index = 0
        for image_faces in placed:
            detections = []
            for score, box, landmarks, crop in image_faces:
                more: dict[str, object] = {
                    "embedding_model": self.embedder.spec.model,
                    "sharpness": sharpness(crop),
                    **extra,
                }
                if attributes is not None:
                    more["gender"], more["age"] = attributes[index]
                detections.append(
                    Detection(
                        kind="face",
                        label="face",
                        score=round(score, 4),
                        box=box,
                        landmarks=None
                        if landmarks is None
                        else tuple((float(x), float(y)) for x, y in landmarks),
                        attributes=more,
                        embedding=Embedding(self.embedder.spec.model, vectors[index]),
                        crop_jpeg=crop_jpeg(crop),
                    )
                )
                index += 1
            results.append(detections)
        return results


class FaceCropDetector:
    """Task `face_crop`: each image is one face, already cropped (CompreFace's
    `detect_faces=false`). Nothing is detected: the whole image, resized to the embedder's input,
    is embedded, as CompreFace does when it skips detection; the box is the whole image, the
    score 1.0, no landmarks. Not aligned, so a loose crop embeds worse than a detected face."""

    task = "face_crop"

    def __init__(self, faces: FaceDetector) -> None:
        self.faces = faces  # the same sessions as the faces task: no second copy
        self.model_name = faces.embedder.model.path.name

    def warm_up(self) -> None:
        """The faces task's models: warmed up there."""

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        size = self.faces.embedder.spec.input_size_px
        placed = [
            [
                (
                    1.0,
                    (0.0, 0.0, float(image.shape[1]), float(image.shape[0])),
                    None,
                    np.asarray(
                        cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), np.uint8
                    ),
                )
            ]
            for image in images
        ]
        # cropped: not detected, the image was the face
        return self.faces.describe(images, placed, cropped=True)
