"""Text in images: regions with their strings, confidence and a 4-point polygon, in reading order.

Two engines behind one interface (`TextEngine.read`):

- `ppocr` (default): PP-OCR detection (DB) + recognition (CTC), with the optional angle
  classifier, on the ONNX files that ship in the `rapidocr-onnxruntime` wheel (workers/models.py,
  TextPack), run through detectors/onnx.py. The pre- and post-processing follow that package's
  (rapidocr_onnxruntime 1.4.4: ch_ppocr_det/rec/cls) but are written here: importing its modules
  would import onnxruntime and its own session code, pyclipper and shapely. The one difference
  is the DB "unclip": the package offsets the rectangle with pyclipper and takes the minimum-area
  rectangle of the result; that is exactly the rectangle grown by the offset on every side,
  which is what `unclip_rect` computes.
- `tesseract`: Debian's `tesseract` binary (optional at install; a worker configured for it
  refuses to start without it), one region per line of its TSV output.

Also here: `PlateDetector` (`plates` task): vehicles from the object detector, text read inside
each vehicle box (the whole image when there is none: a plate camera's close-up), plate-like
strings kept, a plate's two lines joined.
"""

import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, field_validator

from workers.detectors.base import Detection, ImageBGR, Point
from workers.detectors.objects import COCO_CLASSES, ObjectDetector
from workers.detectors.onnx import OnnxModel, Tensor

Polygon = tuple[Point, Point, Point, Point]  # top-left, top-right, bottom-right, bottom-left


class TextEngineUnavailable(RuntimeError):
    """The configured engine cannot run on this machine; the message says what to install."""


@dataclass(frozen=True)
class TextRegion:
    text: str
    score: float  # 0..1: the recogniser's mean character confidence
    polygon: Polygon  # in the pixels of the image that was read


class TextEngine(Protocol):
    model_name: str

    def warm_up(self) -> None: ...

    def read(self, image: ImageBGR) -> list[TextRegion]:
        """Every region whose string passes the engine's threshold; order is not defined."""
        ...


# --- geometry ------------------------------------------------------------------------------------


