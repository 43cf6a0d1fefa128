"""What a deleted person leaves behind in jobs: nothing that names them.

A person deleted while a job that identified them is between its gallery step and its write:
whichever of the two commits first, the deleted person's name, embedding and crop are left in
no job (the worker's write and the deletion serialise on the person's row). A job's events
socket replays its result as the job is now, not as it was when it finished."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx_ws import aconnect_ws
from sqlalchemy import text

from app.gallery import clusters, people
from app.jobs import results
from app.jobs import service as jobs_service
from app.jobs.service import processed_image_key
from tests.conftest import SHARED_IMAGES, job_events, shared_image

TRAIN = SHARED_IMAGES / "faces" / "train"


async def enroll_obama(client, make_consumer) -> str:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    worker = asyncio.create_task(make_consumer(block_ms=50).run(stop))
    try:
        person = (await client.post("/v1/people", json={"name": "obama"})).json()
        photos = sorted((TRAIN / "obama").iterdir())
        response = await client.post(
            f"/v1/people/{person['id']}/faces",
            files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        )
        assert response.status_code == 200, response.text
    finally:
        stop.set()
        await worker
    return str(person["id"])


async def queue_identify(client) -> str:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/images",
        files={"image": ("o.jpg", shared_image("faces/test/obama1.jpg"), "image/jpeg")},
        data={"tasks": "identify"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def run_between_gallery_step_and_write(  # type: ignore[no-untyped-def]
    make_consumer, person_id: str, act: Callable[[], Awaitable[None]]
) -> None:
    """Run the queued identify job, with `act` after its gallery step found obama (`person_id`)
    and before its result is written."""
    consumer = make_consumer()
    gallery_step = consumer._identify

    async def identify_then_act(batch, found):  # type: ignore[no-untyped-def]
        labelled = await gallery_step(batch, found)
        [face] = labelled[0].detections  # type: ignore[union-attr]
        identity = face.attributes["identity"]
        assert (identity["person_id"], identity["name"]) == (person_id, "obama")  # found first
        await act()
        return labelled

    consumer._identify = identify_then_act  # type: ignore[method-assign]
    await consumer.run(burst=True)


async def assert_forgotten(client, engine, job_id: str, person_id: str) -> None:  # type: ignore[no-untyped-def]
    """The job's face is an unknown face's box: no name, no embedding, no crop, in Postgres and
    in the API's answer."""
    detail = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert detail["status"] == "done"
    [face] = detail["detections"]
    assert face["attributes"]["identity"] is None and face["attributes"]["unknown"] is True
    async with engine.connect() as connection:
        for table in ("face_embeddings", "face_crops"):
            left = await connection.scalar(
                text(f"SELECT count(*) FROM {table} WHERE job_id = :j"), {"j": uuid.UUID(job_id)}
            )
            assert left == 0, table
        assert await connection.scalar(text("SELECT count(*) FROM people")) == 0
    assert person_id not in json.dumps(detail) and "obama" not in json.dumps(detail)


async def test_a_person_deleted_after_the_gallery_step_is_not_written_into_the_job(
    client, make_consumer, engine, redis
):
    """The deletion commits between the gallery step (which found them) and the job's write."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)

    async def delete() -> None:
        assert (await client.delete(f"/v1/people/{person_id}")).status_code == 204

    await run_between_gallery_step_and_write(make_consumer, person_id, delete)
    await assert_forgotten(client, engine, job_id, person_id)
    # Its events too: the result went out after the deletion.
    events = json.dumps(await job_events(redis, uuid.UUID(job_id)))
    assert "obama" not in events and person_id not in events


async def test_a_person_merged_after_the_gallery_step_is_written_as_the_one_merged_into(
    client, make_consumer, engine
):
    """The merge commits between the gallery step (which found obama) and the job's write. The
    write found obama gone and, with no record of where, forgot the face as a deleted person's:
    no name, no embedding, no crop. It is the merged-into person's face now, as the faces
    written before the merge are (their name as the job recorded it)."""
    person_id = await enroll_obama(client, make_consumer)
    barack = (await client.post("/v1/people", json={"name": "barack"})).json()["id"]
    job_id = await queue_identify(client)

    async def merge() -> None:
        merged = await client.post(f"/v1/people/{barack}/merge", json={"person_ids": [person_id]})
        assert merged.status_code == 200, merged.text

    await run_between_gallery_step_and_write(make_consumer, person_id, merge)
    detail = (await client.get(f"/v1/jobs/{job_id}")).json()
    [face] = detail["detections"]
    identity = face["attributes"]["identity"]
    assert identity is not None and identity["person_id"] == barack, face["attributes"]
    assert identity["name"] == "obama" and not face["attributes"].get("unknown")
    async with engine.connect() as connection:
        for table in ("face_embeddings", "face_crops"):
            kept = await connection.scalar(
                text(f"SELECT count(*) FROM {table} WHERE job_id = :j"), {"j": uuid.UUID(job_id)}
            )
            assert kept == 1, table
    # Deleting the one merged into forgets it with the rest of their faces.
    assert (await client.delete(f"/v1/people/{barack}")).status_code == 204
    forgotten = (await client.get(f"/v1/jobs/{job_id}")).json()["detections"][0]
    assert forgotten["attributes"]["identity"] is None


async def test_a_deletion_waits_for_a_job_writing_the_person_then_forgets_its_face(
    client, make_consumer, engine, redis, monkeypatch: pytest.MonkeyPatch
):
    """The job's write has begun (its transaction names them) when the deletion starts: the
    deletion waits for it to commit, then forgets that face as it forgets the others."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)
    write = results._write_detections
    deletion: list[asyncio.Task[Any]] = []
    done_while_written: list[bool] = []

    async def write_then_race(*args: Any, **kwargs: Any) -> Any:
        written = await write(*args, **kwargs)
        deletion.append(asyncio.create_task(client.delete(f"/v1/people/{person_id}")))
        await asyncio.sleep(0.5)
        done_while_written.append(deletion[-1].done())
        return written

    monkeypatch.setattr(results, "_write_detections", write_then_race)
    await make_consumer().run(burst=True)
    monkeypatch.undo()
    assert done_while_written == [False], "the deletion did not wait for the job's write"
    assert (await deletion[0]).status_code == 204
    # The result went out while they existed (its events name them, as it was); what is kept
    # does not.
    await assert_forgotten(client, engine, job_id, person_id)


