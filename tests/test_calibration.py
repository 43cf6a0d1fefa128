"""Calibrated similarity (app/calibration.py) for the test embedder, on the shared faces."""

import math

import pytest

from app.calibration import SimilarityCalibration, fit_calibration
from app.embedders import EMBEDDER_SPECS
from tests.labelled_faces import calibration_pairs, labelled_faces, scene_strangers
from workers.detectors.face import FaceDetector


@pytest.fixture(scope="module")
def faces(detectors) -> FaceDetector:  # type: ignore[no-untyped-def]
    detector = detectors["faces"]
    assert isinstance(detector, FaceDetector)
    return detector


def test_the_spec_holds_the_platt_fit_of_the_shared_faces(faces):
    pairs = calibration_pairs(faces)
    assert (len(pairs.same), len(pairs.different)) == (12, 178)
    fitted = fit_calibration(pairs.same, pairs.different)
    stored = faces.embedder.spec.calibration
    assert stored.slope == pytest.approx(fitted.slope, abs=1e-3)
    assert stored.intercept == pytest.approx(fitted.intercept, abs=1e-3)


def test_enrolled_people_score_above_060_and_strangers_below_040(faces):
    """Every test face against every enrolled (train) photo: the same person > 0.60, anyone
    else < 0.40 — the child of obama_and_biden.jpg and t1.jpg's six strangers included."""
    calibration = faces.embedder.spec.calibration
    everyone = labelled_faces(faces) + scene_strangers(faces)
    enrolled = [f for f in everyone if f.split == "train"]
    queries = [f for f in everyone if f.split == "test"]
    assert len(queries) == 11
    for query in queries:
        scores = {
            train.person: calibration.similarity(float(train.embedding @ query.embedding))
            for train in enrolled
        }
        own = scores.pop(query.person, None)
        if own is not None:
            assert own > 0.60, (query.person, own)
        assert max(scores.values()) < 0.40, (query.person, scores)


def test_the_former_raw_threshold_maps_to_the_new_default():
    """0.62 raw cosine (the stand-in's old match threshold) ≈ 0.60 calibrated (the new one)."""
    [stand_in] = [s for s in EMBEDDER_SPECS if s.model == "mobilefacenet"]
    assert stand_in.calibration.similarity(0.62) == pytest.approx(0.60, abs=0.01)
    assert stand_in.calibration.cosine_at(0.60) == pytest.approx(0.619, abs=0.001)


def test_calibration_is_increasing_and_inverts():
    calibration = SimilarityCalibration(slope=10.0, intercept=-3.0)
    cosines = [-1.0, -0.2, 0.0, 0.25, 0.3, 0.5, 0.9, 1.0]
    values = [calibration.similarity(c) for c in cosines]
    assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    assert calibration.similarity(0.3) == 0.5
    for target in (0.1, 0.4, 0.6, 0.95):
        assert calibration.similarity(calibration.cosine_at(target)) == pytest.approx(target)
    assert SimilarityCalibration(slope=1e3, intercept=0).similarity(-1) == 0.0  # no overflow
    with pytest.raises(ValueError):
        SimilarityCalibration(slope=-1.0, intercept=0.0)


def test_platt_fit_is_finite_on_separable_pairs_and_puts_the_boundary_between():
    fitted = fit_calibration([0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4])
    assert math.isfinite(fitted.slope) and fitted.slope > 0
    assert 0.4 < fitted.cosine_at(0.5) < 0.7
    with pytest.raises(ValueError):
        fit_calibration([], [0.1])
