"""Objects: YOLOX (official ONNX exports), COCO-80 classes, per-class NMS.

Preprocessing and output layout are in workers/models/catalog.py (ObjectPack). The decode
follows the YOLOX demo: per anchor (dx, dy, log w, log h) in grid units over strides 8/16/32,
objectness and class scores already sigmoid; score = objectness × best class score.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, field_validator

from workers.detectors.base import Detection, ImageBGR
from workers.detectors.onnx import OnnxModel, RuntimeOptions, Tensor

STRIDES = (8, 16, 32)

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class ObjectDetectorConfig(BaseModel):
    type: Literal["yolox"] = "yolox"
    input_size_px: int = 416  # square; must match the model's fixed input
    pad_value: int = 114
    score_threshold: float = Field(default=0.3, ge=0, le=1)
    nms_threshold: float = Field(default=0.45, ge=0, le=1)
    classes: list[str] | None = None  # keep only these COCO names; None keeps all

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: list[str] | None) -> list[str] | None:
        unknown = [c for c in value or () if c not in COCO_CLASSES]
        if unknown:
            raise ValueError(f"unknown COCO class(es) {unknown}; see COCO_CLASSES")
        return value


def letterbox(
    image: ImageBGR, size_px: int, *, pad_value: int
) -> tuple[npt.NDArray[np.uint8], float]:
    """Resize keeping the aspect ratio so the image fits size_px², pad right and bottom.

    Returns the padded square and the ratio (input pixels per image pixel).
    """
    height, width = image.shape[:2]
    ratio = min(size_px / height, size_px / width)
    resized = cv2.resize(
        image,
        (max(1, round(width * ratio)), max(1, round(height * ratio))),
        interpolation=cv2.INTER_LINEAR,
    )
    canvas = np.full((size_px, size_px, 3), pad_value, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, ratio


def grid_and_strides(size_px: int) -> tuple[Tensor, Tensor]:
    """Anchor grid (x, y) and stride per anchor, in the order of the YOLOX output rows."""
    grids = []
    strides = []
    for stride in STRIDES:
        cells = size_px // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        strides.append(np.full((cells * cells, 1), stride))
    return (
        np.concatenate(grids).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
    )


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        overlap_w = np.maximum(0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        overlap_h = np.maximum(0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        overlap = overlap_w * overlap_h
        iou = overlap / np.maximum(areas[best] + areas[rest] - overlap, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def decode_yolox(
    output: Tensor, *, ratio: float, config: ObjectDetectorConfig, image_size: tuple[int, int]
) -> list[Detection]:
    """One image's [anchors, 85] YOLOX output → detections in image pixels.

    `ratio` is the letterbox ratio; `image_size` (width, height) clips boxes to the image.
    """
    grid, stride = grid_and_strides(config.input_size_px)
    if output.shape[0] != grid.shape[0]:
        raise ValueError(
            f"YOLOX output has {output.shape[0]} anchors; {config.input_size_px}px input "
            f"should give {grid.shape[0]}"
        )
    class_ids = np.argmax(output[:, 5:], axis=1)
    scores = output[:, 4] * output[np.arange(len(output)), 5 + class_ids]
    wanted = scores >= config.score_threshold
    if config.classes is not None:
        allowed = [COCO_CLASSES.index(c) for c in config.classes]
        wanted &= np.isin(class_ids, allowed)
    rows, scores, class_ids = output[wanted], scores[wanted], class_ids[wanted]
    centers = (rows[:, :2] + grid[wanted]) * stride[wanted]
    sizes = np.exp(rows[:, 2:4]) * stride[wanted]
    boxes = np.concatenate((centers - sizes / 2, centers + sizes / 2), axis=1) / ratio
    width, height = image_size
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    # Class-aware NMS in one pass: shift each class's boxes to a region of its own.
    offsets = class_ids[:, None].astype(np.float32) * (max(width, height) + 1)
    keep = nms(boxes + offsets, scores, config.nms_threshold)
    return [
        Detection(
            kind="object",
            label=COCO_CLASSES[int(class_ids[i])],
            score=round(float(scores[i]), 4),
            box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
        )
        for i in keep
    ]


class ObjectDetector:
    task = "objects"

    def __init__(
        self, config: ObjectDetectorConfig, model_path: Path, *, options: RuntimeOptions
    ) -> None:
        self.config = config
        self.model = OnnxModel(model_path, options)
        self.model_name = model_path.name
        size = config.input_size_px
        if self.model.input_shape[1:] != (3, size, size):
            raise ValueError(
                f"{model_path.name} takes input {list(self.model.input_shape)}; the object "
                f"detector is configured for [N, 3, {size}, {size}]"
            )

    def warm_up(self) -> None:
        size = self.config.input_size_px
        self.model.warm_up((1, 3, size, size))

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        if not images:
            return []
        inputs = [
            letterbox(image, self.config.input_size_px, pad_value=self.config.pad_value)
            for image in images
        ]
        # BGR 0..255, no normalisation: what the official YOLOX exports expect.
        blob = np.ascontiguousarray(
            np.stack([padded for padded, _ in inputs]).transpose(0, 3, 1, 2), dtype=np.float32
        )
        outputs = self.model.run_batched(blob)
        return [
            decode_yolox(
                output,
                ratio=ratio,
                config=self.config,
                image_size=(image.shape[1], image.shape[0]),
            )
            for output, (_, ratio), image in zip(outputs, inputs, images, strict=True)
        ]
