"""Bad requests get DeepStack's error envelope and status, never a 5xx, and store nothing;
the gallery behind the DeepStack routes follows the native API's owner rules."""

from typing import Any

import httpx
import pytest
from httpx_ws import connect_ws

from app.security import Scope
from tests.app.compat.deepstack.conftest import (
    SCENES,
    TEST_FACES,
    LiveLookout,
    native,
    training_photos,
)
from tests.images import bomb_png

OBAMA = training_photos()["obama"][0]
TIMEOUT_S = 60


def post(live: LiveLookout, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
    data = dict(kwargs.pop("data", {}))
    if key is not None:
        data["api_key"] = key
    response = httpx.post(f"{live.url}{path}", data=data, timeout=TIMEOUT_S, **kwargs)
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-type"] == "application/json"
    return response


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "duration"}, body
    assert body["success"] is False and error in body["error"], body
    assert isinstance(body["duration"], float)


def image(name: str, data: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, "image/jpeg")}


DETECT, FACE, RECOGNIZE = "/v1/vision/detection", "/v1/vision/face", "/v1/vision/face/recognize"
REGISTER, DELETE, MATCH = (
    "/v1/vision/face/register",
    "/v1/vision/face/delete",
    "/v1/vision/face/match",
)
JUNK = image("x.jpg", b"not an image")
TRUNCATED = image("t1.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64)
PORTRAIT = image("o.jpg", OBAMA.read_bytes())
DOG = image("dog.jpg", (SCENES / "dog.jpg").read_bytes())
PORTRAIT_AND_DOG = {"a": PORTRAIT["image"], "b": DOG["image"]}
NO_IMAGE = "No valid image file found"  # CheckImage, CheckMultiImage and CheckFaceMatch alike
BAD_CONFIDENCE = "Invalid value for min_confidence"

CASES = [
    (DETECT, {}, {}, 400, NO_IMAGE),
    (DETECT, JUNK, {}, 400, "invalid image"),
    (DETECT, image("x.jpg", b""), {}, 400, "invalid image"),
    (DETECT, image("bomb.png", bomb_png()), {}, 413, "pixels"),
    (DETECT, TRUNCATED, {}, 400, "invalid image"),
    (DETECT, {"picture": DOG["image"]}, {}, 400, NO_IMAGE),
    (DETECT, JUNK, {"min_confidence": "high"}, 400, BAD_CONFIDENCE),
    (DETECT, JUNK, {"min_confidence": "1.5"}, 400, "min_confidence cannot be greater than 1"),
    (FACE, JUNK, {"min_confidence": "nan"}, 400, BAD_CONFIDENCE),
    (RECOGNIZE, {}, {}, 400, NO_IMAGE),
    (REGISTER, PORTRAIT, {}, 400, "userid not specified"),
    (REGISTER, {}, {"userid": "obama"}, 400, NO_IMAGE),
    (REGISTER, DOG, {"userid": "rex"}, 400, "no face detected"),
    (REGISTER, image("x.jpg", b"GIF89a"), {"userid": "rex"}, 400, "invalid image"),
    (DELETE, {}, {}, 400, "userid not specified"),
    (DELETE, {}, {"userid": "a\x00b"}, 400, "userid must not contain NUL"),
    (REGISTER, PORTRAIT, {"userid": "a\x00b"}, 400, "userid must not contain NUL"),
    (MATCH, PORTRAIT, {}, 400, "expected two image files, only one found"),
    (MATCH, {}, {}, 400, NO_IMAGE),
    (MATCH, PORTRAIT_AND_DOG, {}, 400, "no face found"),
]


@pytest.mark.parametrize(("path", "files", "data", "status", "error"), CASES)
async def test_bad_requests_get_deepstack_errors_and_store_nothing(
    live: LiveLookout, write_key, count, path, files, data, status, error
):
    images_before = set(live.stored_images())
    refused(post(live, path, write_key, files=files or None, data=data), status, error)
    # Face jobs that ran (no face in dog.jpg) are discarded with the refused registration;
    # a match on a photo without a face keeps its jobs, as every finished job is kept.
    expected_jobs = 2 if "no face found" in error else 0
    stored = {t: await count(t) for t in ("jobs", "people", "person_faces")}
    assert stored == {"jobs": expected_jobs, "people": 0, "person_faces": 0}
    if expected_jobs == 0:
        assert set(live.stored_images()) == images_before


def test_a_chunked_malformed_body_is_a_400(live: LiveLookout, write_key):
    def garbage():  # type: ignore[no-untyped-def]
        yield b'--xyz\r\nContent-Disposition: form-data; name="image"\r\n'

    response = httpx.post(
        f"{live.url}/v1/vision/detection",
        content=garbage(),
        headers={"content-type": "multipart/form-data; boundary=xyz", "X-API-Key": write_key},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False


async def test_keys_come_from_the_form_or_the_header_and_bad_ones_are_401(
    live: LiveLookout, write_key, make_key
):
    t1 = image("t1.jpg", (SCENES / "t1.jpg").read_bytes())
    refused(post(live, "/v1/vision/face/list", None), 401, "Incorrect api key")
    refused(post(live, "/v1/vision/face/list", "lk_nope_nope"), 401, "Incorrect api key")
    assert post(live, "/v1/vision/face/list", write_key).json()["faces"] == []
    by_header = post(live, "/v1/vision/face/list", None, headers={"X-API-Key": write_key})
    assert by_header.json() == {
        "success": True,
        "faces": [],
        "duration": by_header.json()["duration"],
    }
    reader = await make_key("reader", scopes=(Scope.read,))
    assert post(live, "/v1/vision/face/list", reader).status_code == 200
    refused(post(live, "/v1/vision/detection", reader, files=t1), 403, "lacks the 'write' scope")


async def test_a_person_belongs_to_the_key_that_registered_it(
    live: LiveLookout, write_key, make_key
):
    other = await make_key("other", scopes=(Scope.read, Scope.write))
    registered = post(
        live,
        "/v1/vision/face/register",
        write_key,
        files={"photo": ("obama.jpg", OBAMA.read_bytes(), "image/jpeg")},  # any field name
        data={"userid": "obama"},
    )
    assert registered.json()["message"] == "face added"
    assert post(live, "/v1/vision/face/list", write_key).json()["faces"] == ["obama"]
    assert post(live, "/v1/vision/face/list", other).json()["faces"] == []
    photo = image("obama1.jpg", (TEST_FACES / "obama1.jpg").read_bytes())
    mine = post(live, "/v1/vision/face/recognize", write_key, files=photo).json()
    theirs = post(live, "/v1/vision/face/recognize", other, files=photo).json()
    assert [p["userid"] for p in mine["predictions"]] == ["obama"]
    assert theirs["predictions"][0] | {"x_min": 0} == mine["predictions"][0] | {
        "userid": "unknown", "confidence": 0, "x_min": 0,
    }  # fmt: skip
    # Another key's userid is not this key's: deleting it deletes nothing, and succeeds as an
    # unknown userid does in DeepStack (Double Take's untrain deletes names that never trained).
    deleted = post(live, "/v1/vision/face/delete", other, data={"userid": "obama"})
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    with native(live, other) as lookout:
        assert lookout.get("/v1/people").json()["items"] == []
    with native(live, write_key) as lookout:
        [person] = lookout.get("/v1/people").json()["items"]
    assert person["name"] == "obama" and person["face_count"] == 1


def test_match_scores_one_person_above_two_people(live: LiveLookout, write_key):
    def similarity(a, b) -> float:  # type: ignore[no-untyped-def]
        files = {
            "image1": ("a.jpg", a.read_bytes(), "image/jpeg"),
            "image2": ("b.jpg", b.read_bytes(), "image/jpeg"),
        }
        body = post(live, "/v1/vision/face/match", write_key, files=files).json()
        assert body["success"] is True
        return float(body["similarity"])

    same = similarity(OBAMA, TEST_FACES / "obama1.jpg")
    different = similarity(OBAMA, training_photos()["biden"][0])
    assert same >= 0.6 > different, (same, different)


def test_every_call_is_a_job_on_the_firehose(live: LiveLookout, write_key):
    with httpx.Client(base_url=live.url, headers={"X-API-Key": write_key}) as http:
        with connect_ws(f"{live.url.replace('http', 'ws')}/v1/ws", http) as firehose:
            answer = post(
                live,
                "/v1/vision/face",
                write_key,
                files=image("t1.jpg", (SCENES / "t1.jpg").read_bytes()),
            ).json()
            event = firehose.receive_json(timeout=TIMEOUT_S)
        jobs = http.get("/v1/jobs").json()["items"]
    assert event["type"] == "result" and event["job_id"] == jobs[0]["id"]
    assert event["job"]["counts"]["face"] == len(answer["predictions"]) == 6


def test_recognize_and_match_jobs_are_kept_but_not_counted_or_searched(
    live: LiveLookout, write_key
):
    """Issue 12: Double Take's recognize calls (and match) keep their jobs, marked; face search
    and stats leave them out, so a snapshot asked about twice is not found at 1.0 nor counted
    as a frame. Face detection is a detection: counted and found, like an upload."""
    portrait = (TEST_FACES / "obama1.jpg").read_bytes()
    for _ in range(2):
        recognized = post(live, RECOGNIZE, write_key, files=image("o.jpg", portrait))
        assert recognized.json()["success"] is True, recognized.text
        matched = post(
            live, MATCH, write_key, files={"a": PORTRAIT["image"], "b": ("o.jpg", portrait)}
        )
        assert matched.json()["success"] is True, matched.text
    detected = post(live, FACE, write_key, files=image("o.jpg", portrait))
    assert detected.json()["success"] is True, detected.text
    with native(live, write_key) as http:
        jobs = http.get("/v1/jobs", params={"limit": 100}).json()["items"]
        assert sorted(j["purpose"] for j in jobs) == ["compare"] * 4 + ["detect"] + ["identify"] * 2
        [detection] = [j["id"] for j in jobs if j["purpose"] == "detect"]
        searched = http.post("/v1/faces/search", files={"image": ("o.jpg", portrait)})
        assert [r["job_id"] for r in searched.json()["results"]] == [detection]
        stats = http.get("/v1/stats/counts", params={"bucket": "1d"}).json()
        assert stats["totals"] == {"face": 1}


def test_a_userid_is_a_name_whatever_its_case(live: LiveLookout, write_key):
    """Names are unique per key whatever their case (the dashboard's "Obama" is `obama`), so
    a userid finds its person the same way; DeepStack compared them exactly."""
    first, second = training_photos()["obama"][:2]
    added = post(
        live,
        REGISTER,
        write_key,
        files=image("a.jpg", first.read_bytes()),
        data={"userid": "Obama"},
    )
    assert added.json()["message"] == "face added"
    again = post(
        live,
        REGISTER,
        write_key,
        files=image("b.jpg", second.read_bytes()),
        data={"userid": "obama"},
    )
    assert again.status_code == 200 and again.json()["message"] == "face updated", again.text
    assert post(live, "/v1/vision/face/list", write_key).json()["faces"] == ["Obama"]
    with native(live, write_key) as lookout:
        [person] = lookout.get("/v1/people").json()["items"]
    assert person["face_count"] == 2
    deleted = post(live, DELETE, write_key, data={"userid": "OBAMA"})
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert post(live, "/v1/vision/face/list", write_key).json()["faces"] == []
