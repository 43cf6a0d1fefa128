"""Is a detected face good enough to enroll? A pure function of the detection's numbers.

Landmarks are SCRFD's five points in image pixels: left eye, right eye, nose, left and right
mouth corners. Sharpness is the worker's Laplacian variance of the aligned crop.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QualityThresholds:
    min_face_px: float
    min_sharpness: float
    max_yaw_ratio: float
    max_roll_deg: float


@dataclass(frozen=True)
class FaceQuality:
    face_px: float  # shorter side of the box
    sharpness: float
    yaw_ratio: float  # |nose x − eye midpoint x| / eye distance, 0 when frontal
    roll_deg: float  # eye line against horizontal, 0..180 (180: upside down)
    problems: tuple[str, ...]  # empty: usable

    @property
    def usable(self) -> bool:
        return not self.problems


def assess_face(
    box: Sequence[float],
    landmarks: Sequence[Sequence[float]],
    sharpness: float,
    thresholds: QualityThresholds,
) -> FaceQuality:
    x1, y1, x2, y2 = box
    face_px = min(x2 - x1, y2 - y1)
    (lx, ly), (rx, ry), (nx, _ny) = landmarks[0], landmarks[1], landmarks[2]
    eye_distance = math.hypot(rx - lx, ry - ly)
    if eye_distance < 1e-6:  # both eyes on one point: a profile view
        yaw_ratio = math.inf
    else:
        yaw_ratio = abs(nx - (lx + rx) / 2) / eye_distance
    roll_deg = abs(math.degrees(math.atan2(ry - ly, rx - lx)))
    problems = []
    if face_px < thresholds.min_face_px:
        problems.append(
            f"face too small ({face_px:.0f} px; at least {thresholds.min_face_px:.0f} px needed)"
        )
    if sharpness < thresholds.min_sharpness:
        problems.append(
            f"face too blurry (sharpness {sharpness:.0f}; at least "
            f"{thresholds.min_sharpness:.0f} needed)"
        )
    if yaw_ratio > thresholds.max_yaw_ratio:
        problems.append(
            f"extreme pose: head turned sideways (yaw ratio {yaw_ratio:.2f} > "
            f"{thresholds.max_yaw_ratio:.2f})"
        )
    if roll_deg > thresholds.max_roll_deg:
        problems.append(
            f"extreme pose: head tilted {roll_deg:.0f}° (at most {thresholds.max_roll_deg:.0f}°)"
        )
    return FaceQuality(
        face_px=round(face_px, 1),
        sharpness=sharpness,
        yaw_ratio=round(yaw_ratio, 3) if math.isfinite(yaw_ratio) else 99.0,
        roll_deg=round(roll_deg, 1),
        problems=tuple(problems),
    )
