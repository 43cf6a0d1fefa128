"""The explicit list of detectors, one per task. No discovery: add a detector here.

The task names are app/jobs/service.py's TASKS; a test keeps the two lists equal.
"""

import time
import warnings

import structlog

from app.settings import Settings
from workers.detectors.base import Detector
from workers.detectors.face import (
    Embedder,
    FaceCropDetector,
    FaceDetector,
    FaceDetectorConfig,
    GenderAge,
)
from workers.detectors.objects import ObjectDetector, ObjectDetectorConfig
from workers.detectors.onnx import OnnxModel, RuntimeOptions
from workers.detectors.qr import QrDetector, QrDetectorConfig
from workers.detectors.text import (
    PlateDetector,
    PlateDetectorConfig,
    PpOcrConfig,
    PpOcrEngine,
    TesseractConfig,
    TesseractEngine,
    TextDetector,
    TextEngine,
)
from workers.models import face_pack, object_pack, resolve_pack, text_pack

log = structlog.get_logger()


def build_face_detector(settings: Settings, options: RuntimeOptions) -> FaceDetector:
    pack = face_pack(settings)
    paths = resolve_pack(settings, pack)
    config = FaceDetectorConfig(
        input_size_px=settings.faces.input_size,
        score_threshold=settings.faces.score_threshold,
        nms_threshold=settings.faces.nms_threshold,
        max_embed_batch=settings.faces.max_embed_batch,
    )
    embedder = Embedder(pack.embedder_spec, OnnxModel(paths[pack.embedder.name], options))
    genderage = None
    if pack.genderage is not None and settings.faces.attributes:
        genderage = GenderAge(pack.genderage_spec, OnnxModel(paths[pack.genderage.name], options))
    return FaceDetector(
        config, paths[pack.detector.name], embedder, genderage=genderage, options=options
    )


def _vehicle_finder(
    settings: Settings, objects: ObjectDetector, options: RuntimeOptions
) -> ObjectDetector:
    """The objects task's detector, unless LOOKOUT_OBJECTS__CLASSES leaves vehicles out: then a
    detector of its own that keeps them (the filter silently turned plates off)."""
    kept = settings.objects.classes
    if kept is None or set(settings.plates.vehicle_classes) <= set(kept):
        return objects
    vehicles = settings.objects.model_copy(update={"classes": None})
    return build_object_detector(settings.model_copy(update={"objects": vehicles}), options)


def build_object_detector(settings: Settings, options: RuntimeOptions) -> ObjectDetector:
    pack = object_pack(settings)
    paths = resolve_pack(settings, pack)
    config = ObjectDetectorConfig(
        input_size_px=pack.input_size_px,
        pad_value=pack.pad_value,
        score_threshold=settings.objects.score_threshold,
        nms_threshold=settings.objects.nms_threshold,
        classes=settings.objects.classes,
    )
    return ObjectDetector(config, paths[pack.model.name], options=options)


def build_text_engine(settings: Settings, options: RuntimeOptions) -> TextEngine:
    """PP-OCR on the text pack, or the tesseract binary (TextEngineUnavailable without it)."""
    text = settings.text
    if text.engine == "tesseract":
        return TesseractEngine(
            TesseractConfig(
                command=text.tesseract_command,
                languages=text.tesseract_languages,
                page_segmentation_mode=text.tesseract_psm,
                score_threshold=text.score_threshold,
                threads=options.intra_op_threads,
            )
        )
    pack = text_pack(settings)
    paths = resolve_pack(settings, pack)
    recognizer = OnnxModel(paths[pack.recognizer.name], options)
    dictionary = recognizer.metadata.get("character")
    if dictionary is None:
        raise ValueError(f"{pack.recognizer.name} has no character dictionary in its metadata")
    config = PpOcrConfig(
        max_side_px=text.max_side_px,
        min_side_px=text.min_side_px,
        box_threshold=text.box_threshold,
        score_threshold=text.score_threshold,
        angle_classifier=pack.classifier is not None,
    )
    return PpOcrEngine(
        config,
        detector=OnnxModel(paths[pack.detector.name], options),
        recognizer=recognizer,
        classifier=(
            OnnxModel(paths[pack.classifier.name], options) if pack.classifier is not None else None
        ),
        characters=dictionary.splitlines(),
    )


def build_detectors(settings: Settings) -> dict[str, Detector]:
    """Load every model once, at worker start, and warm it up.

    Raises workers.models.ModelError (missing or wrong file) before any job is taken.
    """
    # insightface's norm_crop calls a scikit-image API deprecated in 0.26; the warning would
    # print again for each job (app.images resets the warning registry on every upload check).
    warnings.filterwarnings(
        "ignore", category=FutureWarning, module=r"insightface\.utils\.face_align"
    )
    options = RuntimeOptions.from_settings(settings)
    faces = build_face_detector(settings, options)
    objects = build_object_detector(settings, options)
    text_engine = build_text_engine(settings, options)
    detectors: dict[str, Detector] = {
        "faces": faces,
        "face_crop": FaceCropDetector(faces),
        "objects": objects,
        "qr": QrDetector(QrDetectorConfig()),
        "text": TextDetector(text_engine),
        # The same object model and OCR sessions as the two tasks above: no second copy (unless
        # the objects filter leaves vehicles out: _vehicle_finder).
        "plates": PlateDetector(
            PlateDetectorConfig(
                vehicle_classes=settings.plates.vehicle_classes,
                pattern=settings.plates.pattern,
                whole_image_without_vehicle=settings.plates.whole_image_without_vehicle,
            ),
            vehicles=_vehicle_finder(settings, objects, options),
            engine=text_engine,
        ),
    }
    if settings.models.warm_up:
        for task, detector in detectors.items():
            started = time.perf_counter()
            detector.warm_up()
            log.info("detector_warm", task=task, ms=round((time.perf_counter() - started) * 1000))
    return detectors
