"""Contract tests: the exact requests that Frigate and Double Take send to a DeepStack server,
and their answers parsed the way their code parses them. Each test names the upstream file it
reproduces; the parsing below follows that file line by line."""

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from tests.app.compat.deepstack.conftest import (
    SCENES,
    TEST_FACES,
    TEST_PHOTOS,
    LiveLookout,
    native,
    training_photos,
)
from workers.detectors.objects import COCO_CLASSES

TIMEOUT_S = 60  # Frigate's own api_timeout is 0.1 s; bench/deepstack.py measures against it


# --- Frigate: frigate/detectors/plugins/deepstack.py (blakeblackshear/frigate) -----------------

# Frigate's labelmap for its default COCO model maps "truck" to "car" (get_label_index too).
FRIGATE_LABELS = {i: ("car" if name == "truck" else name) for i, name in enumerate(COCO_CLASSES)}


def frigate_get_label_index(label_value: str) -> int:
    if label_value.lower() == "truck":
        label_value = "car"
    for index, value in FRIGATE_LABELS.items():
        if value == label_value.lower():
            return index
    return -1


def frigate_detect_raw(api_url: str, api_key: str, tensor_input: np.ndarray) -> np.ndarray:
    """DeepStack.detect_raw: the model input as a JPEG (PIL), `api_key` as a form field, the
    image as the `image` file; then its parse loop, which stops at the first prediction under
    0.4 or with a label it does not know (so the order of predictions matters)."""
    image_data = np.squeeze(tensor_input).astype(np.uint8)
    image = Image.fromarray(image_data)
    w, h = image.size
    with io.BytesIO() as output:
        image.save(output, format="JPEG")
        image_bytes = output.getvalue()
    data = {"api_key": api_key}
    response = requests.post(api_url, data=data, files={"image": image_bytes}, timeout=TIMEOUT_S)
    response_json = response.json()
    detections = np.zeros((20, 6), np.float32)
    if response_json.get("predictions") is None:
        return detections
    for i, detection in enumerate(response_json.get("predictions")):
        if detection["confidence"] < 0.4:
            break
        label = frigate_get_label_index(detection["label"])
        if label < 0:
            break
        detections[i] = [
            label,
            float(detection["confidence"]),
            detection["y_min"] / h,
            detection["x_min"] / w,
            detection["y_max"] / h,
            detection["x_max"] / w,
        ]
    return detections


def frame_320(name: str) -> np.ndarray:
    """A 320×320 RGB tensor (1, 320, 320, 3) as Frigate's detector process hands it over."""
    image = Image.open(SCENES / name).convert("RGB").resize((320, 320))
    return np.asarray(image, dtype=np.uint8)[np.newaxis]


def test_frigate_deepstack_detector_finds_people_and_a_dog(live: LiveLookout, write_key):
    api_url = f"{live.url}/v1/vision/detection"
    people = frigate_detect_raw(api_url, write_key, frame_320("t1.jpg"))
    found = people[people[:, 1] > 0]
    assert (found[:, 0] == frigate_get_label_index("person")).sum() >= 3, found
    # Boxes come back as fractions of the 320×320 frame.
    assert ((found[:, 2:] >= 0) & (found[:, 2:] <= 1)).all()
    assert (found[:, 4] > found[:, 2]).all() and (found[:, 5] > found[:, 3]).all()

    dog = frigate_detect_raw(api_url, write_key, frame_320("dog.jpg"))
    assert frigate_get_label_index("dog") in dog[dog[:, 1] > 0][:, 0]

    with native(live, write_key) as lookout:
        jobs = lookout.get("/v1/jobs").json()["items"]
    assert len(jobs) == 2 and all(j["image"]["width"] == 320 for j in jobs)


