"""Bulk enrollment (POST /v1/people/import, `lookout people import`) with a real worker and the
real models: the shared train folder goes in, then identify names everyone."""

import asyncio
import io
import struct
import sys
import tracemalloc
import uuid
import zipfile
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from app.gallery.imports import imports_storage, read_photo
from tests.app.gallery.test_gallery_flow import TRAIN, count, identify, names
from tests.conftest import shared_image
from tests.images import blank, in_format
from tests.processes import http_ok, lookout_env, start_python, stop, wait_until
from tests.test_cli import free_port

TRAIN_PHOTOS = sorted(TRAIN.glob("*/*"))


@pytest.fixture
async def worker(make_consumer) -> AsyncIterator[None]:
    """A consumer running beside the test, as a worker process would in production."""
    stop_event = asyncio.Event()
    task = asyncio.create_task(make_consumer(block_ms=50).run(stop_event))
    yield
    stop_event.set()
    await task


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def train_zip() -> bytes:
    """The shared train folder as a user would zip it: one folder per person, in a top folder."""
    return zip_of({f"train/{p.parent.name}/{p.name}": p.read_bytes() for p in TRAIN_PHOTOS})


async def finished(client, status_url: str, timeout_s: float = 90) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body = (await client.get(status_url)).json()
        if body["status"] in ("done", "failed"):
            return body  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.2)


async def assert_everyone_is_identified(client, **kwargs) -> None:  # type: ignore[no-untyped-def]
    assert names(await identify(client, "faces/test/obama1.jpg", **kwargs)) == ["obama"]
    assert names(await identify(client, "faces/test/alex_lacamoire1.jpg", **kwargs)) == [
        "alex_lacamoire"
    ]
    assert names(await identify(client, "faces/test/obama_and_biden.jpg", **kwargs)) == [
        "biden",
        "obama",
        "unknown",
    ]


