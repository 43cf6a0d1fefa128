"""CodeProject.AI's licence plate route, POST /v1/vision/alpr (file field `upload`), answered from
the `plates` task by a live `lookout api` + `lookout worker` with the real models."""

import httpx

from tests.app.compat.deepstack.conftest import LiveLookout, native
from tests.conftest import SHARED_IMAGES
from tests.images import PLATE_CORNERS_ON_DOG, PLATE_READ, blank, dog_with_plate_jpeg

TIMEOUT_S = 90  # the worker shares 2 cores with the whole suite


def alpr(live: LiveLookout, key: str, files: dict, **fields: str) -> httpx.Response:  # type: ignore[type-arg]
    return httpx.post(
        f"{live.url}/v1/vision/alpr",
        files=files,
        data={"api_key": key, **fields},
        timeout=TIMEOUT_S,
    )


def test_the_plate_on_the_pickup_is_read_in_codeproject_ais_shape(live: LiveLookout, write_key):
    image = dog_with_plate_jpeg(SHARED_IMAGES)
    response = alpr(live, write_key, {"upload": ("dog.jpg", image, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    [plate] = body["predictions"]
    assert plate["plate"] == PLATE_READ and plate["label"] == f"Plate: {PLATE_READ}"
    assert 0.8 <= plate["confidence"] <= 1
    # The plate's own box, in integer pixels, on the composited plate.
    xs = [x for x, _ in PLATE_CORNERS_ON_DOG]
    ys = [y for _, y in PLATE_CORNERS_ON_DOG]
    assert all(isinstance(plate[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
    assert min(xs) - 3 <= plate["x_min"] < plate["x_max"] <= max(xs) + 3
    assert min(ys) - 3 <= plate["y_min"] < plate["y_max"] <= max(ys) + 3
    assert body["message"] == f"Found Plate: {PLATE_READ}"
    assert body["processMs"] >= body["inferenceMs"] > 0 and body["duration"] > 0

    # An ordinary `plates` job of this key, counted per plate.
    with native(live, write_key) as lookout:
        [job] = lookout.get("/v1/jobs").json()["items"]
    assert job["tasks"] == ["plates"] and job["counts"] == {f"plate:{PLATE_READ}": 1}

    # min_confidence above the plate's drops it.
    stricter = alpr(
        live, write_key, {"upload": ("dog.jpg", image, "image/jpeg")}, min_confidence="1"
    ).json()
    assert stricter["predictions"] == [] and stricter["message"] == "No plates found"


def test_no_plate_is_an_empty_answer_and_bad_input_is_deepstacks_400(live: LiveLookout, write_key):
    empty = alpr(live, write_key, {"upload": ("blank.png", blank(320, 240), "image/png")})
    assert empty.status_code == 200, empty.text
    assert empty.json()["predictions"] == [] and empty.json()["success"] is True

    missing = alpr(live, write_key, {})
    assert missing.status_code == 400
    assert missing.json() == {
        **missing.json(),
        "success": False,
        "error": "No valid image file found",
    }

    garbage = alpr(live, write_key, {"upload": ("x.jpg", b"not an image", "image/jpeg")})
    assert garbage.status_code == 400 and garbage.json()["success"] is False
    assert "invalid image" in garbage.json()["error"]

    no_key = httpx.post(
        f"{live.url}/v1/vision/alpr",
        files={"upload": ("blank.png", blank(), "image/png")},
        timeout=TIMEOUT_S,
    )
    assert no_key.status_code == 401 and no_key.json()["success"] is False