def test_frigate_keeps_its_twenty_rows_with_max_predictions(live: LiveLookout, write_key):
    """Frigate's parse writes prediction i into row i of a 20-row array: a 21st prediction at
    0.4 or above is an IndexError that kills its detector process (DeepStack answered them all
    too). `?max_predictions=20` in its api_url keeps the 20 most confident."""
    t1 = np.asarray(Image.open(SCENES / "t1.jpg").convert("RGB"))
    crowd = np.vstack([np.hstack([t1, t1])] * 2)[np.newaxis]  # 22 objects at 0.4 or above
    api_url = f"{live.url}/v1/vision/detection"
    try:
        frigate_detect_raw(api_url, write_key, crowd)
        raise AssertionError("the crowd no longer has more than 20 objects: pick another")
    except IndexError:
        pass  # Frigate's own failure, reproduced: the reason for the parameter
    found = frigate_detect_raw(f"{api_url}?max_predictions=20", write_key, crowd)
    assert (found[:, 1] >= 0.4).all(), found  # all twenty rows filled
    assert (np.diff(found[:, 1]) <= 0).all()  # the most confident, in order
    assert (found[:, 0] == frigate_get_label_index("person")).sum() >= 12, found
    custom = requests.post(
        f"{live.url}/v1/vision/custom/general?max_predictions=3",
        data={"api_key": write_key},
        files={"image": (SCENES / "t1.jpg").read_bytes()},
        timeout=TIMEOUT_S,
    )
    assert len(custom.json()["predictions"]) == 3, custom.text
    for bad in ("0", "many"):
        refused = requests.post(
            f"{api_url}?max_predictions={bad}",
            data={"api_key": write_key},
            files={"image": (SCENES / "t1.jpg").read_bytes()},
            timeout=TIMEOUT_S,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["success"] is False and "max_predictions" in refused.json()["error"]


# --- Double Take: api/src/util/detectors/deepstack.js and aiserver.js (jakowenko/double-take) ---

# Double Take's defaults (api/src/constants/config: detect.match / detect.unknown).
MATCH_CONFIDENCE, MATCH_MIN_AREA, UNKNOWN_CONFIDENCE = 60, 10000, 40


class NodeFormData:
    """What Node's `form-data` package (lib/form_data.js) puts on the wire for
    `formData.append('image', fs.createReadStream(path))` and `append('userid', name)`, sent
    by axios as a stream: no Content-Length, so the body goes out chunked."""

    LINE_BREAK = "\r\n"

    def __init__(self) -> None:
        # getBoundary(): 26 dashes and 24 random hex digits
        self.boundary = "-" * 26 + "".join(format(random.randrange(10), "x") for _ in range(24))
        self.parts: list[tuple[bytes, bytes]] = []

    def append(self, field: str, value: str | Path) -> None:
        if isinstance(value, Path):  # a ReadStream: filename from its path, type from it
            header = (
                f'Content-Disposition: form-data; name="{field}"; filename="{value.name}"'
                f"{self.LINE_BREAK}Content-Type: image/jpeg{self.LINE_BREAK}"
            )
            body = value.read_bytes()
        else:
            header = f'Content-Disposition: form-data; name="{field}"{self.LINE_BREAK}'
            body = value.encode()
        head = f"--{self.boundary}{self.LINE_BREAK}{header}{self.LINE_BREAK}".encode()
        self.parts.append((head, body))

    def get_headers(self) -> dict[str, str]:
        return {"content-type": f"multipart/form-data; boundary={self.boundary}"}

    def stream(self) -> Iterator[bytes]:
        """The body in the pieces a stream yields (file contents in 64 KiB reads)."""
        for head, body in self.parts:
            yield head
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]
            yield self.LINE_BREAK.encode()
        yield f"--{self.boundary}--{self.LINE_BREAK}".encode()


def axios_post(url: str, form: NodeFormData) -> requests.Response:
    headers = {
        "Accept": "application/json, text/plain, */*",
        "User-Agent": "axios/0.27.2",
        **form.get_headers(),
    }
    # A generator body: requests sends it with Transfer-Encoding: chunked, as Node does.
    response = requests.post(url, data=form.stream(), headers=headers, timeout=TIMEOUT_S)
    assert "chunked" not in response.headers.get("transfer-encoding", "")
    assert int(response.headers["content-length"]) == len(response.content)
    return response


def double_take_normalize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """deepstack.js normalize (aiserver.js's is the same for these fields)."""
    if data["success"] is False:
        return []
    out = []
    for obj in data["predictions"]:
        confidence = round(obj["confidence"] * 100, 2)
        out.append(
            {
                "name": obj["userid"].lower() if confidence >= UNKNOWN_CONFIDENCE else "unknown",
                "confidence": confidence,
                "match": obj["userid"] != "unknown"
                and confidence >= MATCH_CONFIDENCE
                and (obj["x_max"] - obj["x_min"]) * (obj["y_max"] - obj["y_min"]) >= MATCH_MIN_AREA,
            }
        )
    return out


def double_take_round_trip(base_url: str, key: str | None) -> None:
    """train one photo per call, recognize, remove: what Double Take does with a detector."""
    for person, photos in training_photos().items():
        for photo in photos:
            form = NodeFormData()
            form.append("image", photo)
            form.append("userid", person)
            if key:
                form.append("api_key", key)
            trained = axios_post(f"{base_url}/v1/vision/face/register", form)
            assert trained.status_code == 200, trained.text  # train() has no validateStatus

    for name, expected in TEST_PHOTOS.items():
        form = NodeFormData()
        form.append("image", TEST_FACES / name)
        if key:
            form.append("api_key", key)
        data = axios_post(f"{base_url}/v1/vision/face/recognize", form).json()
        results = double_take_normalize(data)
        assert sorted(r["name"] for r in results) == expected, (name, data)
        for result in results:
            if result["name"] == "unknown":
                assert result["confidence"] < UNKNOWN_CONFIDENCE and not result["match"]
            else:
                assert result["confidence"] >= MATCH_CONFIDENCE, (name, result)
        if name != "obama_and_biden.jpg":  # a portrait: large enough for a match
            assert [r["match"] for r in results] == [True], (name, results)

    # Then a name none of whose photos trained: Double Take deletes it from every detector
    # before it forgets the name (aiserver.js remove() has no validateStatus, so a 4xx would stop
    # train.controller.js there for good); DeepStack and CodeProject.AI answer success.
    for userid in ("obama", "never_trained"):
        form = NodeFormData()
        form.append("userid", userid)
        if key:
            form.append("api_key", key)
        removed = axios_post(f"{base_url}/v1/vision/face/delete", form)
        assert removed.status_code == 200 and removed.json()["success"] is True, userid


def test_double_take_deepstack_detector_trains_recognizes_and_removes(
    live: LiveLookout, write_key, count
):
    double_take_round_trip(live.url, write_key)
    with native(live, write_key) as lookout:
        names = sorted(p["name"] for p in lookout.get("/v1/people").json()["items"])
    assert names == sorted(set(training_photos()) - {"obama"})


async def test_double_take_aiserver_detector_sends_no_key_and_needs_keys_off(
    live: LiveLookout, count
):
    # aiserver.js sends no api_key at all: it works against a Lookout with keys off.
    double_take_round_trip(live.open_url, None)
    assert await count("people", "owner_id IS NULL") == len(training_photos()) - 1