async def test_the_events_socket_of_a_finished_job_does_not_replay_a_deleted_person(
    client, make_consumer, redis
):
    """The job's stream (kept an hour) holds the result as it was when the job finished."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)
    await make_consumer().run(burst=True)
    kept = json.dumps(await job_events(redis, uuid.UUID(job_id)))
    assert person_id in kept  # the stream named them when the job finished
    assert (await client.delete(f"/v1/people/{person_id}")).status_code == 204

    replayed: list[dict[str, Any]] = []
    async with aconnect_ws(f"/v1/jobs/{job_id}/events", client) as ws:
        while not replayed or replayed[-1].get("status") != "done":
            replayed.append(await asyncio.wait_for(ws.receive_json(), 10))
    assert [e["type"] for e in replayed] == ["status", "status", "result", "status"]
    [result] = [e for e in replayed if e["type"] == "result"]
    [face] = result["job"]["detections"]
    assert face["attributes"]["identity"] is None and face["attributes"]["unknown"] is True
    assert person_id not in json.dumps(replayed) and "obama" not in json.dumps(replayed)


async def test_a_person_deleted_while_their_photos_are_processed_is_a_404_leaving_nothing(
    client, make_consumer, engine
):
    """The enrollment waited for the workers while the person was deleted: a 500 (the faces'
    insert failed on its foreign key)."""
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    photos = sorted((TRAIN / "obama").iterdir())
    enrolling = asyncio.create_task(
        client.post(
            f"/v1/people/{person['id']}/faces",
            files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
        )
    )
    async with engine.connect() as connection:
        for _ in range(200):  # until its jobs are queued
            if await connection.scalar(text("SELECT count(*) FROM jobs")):
                break
            await asyncio.sleep(0.05)
    assert (await client.delete(f"/v1/people/{person['id']}")).status_code == 204
    await make_consumer().run(burst=True)
    response = await enrolling
    assert response.status_code == 404, response.text
    assert "deleted while its photos were processed" in response.json()["detail"]
    async with engine.connect() as connection:
        for table in ("people", "person_faces", "jobs", "face_embeddings", "face_crops"):
            assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table


async def test_a_picture_asked_for_while_a_person_s_deletion_commits_is_drawn_without_them(
    client, make_consumer, sessionmaker, storage
):
    """The job's processed image was drawn from the detections as they were before the
    deletion committed, then cached with the deleted person's name in it (served for a week).
    The drawing now waits for the deletion (both lock the job's row) and draws what it says."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)
    await make_consumer().run(burst=True)
    named = (await client.get(f"/v1/jobs/{job_id}/processed-image")).content
    async with sessionmaker.begin() as session:
        await people.delete_people(session, storage, [uuid.UUID(person_id)])
        # Someone opens the job's picture before the deletion commits (the cached one is gone).
        drawing = asyncio.create_task(client.get(f"/v1/jobs/{job_id}/processed-image"))
        await asyncio.sleep(0.5)
        waited = not drawing.done()
    drawn = await drawing
    assert waited, "the drawing did not wait for the deletion"
    assert drawn.status_code == 200 and drawn.content != named
    cached = storage.get(processed_image_key(uuid.UUID(job_id)))
    assert cached == drawn.content  # the cached picture is the one without the name
    storage.delete(processed_image_key(uuid.UUID(job_id)))
    fresh = (await client.get(f"/v1/jobs/{job_id}/processed-image")).content
    assert fresh == cached


async def test_a_deletion_waits_for_a_drawing_under_way_then_deletes_it(
    client, make_consumer, sessionmaker, storage, monkeypatch: pytest.MonkeyPatch
):
    """The other order: the picture is being drawn (the name still there) when the deletion
    starts; the deletion waits for it, then deletes what it cached."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)
    await make_consumer().run(burst=True)
    draw = jobs_service.processed_jpeg
    deletion: list[asyncio.Task[Any]] = []

    def slow_draw(*args: Any, **kwargs: Any) -> bytes:
        time.sleep(1.0)  # in the drawing's thread: the deletion starts meanwhile
        return draw(*args, **kwargs)

    async def delete_soon() -> None:
        await asyncio.sleep(0.3)
        deletion.append(asyncio.create_task(client.delete(f"/v1/people/{person_id}")))

    monkeypatch.setattr(jobs_service, "processed_jpeg", slow_draw)
    starter = asyncio.create_task(delete_soon())
    named = await client.get(f"/v1/jobs/{job_id}/processed-image")
    await starter
    monkeypatch.undo()
    assert named.status_code == 200
    assert (await deletion[0]).status_code == 204
    assert not storage.root.joinpath(processed_image_key(uuid.UUID(job_id))).exists()
    unnamed = (await client.get(f"/v1/jobs/{job_id}/processed-image")).content
    assert unnamed != named.content


async def test_a_clustering_batch_does_not_hold_up_a_worker_writing_a_known_face(
    client, make_consumer, sessionmaker, settings
):
    """A clustering batch locks the people its faces belong to until it commits (so that none
    is named or ignored meanwhile); a worker writing a job that identified one of them only
    needs that person to exist. It waited for the whole batch."""
    person_id = await enroll_obama(client, make_consumer)
    job_id = await queue_identify(client)
    batch = clusters._Batch(
        owner_id=None,
        settings=settings.clusters,
        neighbours={},
        person_at_start={1: uuid.UUID(person_id)},
    )
    async with sessionmaker.begin() as session:
        await clusters._load_people(session, batch)  # the batch's locks, held until its commit
        assert batch.people == {uuid.UUID(person_id): (True, False)}
        await asyncio.wait_for(make_consumer().run(burst=True), 15)
    detail = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert detail["status"] == "done"
    assert detail["detections"][0]["attributes"]["identity"]["name"] == "obama"


async def test_two_people_deleted_at_once_each_the_other_s_runner_up_are_both_deleted(
    client, make_job, sessionmaker, engine, monkeypatch: pytest.MonkeyPatch
):
    """Each deletion first unnames the faces identified as its person, then the faces naming
    them as runner-up: a face of P's with Q second and one of Q's with P second. Two deletions
    that had both done their first step then each waited for a row the other held: Postgres
    broke the deadlock by failing one of them (a 500). Deletions (and merges) now take their
    turn, the second after the first commits."""
    p, q = [
        str((await client.post("/v1/people", json={"name": name})).json()["id"])
        for name in ("pat", "quinn")
    ]
    job = await make_job(shared_image("faces/test/obama1.jpg"), enqueue=False)

    def named(first: str, second: str) -> str:
        return json.dumps(
            {
                "identity": {"person_id": first, "name": "x", "similarity": 0.8},
                "runner_up": {"person_id": second, "name": "y", "similarity": 0.5},
                "unknown": False,
            }
        )

    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "INSERT INTO detections (job_id, kind, label, score, box, attributes) VALUES "
                "(:job, 'face', 'face', 0.9, '{0,0,10,10}', CAST(:pq AS jsonb)), "
                "(:job, 'face', 'face', 0.9, '{0,0,10,10}', CAST(:qp AS jsonb))"
            ),
            {"job": job.id, "pq": named(p, q), "qp": named(q, p)},
        )
    # Each deletion, once its own faces are unnamed, waits (up to 2 s) for the other to have
    # unnamed its own too: the order that deadlocked, whenever both can get there.
    unname = people._unname_identified
    both_unnamed = asyncio.Barrier(2)

    async def unname_then_meet(*args: Any, **kwargs: Any) -> Any:
        unnamed = await unname(*args, **kwargs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both_unnamed.wait(), 2)
        return unnamed

    monkeypatch.setattr(people, "_unname_identified", unname_then_meet)
    deleted = await asyncio.gather(*(client.delete(f"/v1/people/{i}") for i in (p, q)))
    assert [r.status_code for r in deleted] == [204, 204], [r.text for r in deleted]
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM people")) == 0
        faces = (
            await connection.scalars(
                text("SELECT attributes FROM detections WHERE job_id = :j"), {"j": job.id}
            )
        ).all()
    assert len(faces) == 2
    for face in faces:
        assert face["identity"] is None and face["runner_up"] is None and face["unknown"] is True
