"""The explicit list of detectors, one per task. No discovery: add a detector here."""

from app.settings import Settings
from workers.detectors.base import Detector
from workers.detectors.face import FaceDetector, FaceDetectorConfig
from workers.models import resolve_model


def build_detectors(settings: Settings) -> dict[str, Detector]:
    """Load every model once, at worker start. Raises ModelNotFound for a missing file."""
    face_config = FaceDetectorConfig(
        model=settings.faces.detector_model,
        input_size=settings.faces.input_size,
        score_threshold=settings.faces.score_threshold,
    )
    threads = settings.worker.threads
    return {
        "faces": FaceDetector(
            face_config, resolve_model(settings, face_config.model), threads=threads
        ),
    }
