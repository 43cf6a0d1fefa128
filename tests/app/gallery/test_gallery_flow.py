"""The gallery end to end: API + a real worker (consumer) + Postgres/pgvector + the real models,
on ../shared/images/faces (enrolled with the MobileFaceNet stand-in)."""

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator

import cv2
import httpx
import pytest
from sqlalchemy import text

from app.security import Scope
from tests.conftest import SHARED_IMAGES, shared_image
from tests.images import decode, encode

TRAIN = SHARED_IMAGES / "faces" / "train"


@pytest.fixture
async def worker(make_consumer) -> AsyncIterator[None]:
    """A consumer running beside the test, as a worker process would in production."""
    stop = asyncio.Event()
    task = asyncio.create_task(make_consumer(block_ms=50).run(stop))
    yield
    stop.set()
    await task


def files(*paths):  # type: ignore[no-untyped-def]
    return [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


async def enroll_training_set(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    people = {}
    for folder in sorted(TRAIN.iterdir()):
        person = (await client.post("/v1/people", json={"name": folder.name})).json()
        response = await client.post(
            f"/v1/people/{person['id']}/faces", files=files(*sorted(folder.iterdir()))
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["enrolled"]) == len(list(folder.iterdir()))
        people[folder.name] = person["id"]
    return people


async def count(engine, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def identify(client, relative: str, **kwargs) -> list[dict]:  # type: ignore[no-untyped-def]
    image = shared_image(relative)
    response = await client.post(
        "/v1/identify",
        files={"image": (relative.rsplit("/", 1)[-1], image, "image/jpeg")},
        **kwargs,
    )
    assert response.status_code == 200, response.text
    return response.json()["faces"]


async def search(client, relative: str) -> list[dict]:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/faces/search", files={"image": ("q.jpg", shared_image(relative), "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


async def assert_no_job_data(engine, storage) -> None:  # type: ignore[no-untyped-def]
    """Nothing of any job is left: no row, detection, job face embedding or stored image."""
    for table in ("jobs", "detections", "face_embeddings"):
        assert await count(engine, f"SELECT count(*) FROM {table}") == 0, table
    assert not storage.root.exists() or list(storage.root.iterdir()) == []


def names(faces: list[dict]) -> list[str | None]:
    return sorted((f["identity"]["name"] if f["identity"] else "unknown") for f in faces)


async def test_enrolled_people_are_identified_and_strangers_are_unknown(client, worker, engine):
    await enroll_training_set(client)
    assert await count(engine, "SELECT count(*) FROM person_faces") == 9
    assert (
        await count(
            engine, "SELECT count(*) FROM person_faces WHERE model = 'mobilefacenet' AND dim = 192"
        )
        == 9
    )

    obama = await identify(client, "faces/test/obama1.jpg")
    assert names(obama) == ["obama"] and obama[0]["identity"]["similarity"] >= 0.60
    assert names(await identify(client, "faces/test/alex_lacamoire1.jpg")) == ["alex_lacamoire"]
    # SCRFD finds a third, small face in the background of this photo: not enrolled, unknown.
    assert names(await identify(client, "faces/test/obama_and_biden.jpg")) == [
        "biden",
        "obama",
        "unknown",
    ]
    strangers = await identify(client, "scenes/t1.jpg")
    assert len(strangers) == 6 and all(f["unknown"] and f["identity"] is None for f in strangers)

    # Identity is stored with the job's detections too, like every result.
    async with engine.connect() as connection:
        labelled = await connection.execute(
            text("SELECT attributes->'identity'->>'name' FROM detections WHERE kind = 'face'")
        )
        assert {"obama", "biden", "alex_lacamoire"} <= {row[0] for row in labelled}


async def test_verify_says_same_for_one_person_and_different_for_two(client, worker):
    async def verify(a: str, b: str) -> dict:  # type: ignore[type-arg]
        response = await client.post(
            "/v1/verify",
            files={
                "image_a": ("a.jpg", shared_image(a), "image/jpeg"),
                "image_b": ("b.jpg", shared_image(b), "image/jpeg"),
            },
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    same = [
        ("faces/train/obama/obama.jpg", "faces/test/obama1.jpg"),
        ("faces/train/biden/biden.jpg", "faces/train/biden/biden2.jpg"),
        ("faces/train/rose_leslie/img1.jpg", "faces/train/rose_leslie/img2.jpg"),
    ]
    different = [
        ("faces/train/obama/obama.jpg", "faces/train/biden/biden.jpg"),
        ("faces/train/kit_harington/john1.jpeg", "faces/train/rose_leslie/img1.jpg"),
        ("faces/train/alex_lacamoire/img1.jpg", "faces/test/obama1.jpg"),
    ]
    for a, b in same:
        result = await verify(a, b)
        assert result["same_person"] is True, (a, b, result)
    for a, b in different:
        result = await verify(a, b)
        assert result["same_person"] is False, (a, b, result)


async def test_bad_enrollments_are_422_naming_the_image_and_store_nothing(
    client, worker, engine, storage
):
    person = (await client.post("/v1/people", json={"name": "nobody"})).json()
    url = f"/v1/people/{person['id']}/faces"
    dog = SHARED_IMAGES / "scenes" / "dog.jpg"
    two = SHARED_IMAGES / "faces" / "test" / "obama_and_biden.jpg"
    good = TRAIN / "obama" / "obama.jpg"

    no_face = await client.post(url, files=files(good, dog))
    assert no_face.status_code == 422
    assert no_face.json()["error"] == "unusable_face"
    assert "dog.jpg: no face found" in no_face.json()["detail"]

    several = await client.post(url, files=files(two))
    assert several.status_code == 422
    assert "obama_and_biden.jpg: 3 faces found" in several.json()["detail"]

    not_image = await client.post(url, files=[("images", ("notes.txt", b"hello", "text/plain"))])
    assert not_image.status_code == 415  # as on /v1/images: one answer for one bad file
    assert not_image.json()["error"] == "unsupported_image_type"
    assert not_image.json()["detail"].startswith(
        "notes.txt: not a JPEG, PNG, WebP, BMP, GIF or TIFF image"
    )

    assert await count(engine, "SELECT count(*) FROM person_faces") == 0
    # The refused photos went through the workers as jobs; those jobs are gone too.
    await assert_no_job_data(engine, storage)


async def test_small_blurred_and_tilted_faces_are_refused_with_the_reason(
    client, worker, engine, storage
):
    """The quality figures the worker measures reach the enrollment check: each photo below is
    the same good photo, made too small, blurred or turned on its side."""
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    good = decode((TRAIN / "obama" / "obama.jpg").read_bytes())
    height, width = good.shape[:2]
    small = cv2.resize(good, (width // 8, height // 8), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(good, (0, 0), sigmaX=6)
    tilted = cv2.rotate(good, cv2.ROTATE_90_CLOCKWISE)
    for photo, reason in (
        (small, "face too small"),
        (blurred, "face too blurry"),
        (tilted, "extreme pose: head tilted"),
    ):
        response = await client.post(
            f"/v1/people/{person['id']}/faces",
            files=[("images", ("photo.jpg", encode(photo, ".jpg"), "image/jpeg"))],
        )
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("cannot enroll: photo.jpg: ") and reason in detail, detail
    assert await count(engine, "SELECT count(*) FROM person_faces") == 0
    await assert_no_job_data(engine, storage)


async def test_a_near_duplicate_is_reported_not_stored_twice(client, worker, engine):
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    url = f"/v1/people/{person['id']}/faces"
    photo = TRAIN / "obama" / "obama.jpg"
    first = (await client.post(url, files=files(photo))).json()
    again = (await client.post(url, files=files(photo))).json()
    assert len(first["enrolled"]) == 1 and again["enrolled"] == []
    assert again["duplicates"][0]["existing_face_id"] == first["enrolled"][0]["id"]
    assert again["duplicates"][0]["similarity"] > 0.99
    assert await count(engine, "SELECT count(*) FROM person_faces") == 1


async def test_deleting_a_person_deletes_their_embeddings_and_they_become_unknown(
    client, worker, engine, storage
):
    people = await enroll_training_set(client)
    obama = people["obama"]
    # The enrollment jobs are gone once their faces are copied: person_faces holds the only
    # copy of each embedding, with no link to a job.
    await assert_no_job_data(engine, storage)
    assert await count(engine, "SELECT count(*) FROM person_faces WHERE source_job_id IS NULL") == 9
    assert (
        await count(
            engine, "SELECT count(*) FROM person_faces WHERE person_id = :p", p=uuid.UUID(obama)
        )
        == 2
    )
    assert (await client.delete(f"/v1/people/{obama}")).status_code == 204

    assert (
        await count(
            engine, "SELECT count(*) FROM person_faces WHERE person_id = :p", p=uuid.UUID(obama)
        )
        == 0
    )
    assert await count(engine, "SELECT count(*) FROM person_faces") == 7
    assert (await client.get(f"/v1/people/{obama}")).status_code == 404
    await assert_no_job_data(engine, storage)
    # No past face is found: the enrollment photos never became searchable job faces.
    assert await search(client, "faces/train/obama/obama.jpg") == []
    # The worker reads the gallery per batch: no restart, the change is seen at once.
    assert names(await identify(client, "faces/test/obama1.jpg")) == ["unknown"]


async def test_deleting_a_person_unnames_the_faces_past_jobs_identified_as_them(
    client, worker, engine, storage
):
    """A face a job identified as the person is theirs: deleting the person forgets its
    embedding and crop, and the job keeps an unknown face's box, its name gone from the result
    and from the processed image drawn before."""
    people = await enroll_training_set(client)
    seen = await client.post(
        "/v1/images?wait=30",
        files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    job = seen.json()
    [face] = job["detections"]
    assert face["attributes"]["identity"]["name"] == "obama"
    drawn = await client.get(f"/v1/jobs/{job['id']}/processed-image")
    assert drawn.status_code == 200
    [key] = [p.name for p in storage.root.iterdir() if p.name.endswith(".processed.jpg")]
    assert (
        await count(
            engine, "SELECT count(*) FROM face_embeddings WHERE detection_id = :d", d=face["id"]
        )
        == 1
    )
    assert (await client.get(f"/v1/faces/{face['id']}/thumbnail")).status_code == 200
    # A face of another job whose runner-up was obama (biden's, beside him).
    pair = await client.post(
        "/v1/images?wait=30",
        files={"image": ("p.jpg", shared_image("faces/test/obama_and_biden.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    runner_up_obama = [
        d
        for d in pair.json()["detections"]
        if (d["attributes"]["runner_up"] or {}).get("person_id") == people["obama"]
        and (d["attributes"]["identity"] or {}).get("name") != "obama"
    ]
    assert runner_up_obama, pair.json()["detections"]

    assert (await client.delete(f"/v1/people/{people['obama']}")).status_code == 204

    after = (await client.get(f"/v1/jobs/{job['id']}")).json()
    [unnamed] = after["detections"]
    assert unnamed["box"] == face["box"]
    assert unnamed["attributes"]["identity"] is None and unnamed["attributes"]["unknown"] is True
    assert (
        await count(
            engine, "SELECT count(*) FROM face_embeddings WHERE detection_id = :d", d=face["id"]
        )
        == 0
    )
    assert (
        await count(engine, "SELECT count(*) FROM face_crops WHERE detection_id = :d", d=face["id"])
        == 0
    )
    assert (await client.get(f"/v1/faces/{face['id']}/thumbnail")).status_code == 404
    assert not (storage.root / key).exists()  # drawn again, without the name, when asked
    redrawn = await client.get(f"/v1/jobs/{job['id']}/processed-image")
    assert redrawn.status_code == 200 and redrawn.content != drawn.content
    # Their name and id went from the runner-up of the other faces too; those faces keep
    # their own identity.
    kept = {
        d["id"]: d for d in (await client.get(f"/v1/jobs/{pair.json()['id']}")).json()["detections"]
    }
    for before in runner_up_obama:
        assert kept[before["id"]]["attributes"]["runner_up"] is None
        assert kept[before["id"]]["attributes"]["identity"] == before["attributes"]["identity"]
    remains = json.dumps([d["attributes"] for d in kept.values()])
    assert "obama" not in remains and people["obama"] not in remains
    # Nobody else's identified faces were touched.
    again = await client.post(
        "/v1/images?wait=30",
        files={"image": ("b.jpg", shared_image("faces/test/obama_and_biden.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    assert "biden" in {
        (d["attributes"]["identity"] or {}).get("name") for d in again.json()["detections"]
    }
    assert (await client.delete(f"/v1/people/{people['obama']}")).status_code == 404


async def test_deleting_an_enrolled_face_deletes_its_embedding(client, worker, engine):
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    enrolled = await client.post(
        f"/v1/people/{person['id']}/faces", files=files(*sorted((TRAIN / "obama").iterdir()))
    )
    first, second = (face["id"] for face in enrolled.json()["enrolled"])
    url = f"/v1/people/{person['id']}/faces/{first}"

    assert (await client.delete(url)).status_code == 204
    detail = (await client.get(f"/v1/people/{person['id']}")).json()
    assert detail["face_count"] == 1 and [f["id"] for f in detail["faces"]] == [second]
    assert await count(engine, "SELECT count(*) FROM person_faces WHERE id = :f", f=first) == 0
    assert await count(engine, "SELECT count(*) FROM face_embeddings") == 0  # no job copy

    again = await client.delete(url)
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    other = (await client.post("/v1/people", json={"name": "someone else"})).json()
    wrong_person = await client.delete(f"/v1/people/{other['id']}/faces/{second}")
    assert wrong_person.status_code == 404
    assert await count(engine, "SELECT count(*) FROM person_faces") == 1


async def test_an_unknown_face_is_found_in_past_jobs_and_promoted(client, worker):
    seen = await client.post(
        "/v1/images?wait=30",
        files={"image": ("obama1.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    [first] = seen.json()["detections"]
    assert first["attributes"]["unknown"] is True

    search = await client.post(
        "/v1/faces/search",
        files={"image": ("q.jpg", shared_image("faces/train/obama/obama.jpg"), "image/jpeg")},
    )
    assert search.status_code == 200, search.text
    best = search.json()["results"][0]
    assert best["face_id"] == first["id"] and best["similarity"] >= 0.60

    promoted = await client.post(f"/v1/faces/{best['face_id']}/promote", json={"name": "obama"})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["person"]["name"] == "obama"
    assert names(await identify(client, "faces/train/obama/obama2.jpg")) == ["obama"]


async def test_an_unknown_face_is_promoted_into_an_existing_person(client, worker, engine):
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    seen = await client.post(
        "/v1/identify", files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"))}
    )
    [face] = seen.json()["faces"]
    assert face["unknown"]  # the person has no face yet

    promoted = await client.post(
        f"/v1/faces/{face['face_id']}/promote", json={"person_id": person["id"]}
    )
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["person"]["id"] == person["id"] and body["person"]["face_count"] == 1
    # A promoted face keeps its link to the past job it came from.
    assert body["enrolled"][0]["source_job_id"] == seen.json()["job_id"]
    assert await count(engine, "SELECT count(*) FROM people") == 1  # no new person
    assert names(await identify(client, "faces/train/obama/obama2.jpg")) == ["obama"]

    # Deleting the person deletes their faces; the past job is its owner's, and stays until
    # retention or DELETE /v1/jobs/{id} (README, Face recognition).
    assert (await client.delete(f"/v1/people/{person['id']}")).status_code == 204
    assert await count(engine, "SELECT count(*) FROM person_faces") == 0
    assert (await client.get(f"/v1/jobs/{seen.json()['job_id']}")).status_code == 200


async def test_promoting_into_a_missing_or_another_key_s_person_is_404(
    client, worker, make_key, engine
):
    from app.security import Scope

    mine = {"X-API-Key": await make_key("mine", scopes=(Scope.read, Scope.write))}
    theirs = {"X-API-Key": await make_key("theirs", scopes=(Scope.read, Scope.write))}
    [face] = await identify(client, "faces/test/obama1.jpg", headers=mine)
    their_person = (await client.post("/v1/people", json={"name": "x"}, headers=theirs)).json()

    for person_id in (str(uuid.uuid4()), their_person["id"]):
        response = await client.post(
            f"/v1/faces/{face['face_id']}/promote", json={"person_id": person_id}, headers=mine
        )
        assert response.status_code == 404, response.text
        assert response.json() == {"error": "not_found", "detail": f"no person with id {person_id}"}
    assert await count(engine, "SELECT count(*) FROM person_faces") == 0


async def test_people_are_listed_searched_renamed_and_scoped_to_their_key(client, make_key, app):
    for name in ("Ada Lovelace", "Alan Turing", "Grace Hopper"):
        assert (await client.post("/v1/people", json={"name": name})).status_code == 201
    page = (await client.get("/v1/people", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await client.get("/v1/people", params={"cursor": page["next_cursor"]})).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    found = (await client.get("/v1/people", params={"name": "TURING"})).json()["items"]
    assert [p["name"] for p in found] == ["Alan Turing"]

    renamed = await client.patch(f"/v1/people/{found[0]['id']}", json={"name": "A. M. Turing"})
    assert renamed.json()["name"] == "A. M. Turing"

    from app.security import Scope

    other = await make_key("other", scopes=(Scope.read, Scope.write))
    headers = {"X-API-Key": other}
    assert (await client.get(f"/v1/people/{found[0]['id']}", headers=headers)).status_code == 404
    assert (await client.get("/v1/people", headers=headers)).json()["items"] == []


async def test_names_are_trimmed_and_a_blank_name_is_refused(client):
    created = await client.post("/v1/people", json={"name": "  Ada Lovelace "})
    assert created.status_code == 201 and created.json()["name"] == "Ada Lovelace"
    for blank in ("", "   "):
        refused = await client.post("/v1/people", json={"name": blank})
        assert refused.status_code == 422, refused.text
        renamed = await client.patch(f"/v1/people/{created.json()['id']}", json={"name": blank})
        assert renamed.status_code == 422, renamed.text
    assert [p["name"] for p in (await client.get("/v1/people")).json()["items"]] == ["Ada Lovelace"]


async def test_without_a_worker_a_sync_call_ends_with_a_clear_504(client, app):
    app.state.lookout.settings.gallery.wait_s = 0.3
    try:
        response = await client.post(
            "/v1/identify",
            files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        )
    finally:
        app.state.lookout.settings.gallery.wait_s = 30.0
    assert response.status_code == 504
    assert response.json()["error"] == "worker_timeout"
    assert "workers are running" in response.json()["detail"]


async def test_the_cli_enrolls_one_folder_per_person(client, worker, engine):
    from clients.gallery import enroll_people, people_in

    lines = await enroll_people(client, people_in(TRAIN), show_progress=False)
    assert len(lines) == 5 and all(line.startswith("ok") for line in lines), lines
    assert await count(engine, "SELECT count(*) FROM person_faces") == 9
    again = await enroll_people(client, people_in(TRAIN), show_progress=False)
    assert "0 enrolled, 2 duplicate(s)" in again[1]  # biden: reused, nothing stored twice
    assert await count(engine, "SELECT count(*) FROM people") == 5


async def test_the_cli_import_sends_a_folder_in_parts_and_adds_up_their_counts(
    client, worker, engine
):
    """`lookout people import`: a folder larger than one request goes as several imports, one
    queued ahead of the one running; the report is their sum."""
    from clients.gallery import import_parts, import_people, people_in

    people = people_in(TRAIN)
    assert len(import_parts(people, part_bytes=400_000)) >= 4
    report = await import_people(
        client, people, part_bytes=400_000, show_progress=False, poll_s=0.1
    )
    assert (report.photos, report.enrolled, report.refused, report.people_created) == (9, 9, 0, 5)
    assert report.failures == [] and report.problems == []
    again = await import_people(client, people, show_progress=False, poll_s=0.1)
    assert (again.enrolled, again.duplicates, again.people_created) == (0, 9, 0)
    assert await count(engine, "SELECT count(*) FROM person_faces") == 9


async def test_an_enrollment_no_worker_finished_leaves_no_job_behind(client, app, engine, storage):
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    app.state.lookout.settings.gallery.wait_s = 0.3
    try:
        response = await client.post(
            f"/v1/people/{person['id']}/faces", files=files(TRAIN / "obama" / "obama.jpg")
        )
    finally:
        app.state.lookout.settings.gallery.wait_s = 30.0
    assert response.status_code == 504, response.text
    await assert_no_job_data(engine, storage)


async def test_keys_off_is_one_gallery_listed_enrolled_and_identified_alike(
    settings, client, worker
):
    """Dev mode (keys off) is one anonymous owner: it sees only the people made with keys off,
    enrolls only into them, and identify finds whom it enrolled. A key's people stay its own."""
    from app.settings import AuthSettings
    from tests.conftest import serve_app

    keyed = (await client.post("/v1/people", json={"name": "keyed"})).json()  # an admin key's
    keys_off = settings.model_copy(update={"auth": AuthSettings(enabled=False), "env": "dev"})
    async with serve_app(keys_off) as anonymous:
        listed = (await anonymous.get("/v1/people")).json()["items"]
        assert [p["name"] for p in listed] == []
        assert (await anonymous.get(f"/v1/people/{keyed['id']}")).status_code == 404
        refused = await anonymous.post(
            f"/v1/people/{keyed['id']}/faces", files=files(TRAIN / "obama" / "obama.jpg")
        )
        assert refused.status_code == 404

        person = (await anonymous.post("/v1/people", json={"name": "barack"})).json()
        enrolled = await anonymous.post(
            f"/v1/people/{person['id']}/faces", files=files(*sorted((TRAIN / "obama").iterdir()))
        )
        assert enrolled.status_code == 200, enrolled.text
        assert [p["name"] for p in (await anonymous.get("/v1/people")).json()["items"]] == [
            "barack"
        ]
        assert names(await identify(anonymous, "faces/test/obama1.jpg")) == ["barack"]
    # The admin key still sees every key's people, the anonymous one included.
    everyone = {p["name"] for p in (await client.get("/v1/people")).json()["items"]}
    assert everyone == {"keyed", "barack"}


async def test_a_refused_cli_enrollment_leaves_no_empty_person(client, worker, engine):
    from clients.gallery import enroll_people

    dog = SHARED_IMAGES / "scenes" / "dog.jpg"
    lines = await enroll_people(client, {"rex": [dog]}, show_progress=False)
    assert lines[0].startswith("error rex:") and "dog.jpg: no face found" in lines[0], lines
    assert await count(engine, "SELECT count(*) FROM people") == 0
    # A person who was there before keeps existing after a refused photo.
    await client.post("/v1/people", json={"name": "rex"})
    await enroll_people(client, {"rex": [dog]}, show_progress=False)
    assert await count(engine, "SELECT count(*) FROM people WHERE name = 'rex'") == 1


async def test_gallery_calls_keep_marked_jobs_that_face_search_and_stats_leave_out(
    client, worker, engine
):
    """Issue 12: identify, verify and search kept jobs that later matched the same photo at
    similarity 1.0 in face search and counted as frames in /v1/stats/counts. They are kept
    (job history; identify's unknown faces are sightings), marked with their purpose."""
    query = "faces/test/obama1.jpg"
    seen = await client.post(  # a sighting: an upload of another photo of him
        "/v1/images?wait=30",
        files={"image": ("obama.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes())},
    )
    assert seen.json()["status"] == "done", seen.text
    for _ in range(2):
        await identify(client, query)
        verified = await client.post(
            "/v1/verify",
            files={
                "image_a": ("a.jpg", shared_image(query), "image/jpeg"),
                "image_b": ("b.jpg", shared_image(query), "image/jpeg"),
            },
        )
        assert verified.status_code == 200 and verified.json()["same_person"], verified.text
        await search(client, query)

    # Only the upload is found; no earlier question about the same photo at 1.0.
    found = await search(client, query)
    assert [r["job_id"] for r in found] == [seen.json()["id"]], found
    # Only the upload is counted: one frame, one face.
    stats = (await client.get("/v1/stats/counts", params={"bucket": "1d"})).json()
    assert stats["totals"] == {"face": 1}
    assert sum(b["frames"] for b in stats["buckets"]) == 1
    # The calls' jobs are history all the same, each marked with its purpose.
    jobs = (await client.get("/v1/jobs", params={"limit": 100})).json()["items"]
    purposes = sorted(j["purpose"] for j in jobs)
    assert purposes == ["compare"] * 7 + ["detect"] + ["identify"] * 2, purposes


def rounded(values: list[float], digits: int) -> bool:
    return all(round(v, digits) == v for v in values)


async def test_identify_and_search_answer_boxes_to_a_tenth_of_a_pixel(client, worker):
    """Issue 12: jobs answered boxes to 0.1 px, identify and face search at full float
    precision (539.7227172851562). One precision everywhere."""
    seen = await client.post(
        "/v1/images?wait=30",
        files={"image": ("obama.jpg", (TRAIN / "obama" / "obama.jpg").read_bytes())},
    )
    [detection] = seen.json()["detections"]
    [face] = await identify(client, "faces/test/obama1.jpg")
    response = await client.post(
        "/v1/faces/search", files={"image": ("q.jpg", shared_image("faces/test/obama1.jpg"))}
    )
    [found] = response.json()["results"]
    assert found["box"] == detection["box"]  # the same face, the same numbers as its job
    for box in (face["box"], found["box"], response.json()["query_box"]):
        assert len(box) == 4 and rounded(box, 1), box
    assert rounded([face["score"]], 4)


async def test_a_merged_person_s_faces_in_past_jobs_are_the_target_s_and_go_with_it(
    client, worker, engine
):
    """Merging A into B left past jobs pointing at A (deleted) and, B deleted later, A's
    identified faces kept their embeddings and crops: the merge re-points them to B."""
    people = await enroll_training_set(client)
    seen = await client.post(
        "/v1/images?wait=30",
        files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    [face] = seen.json()["detections"]
    assert face["attributes"]["identity"]["person_id"] == people["obama"]
    barack = (await client.post("/v1/people", json={"name": "Barack"})).json()
    merged = await client.post(
        f"/v1/people/{barack['id']}/merge", json={"person_ids": [people["obama"]]}
    )
    assert merged.status_code == 200, merged.text
    [after] = (await client.get(f"/v1/jobs/{seen.json()['id']}")).json()["detections"]
    identity = after["attributes"]["identity"]
    # The target's now; the name the job recorded stays, as after a rename.
    assert (identity["person_id"], identity["name"]) == (barack["id"], "obama")
    assert identity["similarity"] == face["attributes"]["identity"]["similarity"]

    assert (await client.delete(f"/v1/people/{barack['id']}")).status_code == 204
    [gone] = (await client.get(f"/v1/jobs/{seen.json()['id']}")).json()["detections"]
    assert gone["attributes"]["identity"] is None
    assert (
        await count(
            engine, "SELECT count(*) FROM face_embeddings WHERE detection_id = :d", d=face["id"]
        )
        == 0
    )
    assert (await client.get(f"/v1/faces/{face['id']}/thumbnail")).status_code == 404


async def test_a_face_is_promoted_only_to_a_person_of_its_own_key(client, worker, make_key, app):  # type: ignore[no-untyped-def]
    """An admin could promote key A's face to key B's person (B's identify then matched A's
    face), or to a new person of the admin's own: the person is the face's owner's."""
    owner = await make_key("owner", scopes=(Scope.read, Scope.write))
    other = await make_key("other", scopes=(Scope.read, Scope.write))
    transport = httpx.ASGITransport(app)
    async with (
        httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": owner}
        ) as a,
        httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": other}
        ) as b,
    ):
        job = await a.post(
            "/v1/images?wait=30",
            files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        )
        [face] = job.json()["detections"]
        others_person = (await b.post("/v1/people", json={"name": "Bob"})).json()
        refused = await client.post(
            f"/v1/faces/{face['id']}/promote", json={"person_id": others_person["id"]}
        )
        assert refused.status_code == 422, refused.text
        assert "different API keys" in refused.json()["detail"]
        promoted = await client.post(f"/v1/faces/{face['id']}/promote", json={"name": "Barack"})
        assert promoted.status_code in (200, 201), promoted.text
        mine = (await a.get("/v1/people")).json()["items"]
        assert [p["name"] for p in mine] == ["Barack"]  # the face's key's person
        assert [p["name"] for p in (await b.get("/v1/people")).json()["items"]] == ["Bob"]


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/v1/people?named=false", "offset|3000000000"),  # past Postgres's integer OFFSET
        ("/v1/people", "0001-01-01T00:00:00+00:01|6b135f5b-a365-4522-b1f1-4c9ac2dd0728"),
        ("/v1/jobs", "0001-01-01T00:00:00+00:01|6b135f5b-a365-4522-b1f1-4c9ac2dd0728"),
        ("/v1/jobs", "9999-12-31T23:59:59-00:01|6b135f5b-a365-4522-b1f1-4c9ac2dd0728"),
    ],
)
async def test_a_crafted_cursor_is_a_422_not_a_500(client, path, cursor):
    encoded = base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
    separator = "&" if "?" in path else "?"
    response = await client.get(f"{path}{separator}cursor={encoded}")
    assert response.status_code == 422, response.text
    assert "invalid cursor" in response.json()["detail"]


async def test_a_face_placed_by_hand_is_its_new_person_s_in_its_job_too(
    client, worker, engine, storage
):
    """A job identified obama; the user says it is biden (move) or a new person (promote). The
    job kept "obama": deleting obama then skipped the face and left his name and id in the
    result (the face had been enrolled to someone else), or forgot the face although it was
    biden's now. The job's record follows the hand: the new person, marked manual, no
    similarity (no match made it); out of a person, unknown."""
    people = await enroll_training_set(client)

    async def seen() -> tuple[str, dict]:  # type: ignore[type-arg]
        response = await client.post(
            "/v1/images?wait=30",
            files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
            data={"tasks": "identify"},
        )
        job = response.json()
        [face] = job["detections"]
        assert face["attributes"]["identity"]["person_id"] == people["obama"]
        return job["id"], face

    async def recorded(job_id: str) -> dict:  # type: ignore[type-arg]
        [face] = (await client.get(f"/v1/jobs/{job_id}")).json()["detections"]
        return face["attributes"]  # type: ignore[no-any-return]

    # Three jobs that saw obama, before any move teaches the gallery otherwise.
    (moved_job, moved), (promoted_job, promoted), (out_job, out) = [await seen() for _ in "abc"]
    drawn = await client.get(f"/v1/jobs/{moved_job}/processed-image")
    assert drawn.status_code == 200
    response = await client.post(
        f"/v1/faces/{moved['id']}/move", json={"person_id": people["biden"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["enrolled"] is True
    attributes = await recorded(moved_job)
    assert attributes["identity"] == {
        "person_id": people["biden"],
        "name": "biden",
        "similarity": None,
        "manual": True,
    }
    assert "unknown" not in attributes
    redrawn = await client.get(f"/v1/jobs/{moved_job}/processed-image")
    assert redrawn.status_code == 200 and redrawn.content != drawn.content  # the new name

    response = await client.post(f"/v1/faces/{promoted['id']}/promote", json={"name": "Barack"})
    assert response.status_code in (200, 201), response.text
    barack = (await recorded(promoted_job))["identity"]
    assert barack["name"] == "Barack" and barack["manual"] is True

    response = await client.post(f"/v1/faces/{out['id']}/move", json={"person_id": None})
    assert response.status_code == 200, response.text
    attributes = await recorded(out_job)
    assert attributes["identity"] is None and attributes["unknown"] is True

    # Deleting obama touches none of them: no record names him, none is forgotten.
    assert (await client.delete(f"/v1/people/{people['obama']}")).status_code == 204
    for job_id, face in ((moved_job, moved), (promoted_job, promoted), (out_job, out)):
        attributes = await recorded(job_id)
        assert people["obama"] not in json.dumps(attributes)
        assert (
            await count(
                engine,
                "SELECT count(*) FROM face_embeddings WHERE detection_id = :d",
                d=face["id"],
            )
            == 1
        ), job_id
    # Deleting the person a face was given to forgets it, as for one the job identified.
    assert (await client.delete(f"/v1/people/{people['biden']}")).status_code == 204
    attributes = await recorded(moved_job)
    assert attributes["identity"] is None and attributes["unknown"] is True
    assert (
        await count(
            engine, "SELECT count(*) FROM face_embeddings WHERE detection_id = :d", d=moved["id"]
        )
        == 0
    )