def order_corners(points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Four points as top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def unclip_rect(
    rect: tuple[tuple[float, float], tuple[float, float], float], ratio: float
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """DB's unclip for a rotated rectangle: grown by area × ratio / perimeter on every side."""
    center, (width, height), angle = rect
    offset = width * height * ratio / max(2 * (width + height), 1e-6)
    return center, (width + 2 * offset, height + 2 * offset), angle


def polygon_box(polygon: Sequence[Point]) -> tuple[float, float, float, float]:
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def reading_order(regions: Sequence[TextRegion]) -> list[list[TextRegion]]:
    """Regions grouped into lines (top to bottom), each line left to right.

    Positions are taken along the text's own direction (the regions' median slope: a tilted
    photo turned level), so that a region joins a line when its centre lies within half the
    line's height of the line's centre: lines of a tilted photo still group, stacked lines do
    not merge. (Measured on the page as it lies, a line 8° off level was as tall as three, and
    took its neighbours in.)
    """
    level = _levelled(regions)
    lines: list[list[TextRegion]] = []
    centres: list[float] = []
    heights: list[float] = []
    for region in sorted(regions, key=lambda r: level[id(r)][1]):
        _, centre, height = level[id(region)]
        if lines and abs(centre - centres[-1]) <= min(height, heights[-1]) / 2:
            lines[-1].append(region)
            n = len(lines[-1])
            centres[-1] += (centre - centres[-1]) / n
            heights[-1] += (height - heights[-1]) / n
        else:
            lines.append([region])
            centres.append(centre)
            heights.append(height)
    return [sorted(line, key=lambda r: level[id(r)][0]) for line in lines]


def _levelled(regions: Sequence[TextRegion]) -> dict[int, tuple[float, float, float]]:
    """Each region's (left, vertical centre, height) with the page turned by the regions'
    median slope (their top edges: polygons run top-left, top-right, …)."""
    slopes = sorted(
        math.atan2(r.polygon[1][1] - r.polygon[0][1], r.polygon[1][0] - r.polygon[0][0])
        for r in regions
        if len(r.polygon) == 4 and r.polygon[1][0] > r.polygon[0][0]
    )
    angle = -slopes[len(slopes) // 2] if slopes else 0.0
    cos, sin = math.cos(angle), math.sin(angle)
    level: dict[int, tuple[float, float, float]] = {}
    for region in regions:
        turned = [(x * cos - y * sin, x * sin + y * cos) for x, y in region.polygon]
        x1, y1, _, y2 = polygon_box(turned)
        level[id(region)] = (x1, (y1 + y2) / 2, max(y2 - y1, 1.0))
    return level


def crop_quad(image: ImageBGR, polygon: npt.NDArray[np.float32]) -> ImageBGR:
    """The quadrilateral warped to an upright rectangle; tall crops are turned to lie flat."""
    width = max(
        1,
        round(
            max(np.linalg.norm(polygon[0] - polygon[1]), np.linalg.norm(polygon[2] - polygon[3]))
        ),
    )
    height = max(
        1,
        round(
            max(np.linalg.norm(polygon[0] - polygon[3]), np.linalg.norm(polygon[1] - polygon[2]))
        ),
    )
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(polygon.astype(np.float32), target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height / width >= 1.5:  # vertical text: read it lying down, as PP-OCR does
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop, dtype=np.uint8)


# --- PP-OCR --------------------------------------------------------------------------------------


class PpOcrConfig(BaseModel):
    type: Literal["ppocr"] = "ppocr"
    # Detection input: the longer side is brought down to at most max_side_px, and a small image
    # up until its shorter side reaches min_side_px (without passing max_side_px); both sides are
    # then rounded to multiples of 32, as the network needs.
    max_side_px: int = Field(default=960, ge=64)
    min_side_px: int = Field(default=640, ge=32)
    binary_threshold: float = Field(default=0.3, gt=0, lt=1)  # DB probability map → text pixels
    box_threshold: float = Field(default=0.5, ge=0, le=1)  # a region's mean probability
    unclip_ratio: float = Field(default=1.6, gt=0)
    max_regions: int = Field(default=1000, ge=1)
    # The angle classifier turns upside-down lines before recognition (PP-OCR's `cls`).
    angle_classifier: bool = True
    angle_threshold: float = Field(default=0.9, ge=0, le=1)
    score_threshold: float = Field(default=0.5, ge=0, le=1)  # recognition confidence
    rec_height_px: int = 48
    rec_min_width_px: int = 320
    rec_batch: int = Field(default=6, ge=1)
    cls_size_px: tuple[int, int] = (48, 192)  # height, width


def det_input_size(height: int, width: int, config: PpOcrConfig) -> tuple[int, int]:
    """(height, width) the detector runs at: see PpOcrConfig.max_side_px."""
    ratio = 1.0
    if max(height, width) > config.max_side_px:
        ratio = config.max_side_px / max(height, width)
    elif min(height, width) < config.min_side_px:
        ratio = min(
            config.min_side_px / min(height, width), config.max_side_px / max(height, width)
        )
    return (
        max(32, round(height * ratio / 32) * 32),
        max(32, round(width * ratio / 32) * 32),
    )


def normalize_chw(image: npt.NDArray[np.uint8]) -> Tensor:
    """uint8 H×W×3 → float32 3×H×W in [-1, 1] (PP-OCR's mean 0.5, std 0.5)."""
    scaled = image.astype(np.float32) / 255.0
    return np.ascontiguousarray(((scaled - 0.5) / 0.5).transpose(2, 0, 1))


def db_regions(
    probability: Tensor, config: PpOcrConfig, *, image_size: tuple[int, int]
) -> list[tuple[npt.NDArray[np.float32], float]]:
    """DB post-processing of one H×W probability map: (polygon in image pixels, box score).

    `image_size` is (width, height) of the image the map was computed for.
    """
    map_h, map_w = probability.shape
    width, height = image_size
    bitmap = np.asarray(
        cv2.dilate((probability > config.binary_threshold).astype(np.uint8), np.ones((2, 2))),
        dtype=np.uint8,
    )
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours[: config.max_regions]:
        (cx, cy), (rect_w, rect_h), angle = cv2.minAreaRect(contour)
        rect = ((float(cx), float(cy)), (float(rect_w), float(rect_h)), float(angle))
        if min(rect_w, rect_h) < 3:
            continue
        points = order_corners(np.asarray(cv2.boxPoints(rect), dtype=np.float32))
        score = box_score(probability, points)
        if score < config.box_threshold:
            continue
        grown = unclip_rect(rect, config.unclip_ratio)
        if min(grown[1]) < 5:
            continue
        polygon = order_corners(np.asarray(cv2.boxPoints(grown), dtype=np.float32))
        polygon[:, 0] = np.clip(np.round(polygon[:, 0] / map_w * width), 0, width - 1)
        polygon[:, 1] = np.clip(np.round(polygon[:, 1] / map_h * height), 0, height - 1)
        if (
            np.linalg.norm(polygon[0] - polygon[1]) <= 3
            or np.linalg.norm(polygon[0] - polygon[3]) <= 3
        ):
            continue
        found.append((polygon, score))
    return found


def box_score(probability: Tensor, points: npt.NDArray[np.float32]) -> float:
    """Mean probability inside the polygon (DB's "fast" score)."""
    h, w = probability.shape
    x_min = int(np.clip(np.floor(points[:, 0].min()), 0, w - 1))
    x_max = int(np.clip(np.ceil(points[:, 0].max()), 0, w - 1))
    y_min = int(np.clip(np.floor(points[:, 1].min()), 0, h - 1))
    y_max = int(np.clip(np.ceil(points[:, 1].max()), 0, h - 1))
    mask = np.zeros((y_max - y_min + 1, x_max - x_min + 1), dtype=np.uint8)
    shifted = (points - [x_min, y_min]).astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    return float(cv2.mean(probability[y_min : y_max + 1, x_min : x_max + 1], mask)[0])


def resize_padded(image: npt.NDArray[np.uint8], *, height: int, width: int) -> Tensor:
    """Scale to `height` keeping the aspect ratio (at most `width` wide), normalise, pad right."""
    scaled_w = min(width, max(1, math.ceil(height * image.shape[1] / image.shape[0])))
    resized = np.asarray(cv2.resize(image, (scaled_w, height)), dtype=np.uint8)
    padded = np.zeros((3, height, width), dtype=np.float32)
    padded[:, :, :scaled_w] = normalize_chw(resized)
    return padded


def ctc_decode(probabilities: Tensor, characters: Sequence[str]) -> list[tuple[str, float]]:
    """Greedy CTC: best class per step, repeats merged, blanks (index 0) dropped.

    Returns (string, mean probability of its characters) per row; ("", 0.0) when nothing is read.
    """
    indices = probabilities.argmax(axis=2)
    best = probabilities.max(axis=2)
    decoded = []
    for row, row_best in zip(indices, best, strict=True):
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        chars = "".join(characters[i] for i in row[keep])
        score = float(row_best[keep].mean()) if keep.any() else 0.0
        decoded.append((chars, score))
    return decoded


class PpOcrEngine:
    """PP-OCR det (+ cls) + rec. `characters` is the recogniser's dictionary (its model metadata);
    the blank (index 0) and the space (last) are added here, as PaddleOCR does."""

    def __init__(
        self,
        config: PpOcrConfig,
        *,
        detector: OnnxModel,
        recognizer: OnnxModel,
        classifier: OnnxModel | None,
        characters: Sequence[str],
    ) -> None:
        self.config = config
        self.detector = detector
        self.recognizer = recognizer
        self.classifier = classifier if config.angle_classifier else None
        self.characters = ["", *characters, " "]
        classes = recognizer.output_shapes[0][-1]
        if isinstance(classes, int) and classes != len(self.characters):
            raise ValueError(
                f"{recognizer.path.name} scores {classes} classes; its dictionary has "
                f"{len(self.characters)} with blank and space"
            )
        names = [detector.path.name, recognizer.path.name]
        if self.classifier is not None:
            names.insert(1, self.classifier.path.name)
        self.model_name = "+".join(names)

    def warm_up(self) -> None:
        self.detector.warm_up((1, 3, 64, 64))
        self.recognizer.warm_up((1, 3, self.config.rec_height_px, self.config.rec_min_width_px))
        if self.classifier is not None:
            self.classifier.warm_up((1, 3, *self.config.cls_size_px))

    def read(self, image: ImageBGR) -> list[TextRegion]:
        height, width = image.shape[:2]
        if min(height, width) < 2:
            return []
        polygons = self.detect_regions(image)
        if not polygons:
            return []
        crops = [crop_quad(image, polygon) for polygon in polygons]
        if self.classifier is not None:
            crops = self.turn_upside_down(crops)
        regions = []
        for polygon, (text, score) in zip(polygons, self.recognize(crops), strict=True):
            text = text.strip()
            if not text or score < self.config.score_threshold:
                continue
            tl, tr, br, bl = ((float(x), float(y)) for x, y in polygon)
            regions.append(TextRegion(text=text, score=round(score, 4), polygon=(tl, tr, br, bl)))
        return regions

    def detect_regions(self, image: ImageBGR) -> list[npt.NDArray[np.float32]]:
        height, width = image.shape[:2]
        input_h, input_w = det_input_size(height, width, self.config)
        resized = np.asarray(cv2.resize(image, (input_w, input_h)), dtype=np.uint8)
        blob = normalize_chw(resized)[np.newaxis]
        probability = self.detector.run(blob)[0][0, 0]
        return [
            polygon
            for polygon, _ in db_regions(probability, self.config, image_size=(width, height))
        ]

    def turn_upside_down(self, crops: list[ImageBGR]) -> list[ImageBGR]:
        assert self.classifier is not None
        cls_h, cls_w = self.config.cls_size_px
        turned = list(crops)
        for start in range(0, len(crops), self.config.rec_batch):
            chunk = crops[start : start + self.config.rec_batch]
            blob = np.stack([resize_padded(c, height=cls_h, width=cls_w) for c in chunk])
            probabilities = self.classifier.run(blob)[0]
            for offset, row in enumerate(probabilities):
                # Labels: 0 = upright, 1 = turned 180°.
                if int(row.argmax()) == 1 and float(row[1]) > self.config.angle_threshold:
                    turned[start + offset] = np.ascontiguousarray(cv2.rotate(chunk[offset], 1))
        return turned

    def recognize(self, crops: Sequence[ImageBGR]) -> list[tuple[str, float]]:
        """Strings of the crops, batched by similar widths (less padding per batch)."""
        config = self.config
        ratios = [c.shape[1] / c.shape[0] for c in crops]
        order = np.argsort(ratios, kind="stable")
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for start in range(0, len(crops), config.rec_batch):
            indices = order[start : start + config.rec_batch]
            widest = max(
                config.rec_min_width_px / config.rec_height_px, *(ratios[i] for i in indices)
            )
            width = math.ceil(config.rec_height_px * widest)
            blob = np.stack(
                [resize_padded(crops[i], height=config.rec_height_px, width=width) for i in indices]
            )
            decoded = ctc_decode(self.recognizer.run(blob)[0], self.characters)
            for i, value in zip(indices, decoded, strict=True):
                results[int(i)] = value
        return results


# --- Tesseract -----------------------------------------------------------------------------------


class TesseractConfig(BaseModel):
    type: Literal["tesseract"] = "tesseract"
    command: str = "tesseract"  # a name on PATH or a path
    languages: str = Field(default="eng", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    # Tesseract's page segmentation mode: 3 = automatic page layout, 11 = sparse text.
    page_segmentation_mode: int = Field(default=3, ge=0, le=13)
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    threads: int = Field(default=1, ge=1)  # OMP_THREAD_LIMIT of the tesseract process
    # Tesseract binarises with one global threshold, which loses text in unevenly lit photos
    # (page.png's dark left side): the image goes in grey, enlarged `upscale`× when its longer
    # side is under upscale_below_px, and thresholded locally (Gaussian, block_px neighbourhood).
    upscale: int = Field(default=2, ge=1, le=4)
    upscale_below_px: int = 1600
    block_px: int = Field(default=31, ge=3)
    block_offset: float = 10.0
    timeout_s: float = Field(default=60.0, gt=0)


class TesseractEngine:
    """The `tesseract` binary on one PNG per image (stdin), its TSV words grouped into lines."""

    def __init__(self, config: TesseractConfig) -> None:
        self.config = config
        command = shutil.which(config.command)
        if command is None:
            raise TextEngineUnavailable(
                f"the text engine is tesseract (LOOKOUT_TEXT__ENGINE=tesseract) but "
                f"{config.command!r} is not installed: apt-get install tesseract-ocr "
                "(Debian/Ubuntu), or set LOOKOUT_TEXT__TESSERACT_COMMAND to its path, or use "
                "LOOKOUT_TEXT__ENGINE=ppocr"
            )
        self.command = command
        # "List of available languages in "/…/tessdata/" (2):" then one language a line.
        output = self._run(["--list-langs"], None).decode(errors="replace").splitlines()
        listed = [line.strip() for line in output[1:] if line.strip()]
        missing = [lang for lang in config.languages.split("+") if lang not in listed]
        if missing:
            raise TextEngineUnavailable(
                f"tesseract has no language data for {', '.join(missing)} (it has "
                f"{', '.join(listed) or 'none'}): apt-get install "
                + " ".join(f"tesseract-ocr-{lang.lower()}" for lang in missing)
            )
        self.model_name = f"tesseract-{config.languages}"

    def _run(self, arguments: list[str], stdin: bytes | None) -> bytes:
        completed = subprocess.run(
            [self.command, *arguments],
            input=stdin,
            capture_output=True,
            timeout=self.config.timeout_s,
            # The environment as it is (TESSDATA_PREFIX: language data of one's own), with
            # tesseract's OpenMP threads limited as the workers' settings say.
            env={**os.environ, "OMP_THREAD_LIMIT": str(self.config.threads)},
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"tesseract exited {completed.returncode}: "
                f"{completed.stderr.decode(errors='replace').strip()[-500:]}"
            )
        return completed.stdout

    def warm_up(self) -> None:
        self.read(np.full((32, 32, 3), 255, dtype=np.uint8))

    def binarize(self, image: ImageBGR) -> tuple[npt.NDArray[np.uint8], int]:
        """The image as Tesseract reads it best (see TesseractConfig.upscale) and its scale."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = self.config.upscale if max(grey.shape) < self.config.upscale_below_px else 1
        if scale > 1:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        block = self.config.block_px * scale | 1  # odd, as OpenCV requires
        binary = cv2.adaptiveThreshold(
            grey,
            255,
            cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
            cv2.THRESH_BINARY,
            block,
            self.config.block_offset,
        )
        return np.asarray(binary, dtype=np.uint8), scale

    def read(self, image: ImageBGR) -> list[TextRegion]:
        if min(image.shape[:2]) < 2:
            return []
        binary, scale = self.binarize(image)
        ok, png = cv2.imencode(".png", binary)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        tsv = self._run(
            [
                "stdin",
                "stdout",
                "-l",
                self.config.languages,
                "--psm",
                str(self.config.page_segmentation_mode),
                "tsv",
            ],
            png.tobytes(),
        )
        return self.parse_tsv(tsv.decode(errors="replace"), scale=scale)

    def parse_tsv(self, tsv: str, *, scale: float = 1) -> list[TextRegion]:
        """Words (level 5) grouped by (block, paragraph, line); a line's score is its words'
        mean confidence / 100. Coordinates are divided by `scale`."""
        lines: dict[tuple[str, str, str], list[tuple[str, float, tuple[int, int, int, int]]]] = {}
        for row in tsv.splitlines()[1:]:
            fields = row.split("\t")
            if len(fields) < 12 or fields[0] != "5":
                continue
            text, confidence = fields[11].strip(), float(fields[10])
            if not text or confidence < 0:
                continue
            left, top, w, h = (int(v) for v in fields[6:10])
            lines.setdefault((fields[2], fields[3], fields[4]), []).append(
                (text, confidence / 100, (left, top, left + w, top + h))
            )
        regions = []
        for words in lines.values():
            score = sum(s for _, s, _ in words) / len(words)
            if score < self.config.score_threshold:
                continue
            x1 = min(b[0] for _, _, b in words) / scale
            y1 = min(b[1] for _, _, b in words) / scale
            x2 = max(b[2] for _, _, b in words) / scale
            y2 = max(b[3] for _, _, b in words) / scale
            regions.append(
                TextRegion(
                    text=" ".join(t for t, _, _ in words),
                    score=round(score, 4),
                    polygon=((x1, y1), (x2, y1), (x2, y2), (x1, y2)),
                )
            )
        return regions


# --- detectors -----------------------------------------------------------------------------------


def text_detections(
    regions: Sequence[TextRegion], *, offset: Point = (0.0, 0.0)
) -> list[Detection]:
    """Regions in reading order as `text` detections: attributes text, line (0-based)."""
    dx, dy = offset
    detections = []
    for line_number, line in enumerate(reading_order(regions)):
        for region in line:
            polygon = tuple((x + dx, y + dy) for x, y in region.polygon)
            detections.append(
                Detection(
                    kind="text",
                    label="text",
                    score=region.score,
                    box=polygon_box(polygon),
                    landmarks=polygon,
                    attributes={"text": region.text, "line": line_number},
                )
            )
    return detections


class TextDetector:
    task = "text"

    def __init__(self, engine: TextEngine) -> None:
        self.engine = engine
        self.model_name = engine.model_name

    def warm_up(self) -> None:
        self.engine.warm_up()

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        return [text_detections(self.engine.read(image)) for image in images]


VEHICLE_CLASSES = ("car", "truck", "bus", "motorcycle")


class PlateDetectorConfig(BaseModel):
    type: Literal["vehicle_text"] = "vehicle_text"
    vehicle_classes: list[str] = list(VEHICLE_CLASSES)
    # A string read in a vehicle box is a plate when, upper-cased with everything but letters and
    # digits removed, it matches this (full match). Default: 4-10 letters/digits, one digit at
    # least (makes, models and slogans rarely have one). Letters of any script: 京A12345, 12가3456
    # and MÜAB123 are plates too.
    pattern: str = r"(?=.*\d)[^\W_]{4,10}"
    # No vehicle of vehicle_classes found: read the whole image (a plate camera's close-up shows
    # the plate, not the car the object model needs to see), the plate's `vehicle` null.
    whole_image_without_vehicle: bool = True
    # Each side of the vehicle box is widened by this fraction of its size before reading:
    # a plate on the bumper's edge is often cut by a tight box.
    margin: float = Field(default=0.05, ge=0, le=0.5)

    @field_validator("vehicle_classes")
    @classmethod
    def _known_classes(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in COCO_CLASSES]
        if unknown:
            raise ValueError(f"unknown COCO class(es) {unknown}")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"plate pattern {value!r} is not a regular expression: {exc}") from exc
        return value


def normalize_plate(text: str) -> str:
    """Upper-case letters and digits, of any script; spaces, dots, dashes and the rest go."""
    return "".join(c for c in text.upper() if c.isalnum())


class PlateDetector:
    """`plates`: vehicles found by `vehicles`, text read by `engine` inside each vehicle box.

    Each plate is a detection of kind `plate`: box and landmarks are the plate's (image pixels),
    attributes `plate` (normalised), `text` (as read) and `vehicle` (label, score, box). A plate
    read in two overlapping vehicle boxes (a car also detected as a truck) is reported once.
    """

    task = "plates"

    def __init__(
        self, config: PlateDetectorConfig, *, vehicles: ObjectDetector, engine: TextEngine
    ) -> None:
        self.config = config
        self.vehicles = vehicles
        self.engine = engine
        self.pattern = re.compile(config.pattern)
        self.model_name = f"{vehicles.model_name}+{engine.model_name}"

    def warm_up(self) -> None:
        self.vehicles.warm_up()
        self.engine.warm_up()

    def detect(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        found = self.vehicles.detect(images)
        return [
            self._plates(image, vehicles) for image, vehicles in zip(images, found, strict=True)
        ]

    def _plates(self, image: ImageBGR, vehicles: Sequence[Detection]) -> list[Detection]:
        height, width = image.shape[:2]
        best: dict[str, Detection] = {}
        classes = set(self.config.vehicle_classes)
        wanted = [v for v in vehicles if v.label in classes]
        regions: list[tuple[int, int, int, int, Detection | None]] = []
        for found in wanted:
            x1, y1, x2, y2 = found.box
            pad_x, pad_y = (x2 - x1) * self.config.margin, (y2 - y1) * self.config.margin
            left, top = max(0, math.floor(x1 - pad_x)), max(0, math.floor(y1 - pad_y))
            right, bottom = min(width, math.ceil(x2 + pad_x)), min(height, math.ceil(y2 + pad_y))
            regions.append((left, top, right, bottom, found))
        if not wanted and self.config.whole_image_without_vehicle:
            regions.append((0, 0, width, height, None))
        for left, top, right, bottom, vehicle in regions:
            if right - left < 8 or bottom - top < 8:
                continue
            crop = np.ascontiguousarray(image[top:bottom, left:right])
            for region, plate in self._plate_strings(self.engine.read(crop)):
                if plate in best and best[plate].score >= region.score:
                    continue
                polygon = tuple((x + left, y + top) for x, y in region.polygon)
                best[plate] = Detection(
                    kind="plate",
                    label="plate",
                    score=region.score,
                    box=polygon_box(polygon),
                    landmarks=polygon,
                    attributes={
                        "plate": plate,
                        "text": region.text,
                        "vehicle": None
                        if vehicle is None
                        else {
                            "label": vehicle.label,
                            "score": vehicle.score,
                            "box": [round(v, 2) for v in vehicle.box],
                        },
                    },
                )
        return sorted(best.values(), key=lambda d: (d.box[0], d.box[1]))

    def _plate_strings(self, regions: Sequence[TextRegion]) -> list[tuple[TextRegion, str]]:
        """The regions (and pairs of regions) that read as a plate, with the plate. A plate of
        two lines (AB12 over CDE) is read as two regions: a line over another of the same
        height, overlapping it across, is tried as one plate first, and its lines are not
        plates of their own where it is."""
        found: list[tuple[TextRegion, str]] = []
        used: set[int] = set()
        for i, upper in enumerate(regions):
            for j, lower in enumerate(regions):
                if i == j or i in used or j in used or not _stacked(upper, lower):
                    continue
                joined = _joined(upper, lower)
                plate = normalize_plate(joined.text)
                if self.pattern.fullmatch(plate):
                    found.append((joined, plate))
                    used |= {i, j}
        for i, region in enumerate(regions):
            plate = normalize_plate(region.text)
            if i not in used and self.pattern.fullmatch(plate):
                found.append((region, plate))
        return found


def _stacked(upper: TextRegion, lower: TextRegion) -> bool:
    """`lower` is the next line of the same plate: as tall (within a third), just below
    (a gap under 60% of a line), and overlapping `upper` across by half the narrower."""
    ux1, uy1, ux2, uy2 = polygon_box(upper.polygon)
    lx1, ly1, lx2, ly2 = polygon_box(lower.polygon)
    upper_h, lower_h = uy2 - uy1, ly2 - ly1
    if upper_h <= 0 or lower_h <= 0 or not 0.75 <= upper_h / lower_h <= 1.33:
        return False
    gap = ly1 - uy2
    if not -0.3 * lower_h <= gap <= 0.6 * max(upper_h, lower_h):
        return False
    overlap = min(ux2, lx2) - max(ux1, lx1)
    return overlap >= 0.5 * min(ux2 - ux1, lx2 - lx1)


def _joined(upper: TextRegion, lower: TextRegion) -> TextRegion:
    """The two lines as one region: their text, the lower score, the box around both."""
    ux1, y1, ux2, _ = polygon_box(upper.polygon)
    lx1, _, lx2, y2 = polygon_box(lower.polygon)
    x1, x2 = min(ux1, lx1), max(ux2, lx2)
    return TextRegion(
        text=f"{upper.text} {lower.text}",
        score=min(upper.score, lower.score),
        polygon=((x1, y1), (x2, y1), (x2, y2), (x1, y2)),
    )
