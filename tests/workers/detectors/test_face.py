"""Faces with the real SCRFD-500M and MobileFaceNet files; ArcFace and genderage through tiny
graphs of their exact signatures, checked against insightface's own reference code."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.attribute import Attribute
from insightface.utils import face_align

from app.embedders import ARCFACE_MBF, MOBILEFACENET_SPEC
from app.pixels import decode_image
from tests.conftest import SHARED_IMAGES, shared_image
from tests.labelled_faces import labelled_faces, pair_scores
from tests.workers.detectors.tiny_models import arcface_like, genderage_like
from workers.detectors.face import Embedder, FaceDetector, FaceDetectorConfig, GenderAge
from workers.detectors.onnx import OnnxModel, RuntimeOptions
from workers.models import GenderAgeSpec, ModelError

OPTIONS = RuntimeOptions(intra_op_threads=1)


def pixels(relative: str) -> np.ndarray:
    return decode_image(shared_image(relative), max_pixels=50_000_000, target_side_px=2048).pixels


@pytest.fixture(scope="session")
def faces(detectors) -> FaceDetector:
    return detectors["faces"]


@pytest.fixture(scope="session")
def arcface_graph(tmp_path_factory) -> Path:
    return arcface_like(tmp_path_factory.mktemp("tiny") / "w600k_mbf.onnx")


@pytest.fixture(scope="session")
def genderage_graph(tmp_path_factory) -> Path:
    return genderage_like(tmp_path_factory.mktemp("tiny") / "genderage.onnx")


def test_t1_has_six_faces_each_with_five_landmarks_inside_its_box(faces):
    [found] = faces.detect([pixels("scenes/t1.jpg")])
    assert len(found) == 6
    for face in found:
        x1, y1, x2, y2 = face.box
        assert face.kind == "face" and face.score >= 0.5
        assert len(face.landmarks) == 5
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_every_face_gets_a_unit_embedding_named_after_its_model(faces):
    [found] = faces.detect([pixels("scenes/t1.jpg")])
    for face in found:
        assert face.embedding is not None
        assert face.embedding.model == "mobilefacenet" == face.attributes["embedding_model"]
        assert face.embedding.vector.shape == (192,)
        assert np.linalg.norm(face.embedding.vector) == pytest.approx(1.0, abs=1e-5)
    # Six different people: no two embeddings alike.
    vectors = np.stack([f.embedding.vector for f in found])
    similarity = vectors @ vectors.T
    assert similarity[~np.eye(6, dtype=bool)].max() < 0.6


def test_a_face_crop_is_embedded_whole_as_the_face_it_shows(faces, detectors):
    """Task face_crop (CompreFace's detect_faces=false): no detector runs; the whole image is
    the face, its box the image, score 1.0. A loose crop around a detected face embeds near
    that face and far from the other people of the set."""
    image = pixels("faces/test/obama1.jpg")
    [[face]] = faces.detect([image])
    x1, y1, x2, y2 = (int(v) for v in face.box)
    margin = (x2 - x1) // 8
    crop = np.ascontiguousarray(
        image[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin]
    )
    [[cropped]] = detectors["face_crop"].detect([crop])
    height, width = crop.shape[:2]
    assert (cropped.kind, cropped.score, cropped.box) == ("face", 1.0, (0.0, 0.0, width, height))
    assert cropped.landmarks is None and cropped.attributes["cropped"] is True
    assert cropped.embedding is not None and cropped.embedding.model == face.embedding.model
    assert np.linalg.norm(cropped.embedding.vector) == pytest.approx(1.0, abs=1e-5)
    same = float(cropped.embedding.vector @ face.embedding.vector)
    others = [
        float(cropped.embedding.vector @ other.embedding.vector)
        for other in faces.detect([pixels("scenes/t1.jpg")])[0]
    ]
    assert same > max(others), (same, others)
    assert cropped.crop_jpeg is not None  # its thumbnail, as a detected face's


def test_dog_has_no_faces(faces):
    assert faces.detect([pixels("scenes/dog.jpg")]) == [[]]


def test_a_batch_of_images_gives_the_same_faces_as_one_image_at_a_time(faces):
    images = [pixels("scenes/t1.jpg"), pixels("scenes/dog.jpg"), pixels("faces/test/obama1.jpg")]
    together = faces.detect(images)
    alone = [faces.detect([image])[0] for image in images]
    assert [len(f) for f in together] == [6, 0, 1]
    for batch_faces, single_faces in zip(together, alone, strict=True):
        for a, b in zip(batch_faces, single_faces, strict=True):
            assert a.box == b.box
            np.testing.assert_allclose(a.embedding.vector, b.embedding.vector, atol=1e-5)


def test_every_same_person_pair_scores_above_every_different_person_pair(faces):
    scores = pair_scores(labelled_faces(faces))
    assert len(scores.same) == 7 and len(scores.different) == 38
    print(
        f"\nsame-person cosine {min(scores.same):.3f}..{max(scores.same):.3f}; different ≤ "
        f"{max(scores.different):.3f}; margin {scores.margin:.3f}"
    )
    assert scores.margin > 0.2


def test_arcface_configuration_matches_insightface_arcface_on_the_same_graph(arcface_graph):
    """Our Embedder with the ArcFace spec == insightface's ArcFaceONNX preprocessing."""
    embedder = Embedder(ARCFACE_MBF, OnnxModel(arcface_graph, OPTIONS))
    reference = ArcFaceONNX(model_file=str(arcface_graph))
    image = pixels("scenes/t1.jpg")
    detector = FaceDetector(
        FaceDetectorConfig(),
        Path(SHARED_IMAGES.parent / "models" / "det_500m.onnx"),
        embedder,
        options=OPTIONS,
    )
    [found] = detector.detect([image])
    assert len(found) == 6
    crops = [face_align.norm_crop(image, np.array(f.landmarks, np.float32)) for f in found]
    expected = reference.get_feat(crops)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    for face, want in zip(found, expected, strict=True):
        assert face.embedding.model == "w600k_mbf"
        assert face.embedding.vector.shape == (512,)
        np.testing.assert_allclose(face.embedding.vector, want, atol=1e-4)


def test_the_stand_in_spec_would_give_different_numbers_on_the_arcface_graph(arcface_graph):
    """The spec matters: the same crop under the wrong mean/scale/order gives another vector."""
    crop = face_align.norm_crop(
        pixels("scenes/t1.jpg"),
        np.array([[600, 330], [650, 330], [625, 360], [605, 385], [645, 385]], np.float32),
    )
    right = Embedder(ARCFACE_MBF, OnnxModel(arcface_graph, OPTIONS)).embed([crop])[0]
    wrong_spec = dataclasses.replace(ARCFACE_MBF, channel_order="BGR", std=128.0)
    wrong = Embedder(wrong_spec, OnnxModel(arcface_graph, OPTIONS)).embed([crop])[0]
    assert float(right @ wrong) < 0.999


def test_embedder_refuses_a_spec_that_does_not_fit_the_graph(arcface_graph):
    with pytest.raises(ModelError, match="NHWC"):
        Embedder(MOBILEFACENET_SPEC, OnnxModel(arcface_graph, OPTIONS))
    with pytest.raises(ModelError, match="512-d"):
        Embedder(
            dataclasses.replace(ARCFACE_MBF, model="x", dim=128),
            OnnxModel(arcface_graph, OPTIONS),
        )


def test_one_embedder_call_per_batch_and_batched_equals_single(faces):
    image = pixels("scenes/t1.jpg")
    crops = [faces.embedder.align(image, landmarks) for _, _, landmarks in faces.find_faces(image)]
    together = faces.embedder.embed(crops)
    alone = np.concatenate([faces.embedder.embed([c]) for c in crops])
    np.testing.assert_allclose(together, alone, atol=1e-5)


class _Face(dict):
    """What insightface's Attribute.get expects: a dict with a bbox attribute."""

    def __init__(self, bbox):
        super().__init__()
        self.bbox = np.asarray(bbox, np.float32)


def test_genderage_matches_insightface_attribute_on_the_same_graph(genderage_graph):
    image = pixels("scenes/t1.jpg")
    detector = FaceDetector(
        FaceDetectorConfig(),
        Path(SHARED_IMAGES.parent / "models" / "det_500m.onnx"),
        Embedder(
            MOBILEFACENET_SPEC,
            OnnxModel(Path(SHARED_IMAGES.parent / "models" / "mobilefacenet.onnx"), OPTIONS),
        ),
        genderage=GenderAge(GenderAgeSpec(), OnnxModel(genderage_graph, OPTIONS)),
        options=OPTIONS,
    )
    reference = Attribute(model_file=str(genderage_graph))
    assert (reference.input_mean, reference.input_std) == (0.0, 1.0)  # as for the real file
    [found] = detector.detect([image])
    assert len(found) == 6
    for face in found:
        gender, age = reference.get(image, _Face(face.box))
        assert face.attributes["gender"] == ("male" if gender == 1 else "female")
        assert face.attributes["age"] == age
    # The tiny graph's outputs vary with the face: the check above compared real numbers.
    assert len({face.attributes["age"] for face in found}) > 1
