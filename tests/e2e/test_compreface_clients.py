"""CompreFace's real clients against a live Lookout (API + worker processes on loopback, the
session's Postgres and Redis, the real models): the PyPI `compreface-sdk` and exactly what
Double Take's `compreface` detector sends, parsed the way its code parses it."""

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from compreface import CompreFace

from app.settings import Settings
from tests.conftest import SHARED_IMAGES
from tests.processes import free_port, http_ok, lookout_env, start_python, stop, wait_until

TRAIN = SHARED_IMAGES / "faces" / "train"
TEST = SHARED_IMAGES / "faces" / "test"
DOG = SHARED_IMAGES / "scenes" / "dog.jpg"


@contextlib.contextmanager
def live_lookout(settings: Settings, tmp_path: Path) -> Iterator[int]:
    """`lookout api` and `lookout worker` as their own processes; yields the API's port once
    /health/ready says a worker is up."""
    port = free_port()
    env = lookout_env(settings, LOOKOUT_LOG_LEVEL="WARNING")
    api = start_python(
        ["app.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_path=tmp_path / "api.log",
    )
    worker = start_python(
        ["app.cli", "worker", "--processes", "1"], env=env, log_path=tmp_path / "worker.log"
    )
    try:
        wait_until(
            http_ok(f"http://127.0.0.1:{port}/health/ready"),
            timeout_s=90,
            what="the API with a worker",
            process=api,
            log_path=tmp_path / "api.log",
        )
        yield port
    finally:
        stop(api)
        stop(worker)


def test_the_compreface_python_sdk_drives_lookout(settings, tmp_path, api_key):
    with live_lookout(settings, tmp_path) as port:
        compre_face = CompreFace(
            "http://127.0.0.1",
            str(port),
            {
                "limit": 0,
                "det_prob_threshold": 0.8,
                "prediction_count": 2,
                "face_plugins": "calculator,age,gender,landmarks",
                "status": True,
            },
        )
        recognition = compre_face.init_face_recognition(api_key)
        subjects = recognition.get_subjects()
        assert subjects.add("obama") == {"subject": "obama"}
        assert subjects.list() == {"subjects": ["obama"]}

        collection = recognition.get_face_collection()
        image_ids: dict[str, list[str]] = {}
        for folder in sorted(TRAIN.iterdir()):
            for photo in sorted(folder.iterdir()):
                added = collection.add(str(photo), folder.name)
                assert added["subject"] == folder.name, added
                image_ids.setdefault(folder.name, []).append(str(uuid.UUID(added["image_id"])))
        assert sorted(subjects.list()["subjects"]) == sorted(image_ids)
        listed = collection.list()
        assert listed["total_elements"] == 9 and len(listed["faces"]) == 9

        # Recognize with the plugins of the client's options.
        answer = recognition.recognize(str(TEST / "obama1.jpg"))
        assert "result" in answer, answer
        [face] = answer["result"]
        best, second = face["subjects"]
        assert best["subject"] == "obama" and best["similarity"] > 0.6
        assert second["similarity"] < 0.4
        assert len(face["landmarks"]) == 5 and len(face["embedding"]) == 192
        assert face["execution_time"]["detector"] > 0
        assert answer["plugins_versions"]["calculator"] == "mobilefacenet"

        answer = recognition.recognize(str(TEST / "obama_and_biden.jpg"))
        best_of = [f["subjects"][0] for f in answer["result"]]
        assert sorted(b["subject"] for b in best_of if b["similarity"] > 0.6) == ["biden", "obama"]
        # The third face (a child, not enrolled) is nobody: below 0.40 for every subject.
        assert sorted(b["similarity"] < 0.4 for b in best_of) == [False, False, True]

        # Verify against a stored example, and two images against each other.
        [verified] = collection.verify(str(TEST / "obama1.jpg"), image_ids["obama"][0])["result"]
        assert verified["similarity"] > 0.6
        [verified] = collection.verify(str(TEST / "obama1.jpg"), image_ids["biden"][0])["result"]
        assert verified["similarity"] < 0.4
        verification = compre_face.init_face_verification(api_key)
        [result] = verification.verify(
            str(TRAIN / "biden" / "biden.jpg"), str(TEST / "obama_and_biden.jpg")
        )["result"]
        assert max(m["similarity"] for m in result["face_matches"]) > 0.6
        assert min(m["similarity"] for m in result["face_matches"]) < 0.4
        detection = compre_face.init_face_detection(api_key)
        assert len(detection.detect(str(TEST / "obama_and_biden.jpg"))["result"]) >= 2

        # No face: CompreFace's error body, code 28.
        assert recognition.recognize(str(DOG)) == {
            "message": "No face is found in the given image",
            "code": 28,
        }

        # Rename, delete an example, a subject's examples, a subject, all.
        assert subjects.update("obama", "barack") == {"updated": True}
        deleted = collection.delete(image_ids["obama"][0])
        assert deleted == {"image_id": image_ids["obama"][0], "subject": "barack"}
        assert collection.delete_all("biden") == {"deleted": 2}
        assert subjects.delete("kit_harington") == {"subject": "kit_harington"}
        assert subjects.delete("kit_harington")["code"] == 42
        assert sorted(subjects.list()["subjects"]) == ["alex_lacamoire", "barack", "rose_leslie"]
        assert subjects.delete_all() == {"deleted": 3}
        assert subjects.list() == {"subjects": []}


# --- Double Take ------------------------------------------------------------------------------
# jakowenko/double-take api/src/util/detectors/compreface.js (v1.13.1): train(), recognize(),
# remove() send these requests; normalize() parses the answer. Defaults from
# api/src/constants/defaults.js: det_prob_threshold 0.8, match ≥ 60 with a box of at least
# 10000 px², unknown below 40; face_plugins unset is sent as the string "undefined".


def node_form_data(field: str, path: Path) -> tuple[dict[str, str], Iterator[bytes]]:
    """A multipart body as Node's `form-data` streams a file: its boundary style, no
    Content-Length (axios then sends it chunked), the file in pieces."""
    boundary = "--------------------------" + "".join(
        secrets.choice("0123456789") for _ in range(24)
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        data = path.read_bytes()
        for start in range(0, len(data), 16384):
            yield data[start : start + 16384]
        yield f"\r\n--{boundary}--\r\n".encode()

    return {"content-type": f"multipart/form-data; boundary={boundary}"}, chunks()


AXIOS_HEADERS = {"accept": "application/json, text/plain, */*", "user-agent": "axios/0.27.2"}


def double_take_normalize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """normalize() of compreface.js, line by line (MATCH/UNKNOWN from the defaults)."""
    match_confidence, match_min_area, unknown_confidence = 60, 10000, 40
    if data.get("result") is None:  # `if (!data.result)`: [] is truthy in JavaScript
        if data.get("code") == 28:
            return []
        raise RuntimeError(data["message"])
    normalized = []
    for obj in data["result"]:
        face = obj["subjects"][0] if obj["subjects"] else None
        confidence = round(face["similarity"] * 100, 2) if face else 0
        box = obj["box"]
        normalized.append(
            {
                "name": face["subject"].lower()
                if face and confidence >= unknown_confidence
                else "unknown",
                "confidence": confidence,
                "match": confidence >= match_confidence
                and (box["x_max"] - box["x_min"]) * (box["y_max"] - box["y_min"]) >= match_min_area,
                "box": {
                    "top": box["y_min"],
                    "left": box["x_min"],
                    "width": box["x_max"] - box["x_min"],
                    "height": box["y_max"] - box["y_min"],
                },
            }
        )
    return normalized


def test_double_takes_compreface_detector_works_unchanged(settings, tmp_path, api_key):
    with live_lookout(settings, tmp_path) as port:
        url = f"http://127.0.0.1:{port}"
        key = {"x-api-key": api_key}
        with httpx.Client(base_url=url, headers=AXIOS_HEADERS, timeout=30) as http:

            def train(name: str, photo: Path) -> httpx.Response:
                headers, body = node_form_data("file", photo)
                return http.post(
                    "/api/v1/recognition/faces",
                    params={"subject": name},
                    headers={**headers, **key},
                    content=body,
                )

            def recognize(photo: Path, plugins: str = "undefined") -> httpx.Response:
                headers, body = node_form_data("file", photo)
                return http.post(
                    f"/api/v1/recognition/recognize?face_plugins={plugins}",
                    params={"det_prob_threshold": 0.8},
                    headers={**headers, **key},
                    content=body,
                )

            for folder in sorted(TRAIN.iterdir()):
                for photo in sorted(folder.iterdir()):
                    response = train(folder.name, photo)
                    assert response.status_code == 201, response.text
                    assert response.request.headers["transfer-encoding"] == "chunked"

            response = recognize(TEST / "obama1.jpg")
            assert response.status_code == 200 and "content-length" in response.headers
            [obama] = double_take_normalize(response.json())
            assert obama["name"] == "obama" and obama["match"] and obama["confidence"] > 60

            response = recognize(TEST / "obama_and_biden.jpg", plugins="mask,gender,age")
            found = double_take_normalize(response.json())
            matched = {f["name"] for f in found if f["match"]}
            assert matched == {"obama", "biden"}
            assert all(
                f["name"] == "unknown" and f["confidence"] < 40 for f in found if not f["match"]
            )

            strangers = double_take_normalize(recognize(SHARED_IMAGES / "scenes" / "t1.jpg").json())
            assert len(strangers) == 6
            assert all(f["name"] == "unknown" and not f["match"] for f in strangers)

            # No face: HTTP 400 with code 28, which normalize() turns into "no faces".
            response = recognize(DOG)
            assert response.status_code == 400
            assert double_take_normalize(response.json()) == []

            # remove(): DELETE with ?subject=; then the person is no longer recognized.
            response = http.delete(
                "/api/v1/recognition/faces", params={"subject": "obama"}, headers=key
            )
            assert response.json() == {"deleted": 2}
            [gone] = double_take_normalize(recognize(TEST / "obama1.jpg").json())
            assert gone["name"] != "obama" and not gone["match"]
