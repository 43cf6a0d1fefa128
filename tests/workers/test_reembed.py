"""`lookout gallery reembed`: the shared faces, enrolled with the stand-in (mobilefacenet), move
to a second embedding model (mobilefacenet_bgr) from their stored crops, no photos needed;
identify keeps working throughout and names everyone right after the switch; no vector of the
old model remains."""

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from app.commits import commit
from app.gallery import reembed
from app.settings import ModelSettings, Settings
from tests.app.gallery.test_gallery_flow import count, enroll_training_set, identify, names
from tests.processes import lookout_env
from workers.consumer import Consumer
from workers.detectors.registry import build_detectors
from workers.reembed import embed_crops, load_embedder

OLD, NEW = "mobilefacenet", "mobilefacenet_bgr"


class Worker:
    """One consumer at a time beside the test, as a worker process; `switch` restarts it on
    another face pack, as an operator redeploys the workers."""

    def __init__(self, make_consumer) -> None:  # type: ignore[no-untyped-def]
        self.make_consumer = make_consumer
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    def start(self, consumer: Consumer) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(consumer.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await self.task


@pytest.fixture
async def worker(make_consumer) -> AsyncIterator[Worker]:
    running = Worker(make_consumer)
    running.start(make_consumer(block_ms=50))
    yield running
    await running.stop()


async def assert_everyone_is_identified(client) -> None:  # type: ignore[no-untyped-def]
    assert names(await identify(client, "faces/test/obama1.jpg")) == ["obama"]
    assert names(await identify(client, "faces/test/alex_lacamoire1.jpg")) == ["alex_lacamoire"]
    assert names(await identify(client, "faces/test/obama_and_biden.jpg")) == [
        "biden",
        "obama",
        "unknown",
    ]
    strangers = await identify(client, "scenes/t1.jpg")
    assert len(strangers) == 6 and all(f["unknown"] for f in strangers)


async def faces_by_model(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {
        model: await count(engine, "SELECT count(*) FROM person_faces WHERE model = :m", m=model)
        for model in (OLD, NEW)
    }


def lookout_reembed(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The command an operator runs, as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "gallery", "reembed", "--model", NEW, *args],
        env=lookout_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_model_upgrade_keeps_every_identification_and_leaves_no_old_vector(
    client, worker, engine, sessionmaker, settings, redis, storage
):
    await enroll_training_set(client)
    assert await faces_by_model(engine) == {OLD: 9, NEW: 0}

    # Interrupted after its first three faces (one committed batch) …
    embedder = load_embedder(settings, NEW)
    async with sessionmaker() as session:
        crops = await reembed.faces_to_embed(session, NEW, 3)
        kept, vectors = embed_crops(embedder, [c.jpeg for c in crops])
        await reembed.add_twins(session, NEW, [crops[i].face_id for i in kept], vectors)
        await commit(session)
    # … then run again: it embeds the six left, and waits for the workers to switch, since
    # the live worker still embeds with the old model.
    first = await asyncio.to_thread(lookout_reembed, settings)
    assert first.returncode == 0, first.stderr
    assert "6 face(s) embedded with mobilefacenet_bgr by this run" in first.stdout
    assert "LOOKOUT_MODELS__FACE_PACK=scrfd_mobilefacenet_bgr" in first.stdout
    assert await faces_by_model(engine) == {OLD: 9, NEW: 9}
    async with sessionmaker() as session:
        assert await reembed.progress(session, NEW) == reembed.Progress(9, 9, 0)
    # Identify goes on working on the old vectors meanwhile.
    await assert_everyone_is_identified(client)

    # The operator switches the workers to the new model's pack.
    await worker.stop()
    new_settings = settings.model_copy(
        update={"models": ModelSettings(face_pack="scrfd_mobilefacenet_bgr", download=False)}
    )
    worker.start(
        Consumer(
            new_settings,
            await asyncio.to_thread(build_detectors, new_settings),
            redis,
            sessionmaker,
            storage,
            name="bgr-worker",
        )
    )
    await asyncio.sleep(0.5)  # its first heartbeat announces the model
    second = await asyncio.to_thread(lookout_reembed, settings)
    assert second.returncode == 0, second.stderr
    assert "dropped 9 face vector(s) of the old model(s)" in second.stdout
    assert await faces_by_model(engine) == {OLD: 0, NEW: 9}
    assert await count(engine, "SELECT count(*) FROM person_faces WHERE model <> :m", m=NEW) == 0
    assert (
        await count(engine, "SELECT count(*) FROM person_faces WHERE reembedded_from IS NOT NULL")
        == 0
    )

    # Every identification is still right, now on the new model alone.
    await assert_everyone_is_identified(client)
    detections = await count(engine, "SELECT count(*) FROM face_embeddings WHERE model = :m", m=NEW)
    assert detections > 0  # the identify jobs above were embedded by the new model


async def test_deleting_a_face_during_an_upgrade_deletes_its_twin(
    client, worker, engine, sessionmaker, settings
):
    people = await enroll_training_set(client)
    first = await asyncio.to_thread(lookout_reembed, settings)
    assert first.returncode == 0, first.stderr
    obama = (await client.get(f"/v1/people/{people['obama']}")).json()
    assert len(obama["faces"]) == 2  # the person shows each face once (its old-model row) …
    removed = obama["faces"][0]["id"]
    response = await client.delete(f"/v1/people/{people['obama']}/faces/{removed}")
    assert response.status_code == 204
    # … and deleting it deletes its new-model twin too: the upgrade cannot bring it back.
    assert await faces_by_model(engine) == {OLD: 8, NEW: 8}
    forced = await asyncio.to_thread(lookout_reembed, settings, "--drop-old")
    assert forced.returncode == 0, forced.stderr
    assert await faces_by_model(engine) == {OLD: 0, NEW: 8}


def test_an_unknown_model_is_one_line(settings):
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "gallery", "reembed", "--model", "nope"],
        env=lookout_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("lookout: no embedding model named 'nope'")
