"""The photos of ../shared/images/faces labelled by person, and their train-vs-test pairs.

Shared by the embedder test (tests/workers/detectors/test_face.py: every same-person pair
scores above every different-person pair) and bench/models.py, which reports the margin.
The similarity calibration (app/calibration.py) is fitted on every pair of these faces and of
the six strangers of scenes/t1.jpg (calibration_pairs; tests/test_calibration.py,
bench/calibration.py).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.pixels import decode_image
from tests.images import SHARED_IMAGES
from workers.detectors.base import Detection
from workers.detectors.face import FaceDetector

FACES = SHARED_IMAGES / "faces"
SCENES = FACES.parent / "scenes"


@dataclass(frozen=True)
class LabelledFace:
    split: str  # "train" (enrolment photos) or "test"
    person: str
    embedding: np.ndarray


@dataclass(frozen=True)
class PairScores:
    """Cosine similarities of every (train, test) pair of faces."""

    same: list[float]  # the same person
    different: list[float]  # two different people

    @property
    def margin(self) -> float:
        """Lowest same-person score minus highest different-person score (> 0: separable)."""
        return min(self.same) - max(self.different)


def _faces_in(faces: FaceDetector, relative: str, folder: Path = FACES) -> list[Detection]:
    image = decode_image(
        (folder / relative).read_bytes(), max_pixels=50_000_000, target_side_px=2048
    )
    [found] = faces.detect([image.pixels])
    return found


def labelled_faces(faces: FaceDetector) -> list[LabelledFace]:
    """Every face in ../shared/images/faces with its person, embedded by `faces`.

    Train photos hold one face each (the folder names the person). In obama_and_biden.jpg the
    two large faces are Biden (left) and Obama (right); the small third face is a child who is
    not enrolled: a different person from everyone.
    """
    labelled = []
    for path in sorted((FACES / "train").glob("*/*")):
        found = _faces_in(faces, str(path.relative_to(FACES)))
        assert len(found) == 1, path
        labelled.append(LabelledFace("train", path.parent.name, found[0].embedding.vector))
    for name, person in (("obama1.jpg", "obama"), ("alex_lacamoire1.jpg", "alex_lacamoire")):
        found = _faces_in(faces, f"test/{name}")
        assert len(found) == 1, name
        labelled.append(LabelledFace("test", person, found[0].embedding.vector))
    found = _faces_in(faces, "test/obama_and_biden.jpg")
    assert len(found) == 3
    by_size = sorted(found, key=lambda f: f.box[2] - f.box[0], reverse=True)
    biden, obama = sorted(by_size[:2], key=lambda f: f.box[0])
    labelled += [
        LabelledFace("test", "biden", biden.embedding.vector),
        LabelledFace("test", "obama", obama.embedding.vector),
        LabelledFace("test", "not-enrolled-child", by_size[2].embedding.vector),
    ]
    return labelled


def pair_scores(labelled: list[LabelledFace]) -> PairScores:
    same, different = [], []
    for train in (f for f in labelled if f.split == "train"):
        for test in (f for f in labelled if f.split == "test"):
            score = float(train.embedding @ test.embedding)
            (same if train.person == test.person else different).append(score)
    return PairScores(same, different)


def scene_strangers(faces: FaceDetector) -> list[LabelledFace]:
    """The six people of scenes/t1.jpg, each a stranger to everyone else (test split)."""
    found = _faces_in(faces, "t1.jpg", SCENES)
    assert len(found) == 6
    return [
        LabelledFace("test", f"t1-stranger-{index}", face.embedding.vector)
        for index, face in enumerate(sorted(found, key=lambda f: f.box[0]))
    ]


def calibration_pairs(faces: FaceDetector) -> PairScores:
    """Cosine similarities of EVERY pair of labelled faces and scene strangers (train and test
    alike): with the MobileFaceNet stand-in, 12 same-person pairs and 178 different ones."""
    labelled = labelled_faces(faces) + scene_strangers(faces)
    same, different = [], []
    for index, first in enumerate(labelled):
        for second in labelled[index + 1 :]:
            score = float(first.embedding @ second.embedding)
            (same if first.person == second.person else different).append(score)
    return PairScores(same, different)
