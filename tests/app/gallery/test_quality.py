"""Enrollment quality: size, blur and pose checks, a pure function of the detection's numbers."""

from app.gallery.quality import QualityThresholds, assess_face

THRESHOLDS = QualityThresholds(
    min_face_px=40, min_sharpness=25, max_yaw_ratio=0.45, max_roll_deg=40
)
# A frontal face: eyes level, nose between them, mouth corners below.
FRONTAL = [[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]]


def test_a_large_sharp_frontal_face_is_usable():
    quality = assess_face([20, 20, 100, 120], FRONTAL, 150.0, THRESHOLDS)
    assert quality.usable and quality.yaw_ratio == 0 and quality.roll_deg == 0


def test_small_blurry_turned_and_tilted_faces_are_refused_with_reasons():
    small = assess_face([0, 0, 30, 35], FRONTAL, 150.0, THRESHOLDS)
    assert small.problems == ("face too small (30 px; at least 40 px needed)",)
    blurry = assess_face([20, 20, 100, 120], FRONTAL, 8.0, THRESHOLDS)
    assert blurry.problems == ("face too blurry (sharpness 8; at least 25 needed)",)
    turned = [[40, 50], [80, 50], [85, 70], [45, 90], [75, 90]]  # nose beyond the right eye
    assert (
        "turned sideways" in assess_face([20, 20, 100, 120], turned, 150.0, THRESHOLDS).problems[0]
    )
    tilted = [[40, 50], [70, 100], [60, 70], [45, 90], [75, 90]]  # eye line at 59°
    assert "tilted 59°" in assess_face([20, 20, 100, 120], tilted, 150.0, THRESHOLDS).problems[0]


def test_an_upside_down_face_is_refused_as_tilted():
    flipped = [[80, 50], [40, 50], [60, 30], [75, 10], [45, 10]]  # eyes swapped: 180°
    quality = assess_face([20, 20, 100, 120], flipped, 150.0, THRESHOLDS)
    assert quality.roll_deg == 180 and not quality.usable
