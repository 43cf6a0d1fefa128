"""The processed image: captions, colours, label placement, and drawing stored detections on a
reduced decode."""

import cv2
import numpy as np

from app.drawing import caption, class_color, draw, processed_jpeg, render
from tests.conftest import shared_image
from workers.detectors.base import Detection

T1 = shared_image("scenes/t1.jpg")


def test_captions_show_identity_gender_age_class_and_payload():
    face = Detection(
        kind="face",
        label="face",
        score=0.91,
        box=(0, 0, 10, 10),
        attributes={"identity": "obama", "gender": "male", "age": 47},
    )
    assert caption(face) == "obama, M 47 0.91"
    assert caption(Detection(kind="face", label="face", score=0.5, box=(0, 0, 1, 1))) == (
        "face 0.50"
    )
    assert caption(Detection(kind="object", label="dog", score=0.8551, box=(0, 0, 1, 1))) == (
        "dog 0.86"
    )
    qr = Detection(
        kind="qr", label="qr", score=1, box=(0, 0, 1, 1), attributes={"payload": "x" * 80}
    )
    assert caption(qr).startswith("QR: xxx") and caption(qr).endswith("...")
    assert len(caption(qr)) <= 4 + 48


def test_render_draws_faces_objects_and_qr_outlines():
    canvas = np.zeros((200, 300, 3), np.uint8)
    detections = [
        Detection(
            kind="face",
            label="face",
            score=0.9,
            box=(20, 40, 80, 120),
            landmarks=((40, 70), (60, 70), (50, 85), (42, 100), (58, 100)),
        ),
        Detection(kind="object", label="cup", score=0.6, box=(120, 40, 180, 120)),
        Detection(
            kind="qr",
            label="qr",
            score=1.0,
            box=(200, 40, 280, 120),
            landmarks=((200, 40), (280, 40), (280, 120), (200, 120)),
            attributes={"payload": "hi"},
        ),
    ]
    drawn = cv2.imdecode(np.frombuffer(render(canvas, detections), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == canvas.shape
    for x, y in ((20, 80), (120, 80), (200, 80), (50, 85)):  # box edges, outline, a landmark
        assert drawn[y, x].max() > 60, (x, y)
    assert drawn[160:, :].max() < 40  # nothing drawn where nothing was found


def test_a_known_face_is_captioned_with_its_similarity_not_the_detection_score():
    face = Detection(
        kind="face",
        label="face",
        score=0.91,
        box=(0, 0, 10, 10),
        attributes={"identity": {"person_id": "p", "name": "obama", "similarity": 0.734}},
    )
    assert caption(face) == "obama 0.73"


def test_captions_on_a_real_image_stay_inside_the_frame_and_never_overlap():
    """t1.jpg with crowded detections: faces side by side with long names, one box at the
    right edge, one at the top, objects of several classes. Every caption is inside the frame,
    none covers another, and each object class has its own colour."""
    image = cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    identity = {"person_id": "p", "similarity": 0.81}
    detections = [
        Detection(
            kind="face",
            label="face",
            score=0.9,
            box=(x, 300, x + 60, 380),
            attributes={"identity": {**identity, "name": f"person number {i} with a long name"}},
        )
        for i, x in enumerate(range(100, 700, 70))
    ]
    detections += [
        Detection(kind="face", label="face", score=0.8, box=(width - 40, 500, width - 2, 560)),
        Detection(kind="face", label="face", score=0.7, box=(600, 0, 660, 50)),
        Detection(kind="object", label="person", score=0.9, box=(90, 280, 400, 800)),
        Detection(kind="object", label="dog", score=0.8, box=(95, 285, 380, 700)),
        Detection(kind="object", label="chair", score=0.7, box=(width - 300, 400, width, 700)),
    ]
    canvas = image.copy()
    labels = draw(canvas, detections)
    assert len(labels) == len(detections)
    for label in labels:
        assert 0 <= label.left < label.right <= width, label
        assert 0 <= label.top < label.bottom <= height, label
    overlapping = [
        (a.text, b.text) for i, a in enumerate(labels) for b in labels[i + 1 :] if a.overlaps(b)
    ]
    assert overlapping == []
    colors = {d.label: class_color(d) for d in detections if d.kind == "object"}
    assert len(set(colors.values())) == 3, colors
    # The caption really is drawn in its class colour (its left edge, clear of the text).
    for detection, label in zip(detections, labels, strict=True):
        drawn = canvas[label.top + 1, label.left]
        assert np.abs(drawn.astype(int) - class_color(detection)).max() <= 2, label


def test_stored_detections_are_drawn_on_the_reduced_decode_of_a_large_jpeg():
    """A 5120×3544 JPEG decodes at half scale (app/pixels.py); its detections, stored in
    full-resolution pixels, land at half their coordinates on the drawn picture."""
    rgb = cv2.resize(cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR), (5120, 3544))
    ok, encoded = cv2.imencode(".jpg", np.zeros_like(rgb))  # black: only the drawing shows
    assert ok
    face = Detection(kind="face", label="face", score=0.9, box=(1000, 1600, 2000, 2600))
    jpeg = processed_jpeg(encoded.tobytes(), [face], max_pixels=50_000_000, target_side_px=2048)
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == (1772, 2560, 3)
    green = class_color(face)
    for x, y in ((500, 1000), (1000, 1000), (750, 800), (750, 1300)):  # the box's four edges
        assert np.abs(drawn[y, x].astype(int) - green).max() < 60, (x, y)
    assert drawn[1000, 750].max() < 40  # inside the box: untouched
    assert drawn[1600:, 1500:].max() < 40  # nothing where nothing was found
