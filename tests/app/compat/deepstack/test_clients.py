"""The real PyPI DeepStack clients against a live Lookout: `deepstack-python` (Home
Assistant's HASS-Deepstack-object / -face library) and DeepQuest's own `deepstack-sdk`."""

from pathlib import Path

import deepstack.core as ds
import httpx
import pytest
from deepstack_sdk import Detection, Face, ServerConfig

from app.settings import ModelSettings
from tests.app.compat.deepstack.conftest import (
    SCENES,
    TEST_FACES,
    TEST_PHOTOS,
    LiveLookout,
    native,
    training_photos,
)
from tests.images import in_format

TIMEOUT_S = 60  # the worker shares 2 cores with the whole suite


def labels(predictions: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {p["label"] for p in predictions}


def assert_highest_first(predictions: list[dict]) -> None:  # type: ignore[type-arg]
    confidences = [p["confidence"] for p in predictions]
    assert confidences == sorted(confidences, reverse=True)


def test_deepstack_python_detects_people_in_t1_and_a_dog_in_dog_jpg(live: LiveLookout, write_key):
    detector = ds.DeepstackObject(
        ip="127.0.0.1", port=live.port, api_key=write_key, timeout=TIMEOUT_S
    )
    people = detector.detect((SCENES / "t1.jpg").read_bytes())
    assert ds.get_objects_summary(people)["person"] >= 4, people
    assert_highest_first(people)
    assert all(p["confidence"] >= 0.45 for p in people)  # the library's min_confidence
    scene = detector.detect((SCENES / "dog.jpg").read_bytes())
    assert {"dog", "bicycle"} <= labels(scene) and labels(scene) & {"car", "truck"}, scene
    for p in scene:
        assert all(isinstance(p[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= p["x_min"] < p["x_max"] <= 768 and 0 <= p["y_min"] < p["y_max"] <= 576

    # Both ran as ordinary jobs of this key, through the worker pool.
    with native(live, write_key) as lookout:
        jobs = lookout.get("/v1/jobs").json()["items"]
    assert [j["tasks"] for j in jobs] == [["objects"], ["objects"]]
    assert all(j["status"] == "done" for j in jobs)
    assert jobs[0]["counts"]["dog"] >= 1


def test_deepstack_python_detects_in_a_bmp_a_tiff_and_a_gif_as_deepstack_did(
    live: LiveLookout, write_key
):
    """DeepStack opened whatever Pillow opens; these were a 415 (which the library reads as
    an error). They are converted to PNG on arrival and detected like the JPEG."""
    detector = ds.DeepstackObject(
        ip="127.0.0.1", port=live.port, api_key=write_key, timeout=TIMEOUT_S
    )
    for image_format in ("BMP", "TIFF", "GIF"):
        people = detector.detect(in_format((SCENES / "t1.jpg").read_bytes(), image_format))
        assert ds.get_objects_summary(people).get("person", 0) >= 4, (image_format, people)
    with native(live, write_key) as lookout:
        jobs = lookout.get("/v1/jobs").json()["items"]
        assert [j["status"] for j in jobs] == ["done"] * 3
        for job in jobs:
            kept = lookout.get(f"/v1/jobs/{job['id']}/image")
            assert kept.headers["content-type"] == "image/png" and kept.content[:4] == b"\x89PNG"


def test_deepstack_python_detects_through_a_custom_model_by_name(live: LiveLookout, write_key):
    """deepstack-python's custom_model (Home Assistant's deepstack_object `custom_model`) posts
    to /v1/vision/custom/{name}: a name CodeProject.AI's list gives (Blue Iris reads it; GET or
    POST, as CodeProject.AI's server routes it), or `general`. Another name is a 404, which the
    library reports as a bad url."""
    with native(live, write_key) as lookout:
        listed = lookout.post("/v1/vision/custom/list")
        assert listed.status_code == 200 and listed.json()["success"] is True, listed.text
        assert lookout.get("/v1/vision/custom/list").json()["models"] == listed.json()["models"]
    assert listed.json()["models"] == [ModelSettings().object_pack]  # what the workers run
    unkeyed = httpx.post(f"{live.url}/v1/vision/custom/list", timeout=30)
    assert unkeyed.status_code == 401 and unkeyed.json()["success"] is False

    for name in [*listed.json()["models"], "general"]:
        detector = ds.DeepstackObject(
            ip="127.0.0.1", port=live.port, api_key=write_key, timeout=TIMEOUT_S, custom_model=name
        )
        people = detector.detect((SCENES / "t1.jpg").read_bytes())
        assert ds.get_objects_summary(people)["person"] >= 4, people
        assert_highest_first(people)
    unknown = ds.DeepstackObject(
        ip="127.0.0.1", port=live.port, api_key=write_key, timeout=TIMEOUT_S, custom_model="ipcam"
    )
    with pytest.raises(ds.DeepstackException, match="Bad url"):
        unknown.detect((SCENES / "t1.jpg").read_bytes())


def test_deepstack_python_registers_lists_and_recognizes_faces(live: LiveLookout, write_key):
    faces = ds.DeepstackFace(ip="127.0.0.1", port=live.port, api_key=write_key, timeout=TIMEOUT_S)
    training = training_photos()
    for person, photos in training.items():
        messages = [faces.register(person, photo.read_bytes()) for photo in photos]
        # One photo per call adds to the person: the second call updates the same userid.
        assert messages == ["face added"] + ["face updated"] * (len(photos) - 1)
    assert faces.get_registered_faces() == sorted(training)

    for name, expected in TEST_PHOTOS.items():
        predictions = faces.recognize((TEST_FACES / name).read_bytes())
        assert sorted(p["userid"] for p in predictions) == expected, (name, predictions)
        assert_highest_first(predictions)
        for p in predictions:
            if p["userid"] == "unknown":
                assert p["confidence"] == 0
            else:
                assert p["confidence"] >= 0.60, (name, p)
    # Strangers only: six faces, nobody enrolled among them.
    strangers = faces.recognize((SCENES / "t1.jpg").read_bytes())
    assert [p["userid"] for p in strangers] == ["unknown"] * 6
    assert ds.get_recognized_faces(strangers) == {}

    # The same people, with their faces, in Lookout's own gallery.
    with native(live, write_key) as lookout:
        people = lookout.get("/v1/people", params={"limit": 100}).json()["items"]
    assert {p["name"]: p["face_count"] for p in people} == {
        person: len(photos) for person, photos in training.items()
    }


def test_deepstack_sdk_detects_registers_recognizes_lists_and_deletes(
    live: LiveLookout, write_key, tmp_path: Path
):
    config = ServerConfig(live.url, api_key=write_key)
    objects = Detection(config).detectObject(str(SCENES / "dog.jpg"))
    assert "dog" in {o.label for o in objects}

    face = Face(config)
    detected = face.detectFace(str(SCENES / "t1.jpg"), min_confidence=0.55)
    assert len(detected) == 6
    obama = training_photos()["obama"]
    assert face.registerFace([str(p) for p in obama], "obama") is True  # two files, one call
    assert face.registerFace([str(training_photos()["biden"][0])], "biden") is True
    assert list(face.listFaces()) == ["biden", "obama"]

    recognized = face.recognizeFace(str(TEST_FACES / "obama_and_biden.jpg"), min_confidence=0.6)
    assert sorted(r.userid for r in recognized) == ["biden", "obama", "unknown"]

    assert face.deleteFace("obama") is True
    assert list(face.listFaces()) == ["biden"]
    again = face.recognizeFace(str(TEST_FACES / "obama1.jpg"), min_confidence=0.6)
    assert [r.userid for r in again] == ["unknown"]
    with native(live, write_key) as lookout:
        names = [p["name"] for p in lookout.get("/v1/people").json()["items"]]
    assert names == ["biden"]


@pytest.mark.parametrize("path", ["/v1/vision/face", "/v1/vision/face/"])
def test_face_detection_answers_on_both_spellings_of_its_path(live: LiveLookout, write_key, path):
    import requests

    response = requests.post(
        live.url + path,
        files={"image": (SCENES / "t1.jpg").read_bytes()},
        data={"api_key": write_key},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 6