async def test_a_zip_of_the_train_folder_enrolls_everyone_and_identify_names_them(
    client, worker, engine, storage, settings
):
    response = await client.post(
        "/v1/people/import", files={"archive": ("train.zip", train_zip(), "application/zip")}
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "queued" and started["total"] == len(TRAIN_PHOTOS) == 9

    body = await finished(client, started["status_url"])
    assert body["status"] == "done", body
    assert (body["processed"], body["enrolled"], body["refused"]) == (9, 9, 0)
    assert body["people_created"] == 5 and body["problems"] == []
    assert await count(engine, "SELECT count(*) FROM people WHERE name IS NOT NULL") == 5
    assert await count(engine, "SELECT count(*) FROM person_faces WHERE crop_jpeg IS NOT NULL") == 9
    # The photos' jobs (rows, images) and the archive are gone once it is over.
    for table in ("jobs", "detections", "face_embeddings"):
        assert await count(engine, f"SELECT count(*) FROM {table}") == 0, table
    assert [p for p in storage.root.iterdir() if p != imports_storage(settings).root] == []
    assert list(imports_storage(settings).root.iterdir()) == []

    await assert_everyone_is_identified(client)


async def test_files_named_person_slash_photo_are_one_import_and_bad_photos_are_listed(
    client, worker, engine
):
    files = [
        ("images", ("obama/obama.jpg", shared_image("faces/train/obama/obama.jpg"), "image/jpeg")),
        # A BMP: converted to PNG on arrival (app/images.py accept_image), enrolled as any.
        (
            "images",
            (
                "Obama/obama2.bmp",
                in_format(shared_image("faces/train/obama/obama2.jpg"), "BMP"),
                "",
            ),
        ),
        ("images", ("crowd/t1.jpg", shared_image("scenes/t1.jpg"), "image/jpeg")),
        ("images", ("dog/dog.jpg", shared_image("scenes/dog.jpg"), "image/jpeg")),
        ("images", ("broken/x.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg")),
        # A chunk of type NUL NUL NUL NUL with a bad checksum: its reason must be storable
        # (Postgres refuses NUL in the problems' JSON), or the whole batch failed with it.
        ("images", ("odd/x.png", png_with_bad_nul_chunk(), "image/png")),
    ]
    response = await client.post("/v1/people/import", files=files)
    assert response.status_code == 202, response.text
    body = await finished(client, response.json()["status_url"])
    assert body["status"] == "done", body
    assert (body["total"], body["enrolled"], body["refused"]) == (6, 2, 4)
    # "Obama" and "obama" are one person (names are case-insensitive), created once.
    assert body["people_created"] == 1
    reasons = {p["photo"]: p["reason"] for p in body["problems"]}
    assert set(reasons) == {"crowd/t1.jpg", "dog/dog.jpg", "broken/x.jpg", "odd/x.png"}
    assert reasons["odd/x.png"] == "the PNG data is corrupt (bad checksum in a 0x00000000 chunk)"
    assert "6 faces found" in reasons["crowd/t1.jpg"]
    assert reasons["dog/dog.jpg"] == "no face found"
    assert await count(engine, "SELECT count(*) FROM people") == 1

    # Importing the same photos again stores nothing twice: they are reported as duplicates.
    again = await client.post("/v1/people/import", files=files[:2])
    body = await finished(client, again.json()["status_url"])
    assert (body["enrolled"], body["duplicates"], body["people_created"]) == (0, 2, 0)
    assert await count(engine, "SELECT count(*) FROM person_faces") == 2


def png_with_bad_nul_chunk() -> bytes:
    png = blank(64, 48, ".png")
    odd = struct.pack(">I", 4) + b"\x00" * 4 + b"abcd" + b"\x00" * 4  # its CRC is wrong
    return png[:-12] + odd + png[-12:]  # before IEND


async def test_a_photo_the_archive_cannot_give_back_is_refused_alone(client, worker, engine):
    """A bad CRC (or an encrypted entry, an unknown compression) is that photo's problem: it
    failed the whole import, after the batches before it were enrolled."""
    obama, biden = (
        shared_image("faces/train/obama/obama.jpg"),
        shared_image("faces/train/biden/biden.jpg"),
    )
    archive = bytearray(zip_of({"obama/obama.jpg": obama, "biden/biden.jpg": biden}))
    at = bytes(archive).find(biden[1000:1100])  # stored, not compressed: the bytes are there
    archive[at] ^= 0xFF  # the entry's CRC no longer matches
    response = await client.post(
        "/v1/people/import", files={"archive": ("bad.zip", bytes(archive), "application/zip")}
    )
    assert response.status_code == 202, response.text
    body = await finished(client, response.json()["status_url"])
    assert body["status"] == "done", body
    assert (body["total"], body["enrolled"], body["refused"]) == (2, 1, 1)
    [problem] = body["problems"]
    assert problem["photo"] == "biden/biden.jpg"
    assert "cannot be read from the archive" in problem["reason"] and "CRC" in problem["reason"]
    assert await count(engine, "SELECT count(*) FROM person_faces") == 1


@pytest.mark.parametrize(
    ("archive", "detail"),
    [
        (b"PK\x03\x04 this is not a zip", "not a readable zip"),
        (zip_of({}), "no photos"),
        (zip_of({"readme.txt": b"hello"}), "no photos"),
        (zip_of({"obama.jpg": b"x"}), "not in a person's folder"),
        (zip_of({"   /a.jpg": b"x"}), "cannot be a person's name"),
        (zip_of({"Xbob/a.jpg": b"x"}).replace(b"Xbob", b"\x00bob"), "has no name"),
    ],
)
async def test_a_bad_archive_is_422_and_leaves_nothing(client, engine, settings, archive, detail):
    response = await client.post(
        "/v1/people/import", files={"archive": ("a.zip", archive, "application/zip")}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_archive"
    assert detail in response.json()["detail"]
    assert await count(engine, "SELECT count(*) FROM people_imports") == 0
    assert list(imports_storage(settings).root.glob("*")) == []


async def test_an_import_needs_an_archive_or_files_and_is_its_owners(client, make_key):
    neither = await client.post("/v1/people/import", data={"x": "1"})
    assert neither.status_code == 422
    flat = await client.post(
        "/v1/people/import", files={"images": ("obama.jpg", b"x", "image/jpeg")}
    )
    assert flat.status_code == 422 and flat.json()["error"] == "invalid_archive"
    assert (await client.get(f"/v1/people/imports/{uuid.uuid4()}")).status_code == 404


async def test_an_import_s_photos_run_as_enrollment_jobs(client, engine):
    """Not sightings: while they wait for a worker (none runs here), or are left by an import
    that died, they are not counted, searched or clustered as camera frames (they ran as
    `detect` jobs)."""
    response = await client.post(
        "/v1/people/import", files={"archive": ("train.zip", train_zip(), "application/zip")}
    )
    assert response.status_code == 202, response.text
    deadline = asyncio.get_running_loop().time() + 30
    while await count(engine, "SELECT count(*) FROM jobs") == 0:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    async with engine.connect() as connection:
        purposes = (await connection.execute(text("SELECT DISTINCT purpose FROM jobs"))).all()
    assert [p for (p,) in purposes] == ["enroll"]


async def test_an_interrupted_import_resumes_after_its_last_committed_batch(
    app, client, worker, engine
):
    """The counters commit with each batch: an API that stopped mid-import resumes it at the
    next start from there, without redoing (or losing) a batch."""
    runner = app.state.lookout.imports
    response = await client.post(
        "/v1/people/import", files={"archive": ("train.zip", train_zip(), "application/zip")}
    )
    import_id = response.json()["id"]
    await runner.close()  # the API stops before it runs (or while it runs) …
    async with engine.begin() as connection:  # … after, say, its first four photos committed
        await connection.execute(
            text(
                "UPDATE people_imports SET status = 'running', processed = 4, enrolled = 4 "
                "WHERE id = :id"
            ),
            {"id": import_id},
        )
    await runner.resume()  # what the next start does
    await runner.wait()
    body = (await client.get(f"/v1/people/imports/{import_id}")).json()
    assert body["status"] == "done" and body["processed"] == 9
    # The four "already done" are not enrolled again: only the five after them were.
    assert await count(engine, "SELECT count(*) FROM person_faces") == 5


async def test_lookout_people_import_through_a_running_api(
    settings, client, worker, engine, make_key, tmp_path
):
    """The command a user runs: a real API process, the real CLI process, a real worker."""
    key = await make_key("importer")
    port = free_port()
    api = start_python(
        ["app.cli", "api", "--port", str(port)],
        env=lookout_env(settings),
        log_path=tmp_path / "api.log",
    )
    try:
        await asyncio.to_thread(
            wait_until,
            http_ok(f"http://127.0.0.1:{port}/health/live"),
            timeout_s=90,
            what="lookout api",
            process=api,
            log_path=tmp_path / "api.log",
        )
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "people",
            "import",
            str(TRAIN),
            env=lookout_env(
                settings,
                LOOKOUT_CLIENT__URL=f"http://127.0.0.1:{port}",
                LOOKOUT_CLIENT__API_KEY=key,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(command.communicate(), timeout=120)
    finally:
        stop(api)
    assert command.returncode == 0, (out, err, (tmp_path / "api.log").read_text()[-3000:])
    assert out.decode().splitlines()[0] == (
        "9 photos: 9 enrolled, 0 already enrolled (duplicates), 0 refused; 5 new people"
    )
    assert "photo/s" in err.decode()  # the progress bar
    assert await count(engine, "SELECT count(*) FROM person_faces") == 9
    assert await count(engine, "SELECT count(*) FROM people") == 5
    # People are their key's: identify as that key.
    await assert_everyone_is_identified(client, headers={"X-API-Key": key})


def zip_declaring(method: int, real_bytes: int, declared: int) -> bytes:
    """One photo entry of `real_bytes` zeros, compressed with `method`, whose local header and
    directory both say it is `declared` bytes: what a zip bomb claims."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        entry = zipfile.ZipInfo("bob/a.jpg")
        entry.compress_type = method
        with archive.open(entry, "w") as out:
            for _ in range(real_bytes >> 20):
                out.write(bytes(1 << 20))
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, 22, declared)  # the local header's uncompressed size
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, declared)  # the directory's
    return bytes(data)


def test_a_photo_is_read_from_the_archive_in_steps_bounded_by_its_stated_size():
    """A deflated entry of 256 MiB of zeros that says it is 1000 bytes (260 KB of zip):
    ZipFile.read inflated all of it at once (a 1 MB zip took the API to 2.2 GB). Read in steps,
    it stops at the stated size (and the CRC says it is not the photo)."""
    archive = zipfile.ZipFile(io.BytesIO(zip_declaring(zipfile.ZIP_DEFLATED, 256 << 20, 1000)))
    tracemalloc.start()
    try:
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            read_photo(archive, "bob/a.jpg")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


async def test_a_photo_compressed_with_bzip2_or_lzma_is_refused_alone_unread(client, worker):
    """bzip2 and LZMA inflate a whole read at once (1.6 KB of bzip2 became 2 GB in the API):
    such a photo is refused with the reason; zip tools write stored or deflated entries."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("obama/obama.jpg", shared_image("faces/train/obama/obama.jpg"))
        out.writestr("bob/a.jpg", bytes(1 << 20), compress_type=zipfile.ZIP_BZIP2)
        out.writestr("eve/a.jpg", bytes(1 << 20), compress_type=zipfile.ZIP_LZMA)
    response = await client.post(
        "/v1/people/import", files={"archive": ("a.zip", archive.getvalue(), "application/zip")}
    )
    assert response.status_code == 202, response.text
    body = await finished(client, response.json()["status_url"])
    assert (body["total"], body["enrolled"], body["refused"]) == (3, 1, 2), body
    for problem in body["problems"]:
        assert "compression method" in problem["reason"] and "deflated" in problem["reason"]


async def test_a_file_name_with_a_nul_is_a_422(client):
    """A zip entry's name ends at its first NUL ("\\0x/a.jpg" had none left: a 500)."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name=images; filename="\x00x/a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\nx\r\n--b--\r\n"
    )  # by hand: httpx escapes the NUL in a file name
    response = await client.post(
        "/v1/people/import",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["detail"]
