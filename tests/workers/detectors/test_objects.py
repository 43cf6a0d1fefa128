"""Objects with the real YOLOX-Nano file on the shared photos, and the decode/NMS maths alone."""

import numpy as np
import pytest
from pydantic import ValidationError

from app.pixels import decode_image
from tests.conftest import SHARED_IMAGES, shared_image
from workers.detectors.objects import (
    COCO_CLASSES,
    ObjectDetector,
    ObjectDetectorConfig,
    decode_yolox,
    grid_and_strides,
    letterbox,
    nms,
)
from workers.detectors.onnx import RuntimeOptions

YOLOX_NANO = SHARED_IMAGES.parent / "models" / "yolox_nano.onnx"


def pixels(relative: str) -> np.ndarray:
    return decode_image(shared_image(relative), max_pixels=50_000_000, target_side_px=2048).pixels


def labels(found) -> list[str]:
    return [d.label for d in found]


def test_t1_finds_at_least_five_persons(detectors):
    [found] = detectors["objects"].detect([pixels("scenes/t1.jpg")])
    assert labels(found).count("person") >= 5
    height, width = pixels("scenes/t1.jpg").shape[:2]
    for detection in found:
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert detection.kind == "object" and detection.score >= 0.3


def test_dog_finds_a_dog_a_bicycle_and_a_car_or_truck(detectors):
    [found] = detectors["objects"].detect([pixels("scenes/dog.jpg")])
    names = set(labels(found))
    assert {"dog", "bicycle"} <= names
    assert names & {"car", "truck"}


def test_dog_box_is_where_the_dog_is(detectors):
    # The dog sits in the lower left of dog.jpg (768 × 576), below the bicycle.
    [found] = detectors["objects"].detect([pixels("scenes/dog.jpg")])
    [dog] = [d for d in found if d.label == "dog"]
    _, y1, x2, _ = dog.box
    assert x2 < 768 / 2 + 50 and y1 > 576 / 4


def test_class_filter_and_score_threshold_settings(detectors):
    image = pixels("scenes/t1.jpg")
    persons_only = ObjectDetector(
        ObjectDetectorConfig(classes=["person"]), YOLOX_NANO, options=RuntimeOptions()
    )
    [found] = persons_only.detect([image])
    assert set(labels(found)) == {"person"}
    strict = ObjectDetector(
        ObjectDetectorConfig(score_threshold=0.8), YOLOX_NANO, options=RuntimeOptions()
    )
    [few] = strict.detect([image])
    [many] = detectors["objects"].detect([image])
    assert 0 < len(few) < len(many)
    assert all(d.score >= 0.8 for d in few)


def test_unknown_class_names_are_refused():
    with pytest.raises(ValidationError, match="unknown COCO class"):
        ObjectDetectorConfig(classes=["person", "unicorn"])


def test_a_batch_gives_the_same_objects_as_one_image_at_a_time(detectors):
    images = [pixels("scenes/t1.jpg"), pixels("scenes/dog.jpg")]
    assert detectors["objects"].detect(images) == [
        detectors["objects"].detect([image])[0] for image in images
    ]


def test_letterbox_keeps_aspect_and_pads_right_and_bottom():
    image = np.zeros((100, 200, 3), np.uint8)
    padded, ratio = letterbox(image, 416, pad_value=114)
    assert padded.shape == (416, 416, 3) and ratio == pytest.approx(416 / 200)
    assert (padded[:208] == 0).all() and (padded[208:] == 114).all()


def test_decode_maps_an_anchor_back_through_grid_stride_and_letterbox():
    config = ObjectDetectorConfig(input_size_px=416)
    grid, stride = grid_and_strides(416)
    output = np.zeros((len(grid), 85), np.float32)
    # Stride-16 anchor at cell (x=5, y=3): first row after the 52 × 52 stride-8 cells.
    row = 52 * 52 + 3 * 26 + 5
    assert tuple(grid[row]) == (5, 3) and stride[row, 0] == 16
    output[row, :4] = [0.5, 0.25, np.log(4), np.log(2)]  # centre (5.5, 3.25) cells; 4 × 2 cells
    output[row, 4] = 0.9
    output[row, 5 + COCO_CLASSES.index("dog")] = 0.8
    [dog] = decode_yolox(output, ratio=0.5, config=config, image_size=(1000, 1000))
    cx, cy, w, h = 5.5 * 16 / 0.5, 3.25 * 16 / 0.5, 4 * 16 / 0.5, 2 * 16 / 0.5
    assert dog.label == "dog" and dog.score == pytest.approx(0.72)
    np.testing.assert_allclose(dog.box, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))


def test_nms_suppresses_overlaps_of_one_class_but_not_across_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.45) == [0, 2]
    assert nms(boxes, scores, 0.9) == [0, 1, 2]
    config = ObjectDetectorConfig(input_size_px=416, score_threshold=0.1)
    grid, _ = grid_and_strides(416)
    output = np.zeros((len(grid), 85), np.float32)
    for row, class_name in ((10, "car"), (11, "truck"), (12, "car")):
        output[row, :4] = [0, 0, np.log(8), np.log(8)]  # neighbouring cells, heavy overlap
        output[row, 4] = 0.9
        output[row, 5 + COCO_CLASSES.index(class_name)] = 0.9 if row != 12 else 0.5
    found = decode_yolox(output, ratio=1.0, config=config, image_size=(416, 416))
    assert sorted(d.label for d in found) == ["car", "truck"]
