"""CompreFace's /api/v1 over Lookout: the API in-process, a real worker (consumer), Postgres +
pgvector, the real models, the shared faces. Response shapes and error codes are CompreFace's
(docs/Rest-API-description.md, java/common/.../CommonExceptionCode.java of exadel-inc/CompreFace).
"""

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator

import cv2
import numpy as np
import pytest
from sqlalchemy import text

from app import streams
from app.compat.compreface import service
from app.compat.compreface.schemas import FaceOut
from app.gallery import service as gallery
from app.models import Detection, FaceEmbedding, Job
from app.security import Scope
from tests.conftest import SHARED_IMAGES, shared_image
from tests.images import bomb_png

TRAIN = SHARED_IMAGES / "faces" / "train"
API = "/api/v1"


@pytest.fixture
async def worker(make_consumer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(make_consumer(block_ms=50).run(stop))
    yield
    stop.set()
    await task


def jpeg(relative: str, field: str = "file") -> dict:  # type: ignore[type-arg]
    return {field: (relative.rsplit("/", 1)[-1], shared_image(relative), "image/jpeg")}


async def count(engine, sql: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql))).scalar_one())


async def stored_rows(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {
        table: await count(engine, f"SELECT count(*) FROM {table}")
        for table in ("people", "person_faces", "jobs", "detections", "face_embeddings")
    }


async def enroll_training_set(client) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Every train photo added as a face example of its folder's subject; image ids by subject."""
    examples: dict[str, list[str]] = {}
    for folder in sorted(TRAIN.iterdir()):
        for photo in sorted(folder.iterdir()):
            response = await client.post(
                f"{API}/recognition/faces",
                params={"subject": folder.name},
                files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
            )
            assert response.status_code == 201, response.text
            assert response.json()["subject"] == folder.name
            examples.setdefault(folder.name, []).append(response.json()["image_id"])
    return examples


def assert_error(response, status: int, code: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "code"} and body["code"] == code, body
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    return body  # type: ignore[no-any-return]


async def test_enrolled_subjects_are_recognized_above_060_and_strangers_below_040(
    client, worker, engine
):
    examples = await enroll_training_set(client)
    assert sum(len(ids) for ids in examples.values()) == 9
    # A subject IS a Lookout person: the same five in /v1/people, with their faces.
    people = (await client.get("/v1/people")).json()["items"]
    assert sorted(p["name"] for p in people) == sorted(examples)
    assert {p["name"]: p["face_count"] for p in people} == {k: len(v) for k, v in examples.items()}

    async def recognize(relative: str, **params) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
        response = await client.post(
            f"{API}/recognition/recognize", params=params, files=jpeg(relative)
        )
        assert response.status_code == 200, response.text
        assert int(response.headers["content-length"]) == len(response.content)
        return response.json()["result"]  # type: ignore[no-any-return]

    [obama] = await recognize("faces/test/obama1.jpg")
    assert obama["subjects"][0]["subject"] == "obama" and obama["subjects"][0]["similarity"] > 0.6
    [alex] = await recognize("faces/test/alex_lacamoire1.jpg")
    assert alex["subjects"][0]["subject"] == "alex_lacamoire"
    assert alex["subjects"][0]["similarity"] > 0.6

    # Three faces, biggest first: Biden and Obama (either order by size), then the child,
    # who is not enrolled: every subject below 0.40.
    faces = await recognize("faces/test/obama_and_biden.jpg", prediction_count=5)
    assert len(faces) == 3
    assert {f["subjects"][0]["subject"] for f in faces[:2]} == {"biden", "obama"}
    assert all(f["subjects"][0]["similarity"] > 0.6 for f in faces[:2])
    assert faces[2]["subjects"][0]["similarity"] < 0.4
    for face in faces:
        # Distinct subjects (obama and biden have two examples each), best first.
        names = [s["subject"] for s in face["subjects"]]
        assert sorted(names) == sorted(examples)
        similarities = [s["similarity"] for s in face["subjects"]]
        assert similarities == sorted(similarities, reverse=True)
        assert set(face) == {"box", "subjects"}  # no plugin asked for, no status
        box = face["box"]
        assert all(isinstance(box[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 < box["probability"] <= 1

    strangers = await recognize("scenes/t1.jpg", det_prob_threshold=0.5)
    assert len(strangers) == 6
    assert all(s["subjects"][0]["similarity"] < 0.4 for s in strangers)

    # limit: the biggest faces only; det_prob_threshold leaves out weaker detections.
    assert len(await recognize("scenes/t1.jpg", limit=2)) == 2

    # Each recognition ran as a job like any other: in /v1/jobs and on the firehose.
    jobs = (await client.get("/v1/jobs")).json()["items"]
    assert len(jobs) == 5 and all(j["status"] == "done" for j in jobs)
    results = [
        json.loads(fields[b"data"])
        for _, fields in await streams_entries(client)
        if json.loads(fields[b"data"])["type"] == "result"
    ]
    # (the examples' jobs are there too: they ran, then were deleted with their images)
    assert {j["id"] for j in jobs} <= {r["job"]["id"] for r in results}


async def streams_entries(client):  # type: ignore[no-untyped-def]
    redis = client._transport.app.state.lookout.redis
    return await redis.xrange(streams.FIREHOSE)


async def test_plugins_status_detection_and_embeddings(client, worker):
    examples = await enroll_training_set(client)
    response = await client.post(
        f"{API}/detection/detect",
        params={"face_plugins": "landmarks,calculator,age,gender,mask", "status": "True"},
        files=jpeg("faces/test/obama1.jpg"),
    )
    assert response.status_code == 200, response.text
    [face] = response.json()["result"]
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert len(face["embedding"]) == 192  # the stand-in's embedding
    assert "age" not in face and "gender" not in face  # the test pack has no genderage model
    assert face["execution_time"]["detector"] > 0
    assert response.json()["plugins_versions"]["calculator"] == "mobilefacenet"

    # The embedding from the calculator plugin is recognized like the image was.
    response = await client.post(
        f"{API}/recognition/embeddings/recognize",
        params={"prediction_count": 2},
        json={"embeddings": [face["embedding"]]},
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["result"]
    assert result["embedding"] == face["embedding"]
    assert result["similarities"][0]["subject"] == "obama"
    assert len(result["similarities"]) == 2 and result["similarities"][0]["similarity"] > 0.6

    obama_example, biden_example = examples["obama"][0], examples["biden"][0]
    for image_id, same in ((obama_example, True), (biden_example, False)):
        response = await client.post(
            f"{API}/recognition/embeddings/faces/{image_id}/verify",
            json={"embeddings": [face["embedding"]]},
        )
        assert response.status_code == 200, response.text
        similarity = response.json()["result"][0]["similarity"]
        assert (similarity > 0.6) if same else (similarity < 0.4)

        response = await client.post(
            f"{API}/recognition/faces/{image_id}/verify", files=jpeg("faces/test/obama1.jpg")
        )
        assert response.status_code == 200, response.text
        [verified] = response.json()["result"]
        assert (verified["similarity"] > 0.6) if same else (verified["similarity"] < 0.4)
        # FaceVerification (CompreFace's dto) names the example's subject.
        assert verified["subject"] == ("obama" if same else "biden")

    # Both embedding verifications answer the closest target first, as CompreFace sorts them:
    # a stranger's embedding sent first comes back last.
    stranger = [round(float(v), 6) for v in np.random.default_rng(7).standard_normal(192)]
    response = await client.post(
        f"{API}/verification/embeddings/verify",
        json={"source": face["embedding"], "targets": [stranger, face["embedding"]]},
    )
    results = response.json()["result"]
    assert [r["embedding"] for r in results] == [face["embedding"], stranger]
    assert results[0]["similarity"] > 0.95 > results[1]["similarity"]
    response = await client.post(
        f"{API}/recognition/embeddings/faces/{obama_example}/verify",
        json={"embeddings": [stranger, face["embedding"]]},
    )
    results = response.json()["result"]
    assert [r["embedding"] for r in results] == [face["embedding"], stranger]
    assert results[0]["similarity"] > 0.6 > results[1]["similarity"]


async def test_recognize_with_detect_faces_false_takes_the_image_as_the_face(client, worker):
    """CompreFace's detect_faces=false: no detector runs, the image is one face already cropped;
    its box is the whole image (probability 1.0) and it is recognized as the face it shows."""
    await enroll_training_set(client)
    photo = shared_image("faces/test/obama1.jpg")
    [detected] = (
        await client.post(f"{API}/detection/detect", files=jpeg("faces/test/obama1.jpg"))
    ).json()["result"]
    box = detected["box"]
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    margin = (box["x_max"] - box["x_min"]) // 8
    crop = image[
        max(0, box["y_min"] - margin) : box["y_max"] + margin,
        max(0, box["x_min"] - margin) : box["x_max"] + margin,
    ]
    ok, encoded = cv2.imencode(".jpg", crop)
    assert ok
    response = await client.post(
        f"{API}/recognition/recognize",
        params={"detect_faces": "false", "prediction_count": 2},
        files={"file": ("crop.jpg", encoded.tobytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    [face] = response.json()["result"]
    height, width = crop.shape[:2]
    assert face["box"] == {
        "probability": 1.0,
        "x_min": 0,
        "y_min": 0,
        "x_max": width,
        "y_max": height,
    }
    assert face["subjects"][0]["subject"] == "obama", face["subjects"]
    # Why clients send it: through the detector (the default) this tight crop has no face
    # SCRFD finds: CompreFace's "no face" (28).
    detected_again = await client.post(
        f"{API}/recognition/recognize",
        files={"file": ("crop.jpg", encoded.tobytes(), "image/jpeg")},
    )
    assert_error(detected_again, 400, 28)


async def test_verification_of_two_images_and_base64_bodies(client, worker):
    obama = base64.b64encode(shared_image("faces/train/obama/obama.jpg")).decode()
    response = await client.post(
        f"{API}/verification/verify",
        json={
            "source_image": obama,
            "target_image": "data:image/jpeg;base64,"
            + base64.b64encode(shared_image("faces/test/obama_and_biden.jpg")).decode(),
        },
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["result"]
    assert set(result) == {"source_image_face", "face_matches"}
    matches = result["face_matches"]
    assert len(matches) == 3
    assert sorted(m["similarity"] > 0.6 for m in matches) == [False, False, True]

    # The source must hold exactly one face.
    response = await client.post(
        f"{API}/verification/verify",
        files={
            **jpeg("faces/test/obama_and_biden.jpg", "source_image"),
            **jpeg("faces/test/obama1.jpg", "target_image"),
        },
    )
    assert_error(response, 400, 31)
    # ... unless `limit` leaves one: CompreFace applies it to the source before that check
    # (FaceVerificationProcessServiceImpl), so a group photo's biggest face is the source.
    response = await client.post(
        f"{API}/verification/verify",
        params={"limit": 1},
        files={
            **jpeg("faces/test/obama_and_biden.jpg", "source_image"),
            **jpeg("faces/test/obama1.jpg", "target_image"),
        },
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["result"]
    [match] = result["face_matches"]
    assert 0 <= match["similarity"] <= 1
    detected = await client.post(
        f"{API}/detection/detect", files=jpeg("faces/test/obama_and_biden.jpg")
    )
    boxes = [face["box"] for face in detected.json()["result"]]
    assert len(boxes) > 1
    biggest = max(boxes, key=lambda b: (b["x_max"] - b["x_min"]) * (b["y_max"] - b["y_min"]))
    assert result["source_image_face"]["box"] == biggest

    # A base64 example is added like a multipart one.
    response = await client.post(
        f"{API}/recognition/faces", params={"subject": "Obama"}, json={"file": obama}
    )
    assert response.status_code == 201, response.text


async def test_recognize_and_verify_jobs_are_kept_but_not_counted_or_searched(client, worker):
    """As the native gallery calls (issue 12): recognize and verify keep their jobs, marked,
    and face search and stats leave them out; detect is a detection, counted like an upload."""
    photo = "faces/test/obama1.jpg"
    calls = [
        ("recognition/recognize", jpeg(photo)),
        ("verification/verify", {**jpeg(photo, "source_image"), **jpeg(photo, "target_image")}),
        ("detection/detect", jpeg(photo)),
    ]
    for path, files in calls:
        response = await client.post(f"{API}/{path}", files=files)
        assert response.status_code == 200, response.text
    jobs = (await client.get("/v1/jobs")).json()["items"]
    assert sorted(j["purpose"] for j in jobs) == ["compare", "compare", "detect", "identify"]
    [detected] = [j["id"] for j in jobs if j["purpose"] == "detect"]

    searched = await client.post("/v1/faces/search", files={"image": jpeg(photo)["file"]})
    assert [r["job_id"] for r in searched.json()["results"]] == [detected]
    stats = (await client.get("/v1/stats/counts", params={"bucket": "1d"})).json()
    assert stats["totals"] == {"face": 1}


async def test_subjects_crud_and_face_examples(client, worker, engine):
    assert (await client.post(f"{API}/recognition/subjects", json={"subject": "ada"})).json() == {
        "subject": "ada"
    }
    assert_error(await client.post(f"{API}/recognition/subjects", json={"subject": "ADA"}), 400, 43)
    assert_error(await client.post(f"{API}/recognition/subjects", json={"subject": " "}), 400, 26)
    assert (await client.get(f"{API}/recognition/subjects")).json() == {"subjects": ["ada"]}
    assert (await client.get(f"{API}/recognition/subjects/")).json() == {"subjects": ["ada"]}
    # The same person natively.
    [ada] = (await client.get("/v1/people")).json()["items"]
    assert ada["name"] == "ada" and ada["face_count"] == 0

    examples = await enroll_training_set(client)
    page = (await client.get(f"{API}/recognition/faces", params={"size": 4, "page": 1})).json()
    assert (
        page["page_number"],
        page["page_size"],
        page["total_pages"],
        page["total_elements"],
    ) == (
        1,
        4,
        3,
        9,
    )
    assert len(page["faces"]) == 4
    # CompreFace's pages go through Spring Data's pageable resolver, which corrects a bad page
    # or size instead of refusing it: page < 0 or not a number → 0; size < 1 or not a number →
    # 20; size > 2000 → 2000. Clients that ask for "everything" (size=5000) get a page.
    for params, expected in (
        ({"size": "0"}, (0, 20, 1)),
        ({"size": "-3", "page": "-1"}, (0, 20, 1)),
        ({"size": "lots", "page": "first"}, (0, 20, 1)),
        ({"size": "5000"}, (0, 2000, 1)),
        ({"size": "99999999999"}, (0, 20, 1)),  # past Java's int: NumberFormatException
        ({"size": "2", "page": "+4"}, (4, 2, 5)),
        ({"size": "", "page": ""}, (0, 20, 1)),
    ):
        response = await client.get(f"{API}/recognition/faces", params=params)
        assert response.status_code == 200, (params, response.text)
        page = response.json()
        assert (page["page_number"], page["page_size"], page["total_pages"]) == expected, params
        assert len(page["faces"]) == min(9 - expected[0] * expected[1], expected[1])
    obama = (await client.get(f"{API}/recognition/faces", params={"subject": "OBAMA"})).json()
    assert sorted(f["image_id"] for f in obama["faces"]) == sorted(examples["obama"])

    # Rename; renaming onto an existing subject merges the two.
    assert (
        await client.put(f"{API}/recognition/subjects/ada", json={"subject": "ada l."})
    ).json() == {"updated": True}
    assert (
        await client.put(f"{API}/recognition/subjects/biden", json={"subject": "obama"})
    ).json() == {"updated": True}
    merged = (await client.get(f"{API}/recognition/faces", params={"subject": "obama"})).json()
    assert merged["total_elements"] == 4
    assert "biden" not in (await client.get(f"{API}/recognition/subjects")).json()["subjects"]
    assert_error(
        await client.put(f"{API}/recognition/subjects/nobody", json={"subject": "x"}), 404, 42
    )

    # Delete one example, several (unknown ids ignored), a subject's, a subject, everything.
    first, second = examples["rose_leslie"]
    deleted = (await client.delete(f"{API}/recognition/faces/{first}")).json()
    assert deleted == {"image_id": first, "subject": "rose_leslie"}
    assert_error(await client.delete(f"{API}/recognition/faces/{first}"), 404, 44)
    unknown = "6b135f5b-a365-4522-b1f1-4c9ac2dd0728"
    response = await client.post(f"{API}/recognition/faces/delete", json=[second, unknown])
    assert response.json() == [{"image_id": second, "subject": "rose_leslie"}]
    response = await client.delete(f"{API}/recognition/faces", params={"subject": "kit_harington"})
    assert response.json() == {"deleted": 2}
    assert (
        await client.delete(f"{API}/recognition/faces", params={"subject": "nobody"})
    ).json() == {"deleted": 0}
    assert (await client.delete(f"{API}/recognition/subjects/obama")).json() == {"subject": "obama"}
    assert_error(await client.delete(f"{API}/recognition/subjects/obama"), 404, 42)
    remaining = (await client.get(f"{API}/recognition/subjects")).json()["subjects"]
    assert sorted(remaining) == ["ada l.", "alex_lacamoire", "rose_leslie"]
    assert (await client.delete(f"{API}/recognition/subjects")).json() == {"deleted": 3}
    assert (await stored_rows(engine))["people"] == 0


async def test_bad_requests_get_compreface_errors_and_store_nothing(
    client, worker, engine, make_key
):
    await client.post(f"{API}/recognition/subjects", json={"subject": "ada"})
    before = await stored_rows(engine)
    recognize = f"{API}/recognition/recognize"

    assert_error(await client.post(recognize, files={"file": ("x.jpg", b"not an image")}), 400, 21)
    assert_error(await client.post(recognize, files={"file": ("x.jpg", b"")}), 400, 21)
    assert_error(await client.post(recognize, files={"other": ("x.jpg", b"abc")}), 400, 34)
    assert_error(await client.post(recognize, json={"file": "@@not base64@@"}), 400, 21)
    assert_error(await client.post(recognize, json={"image": "abc"}), 400, 5)
    assert_error(await client.post(recognize, content=b"plain text"), 400, 34)
    # JSON nested past Python's recursion limit is a bad body like any other, not a 500.
    deep = {"content": b"[" * 5000, "headers": {"Content-Type": "application/json"}}
    assert_error(await client.post(recognize, **deep), 400, 34)
    assert_error(
        await client.post(recognize, params={"limit": -1}, files=jpeg("scenes/t1.jpg")), 400, 26
    )
    assert_error(
        await client.post(recognize, params={"prediction_count": 0}, files=jpeg("scenes/t1.jpg")),
        400,
        26,
    )
    assert_error(
        await client.post(recognize, params={"limit": "many"}, files=jpeg("scenes/t1.jpg")), 400, 26
    )
    # A count past int64 reached Postgres as a LIMIT (a 500); past 1000 it is refused.
    for count in (1001, 2**63):
        assert_error(
            await client.post(
                recognize, params={"prediction_count": count}, files=jpeg("scenes/t1.jpg")
            ),
            400,
            26,
        )
        assert_error(
            await client.post(
                f"{API}/recognition/embeddings/recognize",
                params={"prediction_count": count},
                json={"embeddings": [[0.1] * 192]},
            ),
            400,
            26,
        )
    # Too many pixels is the body's error (413, code 21), as a too large body is.
    assert_error(await client.post(recognize, files={"file": ("b.png", bomb_png())}), 413, 21)
    faces = f"{API}/recognition/faces"
    assert_error(await client.post(faces, files=jpeg("faces/test/obama1.jpg")), 400, 33)
    assert_error(
        await client.post(faces, params={"subject": ""}, files=jpeg("faces/test/obama1.jpg")),
        400,
        26,
    )
    # Subject names Postgres cannot store (NUL, a lone surrogate): 400 code 26 where a name is
    # given, "no such subject" where one is looked up; never a 500 (or a 503 "unreachable").
    for name in ("a\u0000b", "a\ud800"):
        body = json.dumps({"subject": name})  # JSON escapes: httpx would refuse the surrogate
        json_body = {"content": body, "headers": {"Content-Type": "application/json"}}
        assert_error(await client.post(f"{API}/recognition/subjects", **json_body), 400, 26)
        assert_error(await client.put(f"{API}/recognition/subjects/ada", **json_body), 400, 26)
    for path in ("a%00b", "a%ED%A0%80"):
        subject = f"{API}/recognition/subjects/{path}"
        assert_error(await client.put(subject, json={"subject": "x"}), 404, 42)
        assert_error(await client.delete(subject), 404, 42)
    listed = await client.get(f"{faces}?subject=%00")
    assert listed.status_code == 200 and listed.json()["faces"] == [], listed.text
    deleted = await client.delete(f"{faces}?subject=a%00")  # an unknown subject: nothing
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": 0}), deleted.text
    assert_error(
        await client.post(f"{faces}?subject=a%00", files=jpeg("faces/test/obama1.jpg")), 400, 26
    )
    assert await stored_rows(engine) == before

    # Refused examples keep nothing, not even their new subject: no face, two faces.
    assert_error(
        await client.post(faces, params={"subject": "dog"}, files=jpeg("scenes/dog.jpg")), 400, 28
    )
    assert_error(
        await client.post(
            faces, params={"subject": "pair"}, files=jpeg("faces/test/obama_and_biden.jpg")
        ),
        400,
        31,
    )
    assert await stored_rows(engine) == before
    # No face to recognize: code 28, which Double Take reads as "no faces".
    assert_error(await client.post(recognize, files=jpeg("scenes/dog.jpg")), 400, 28)
    # det_prob_threshold is on CompreFace's detector scale: above compreface.max_det_prob_threshold
    # (0.7; SCRFD scores clear faces 0.76-0.89) it is lowered to it, so 0.99 still finds faces.
    response = await client.post(
        recognize, params={"det_prob_threshold": 0.99}, files=jpeg("scenes/t1.jpg")
    )
    assert response.status_code == 200 and len(response.json()["result"]) == 6

    unknown = "6b135f5b-a365-4522-b1f1-4c9ac2dd0728"
    assert_error(
        await client.post(f"{faces}/{unknown}/verify", files=jpeg("faces/test/obama1.jpg")), 404, 44
    )
    assert_error(await client.delete(f"{API}/recognition/subjects/nobody"), 404, 42)
    assert_error(
        await client.post(f"{API}/recognition/embeddings/recognize", json={"embeddings": [[1, 2]]}),
        400,
        36,
    )
    assert_error(await client.post(f"{API}/recognition/embeddings/recognize", json={}), 400, 5)

    # Keys: none, unknown, too weak a scope.
    headers = {"x-api-key": ""}
    assert_error(await client.get(f"{API}/recognition/subjects", headers=headers), 400, 20)
    headers = {"x-api-key": "lk_nope_nope"}
    assert_error(await client.get(f"{API}/recognition/subjects", headers=headers), 404, 10)
    reader = await make_key("reader", scopes=(Scope.read,))
    headers = {"x-api-key": reader}
    assert (await client.get(f"{API}/recognition/subjects", headers=headers)).json() == {
        "subjects": []  # people are private to the key that created them
    }
    assert_error(
        await client.post(f"{API}/recognition/subjects", json={"subject": "x"}, headers=headers),
        403,
        1,
    )


def test_age_and_gender_carry_compreface_probability_for_double_take():
    """With a genderage model (the test pack has none, so this face is built by hand): age and
    gender come with probability 1.0, as CompreFace's InsightFace plugins answer for the same
    model, and Double Take's parse of them (api/src/util/detectors/compreface.js:
    `parseFloat((obj.age.probability * 100).toFixed(2))`) reads 100, not NaN."""
    job = Job(id=uuid.uuid4(), width=640, height=480)
    detection = Detection(
        kind="face",
        label="face",
        score=0.83,
        box=[10.4, 20.6, 110.2, 150.9],
        landmarks=None,
        attributes={"age": 34, "gender": "female"},
    )
    face = gallery.Face(detection, FaceEmbedding(model="mobilefacenet", dim=2, embedding=[1, 0]))
    options = service.Options(plugins=frozenset({"age", "gender"}))
    out = FaceOut(**service.face_fields(job, face, options)).model_dump(
        mode="json", exclude_none=True
    )
    assert out["age"] == {"probability": 1.0, "low": 34, "high": 34}
    assert out["gender"] == {"probability": 1.0, "value": "female"}
    assert out["box"] == {"probability": 0.83, "x_min": 10, "y_min": 20, "x_max": 111, "y_max": 151}
    double_take = {k: float(f"{out[k]['probability'] * 100:.2f}") for k in ("age", "gender")}
    assert double_take == {"age": 100.0, "gender": 100.0}


async def test_subject_names_follow_compreface_s_rules(client):
    """CompreFace's SubjectDto: at most 50 characters (code 26) and none of ; / \\ (code 36),
    for create and rename. A subject named "a/b" was created, then could not be deleted by
    its path."""
    for name, code in (("a/b", 36), ("a;b", 36), ("a\\b", 36), ("x" * 51, 26)):
        response = await client.post(f"{API}/recognition/subjects", json={"subject": name})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["code"] == code, (name, response.json())
    assert "between 1 and 50" in response.json()["message"]
    assert (await client.get(f"{API}/recognition/subjects")).json() == {"subjects": []}
    fifty = "x" * 50
    created = await client.post(f"{API}/recognition/subjects", json={"subject": fifty})
    assert created.status_code == 201, created.text
    renamed = await client.put(f"{API}/recognition/subjects/{fifty}", json={"subject": "x/y"})
    assert renamed.status_code == 400 and renamed.json()["code"] == 36
    assert "special characters" in renamed.json()["message"]
    assert (await client.get(f"{API}/recognition/subjects")).json() == {"subjects": [fifty]}
