"""Fit the similarity calibration of the configured face pack's embedder on the shared faces.

    python -m bench.calibration            # LOOKOUT_MODELS_DIR / LOOKOUT_MODELS__FACE_PACK

Prints the Platt fit (app/calibration.py) on every pair of ../shared/images faces and t1.jpg's
strangers (tests/labelled_faces.calibration_pairs) next to the coefficients in the embedder's
spec, and what each gives the pairs. Paste the fitted slope and intercept into the spec
(workers/models.py) when they differ. Seconds on a CPU: one detector pass over 10 photos.
"""

from app.calibration import SimilarityCalibration, fit_calibration
from app.settings import get_settings
from tests.labelled_faces import calibration_pairs
from workers.detectors.face import FaceDetector
from workers.detectors.registry import build_detectors


def describe(
    name: str, calibration: SimilarityCalibration, same: list[float], different: list[float]
) -> str:
    return (
        f"{name}: slope {calibration.slope:.4f}, intercept {calibration.intercept:.4f}; "
        f"0.40/0.50/0.60 at cosine {calibration.cosine_at(0.4):.3f}/"
        f"{calibration.cosine_at(0.5):.3f}/{calibration.cosine_at(0.6):.3f}; "
        f"same-person pairs {calibration.similarity(min(same)):.3f}-"
        f"{calibration.similarity(max(same)):.3f}, "
        f"different ≤ {calibration.similarity(max(different)):.3f}"
    )


def main() -> None:
    faces = build_detectors(get_settings())["faces"]
    assert isinstance(faces, FaceDetector)
    pairs = calibration_pairs(faces)
    spec = faces.embedder.spec
    print(
        f"{spec.model}: {len(pairs.same)} same-person pairs (cosine {min(pairs.same):.3f}-"
        f"{max(pairs.same):.3f}), {len(pairs.different)} different (≤ {max(pairs.different):.3f})"
    )
    print(
        describe(
            "fitted", fit_calibration(pairs.same, pairs.different), pairs.same, pairs.different
        )
    )
    print(describe("in spec", spec.calibration, pairs.same, pairs.different))


if __name__ == "__main__":
    main()
