"""Deleting a person or a job deletes the webhook deliveries about them, sent or still to send,
and a deleted person's or job's events still waiting in the firehose are not made into
deliveries."""

import uuid

import pytest
from sqlalchemy import text

from app import streams
from app.events_out import service
from tests.app.events_out.helpers import (
    enroll_from_job,
    events_settings,
    running_dispatcher,
    wait_for,
)
from tests.app.events_out.receiver import Receiver
from tests.conftest import serve_app, shared_image

OBAMA = "faces/train/obama/obama.jpg"


@pytest.fixture
async def receiver():  # type: ignore[no-untyped-def]
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
async def firehose_groups(redis, clean_state):  # type: ignore[no-untyped-def]
    await streams.ensure_firehose_groups(redis)


async def rows_naming(engine, needle: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM webhook_deliveries WHERE payload::text LIKE :n"),
            {"n": f"%{needle}%"},
        )
    return int(found)


async def deliveries_of_a_webhook(http, receiver, *event_types: str) -> str:  # type: ignore[no-untyped-def]
    """A webhook of these event types to the receiver; the path of its deliveries."""
    created = await http.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": list(event_types)}
    )
    assert created.status_code == 201, created.text
    return f"/v1/webhooks/{created.json()['id']}/deliveries"


async def test_deleting_a_person_deletes_the_deliveries_naming_them_sent_or_not(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver, engine
):
    """Two sightings: one delivered, one pending while the receiver is down. After the person
    is deleted neither is kept, and the pending one is never sent."""
    hook_settings = events_settings(settings)
    enrolment = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    obama = await enroll_from_job(sessionmaker, enrolment.id, "obama")
    async with serve_app(hook_settings, api_key) as http:
        deliveries = await deliveries_of_a_webhook(http, receiver, "face.identified", "job.done")
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            receiver.start()
            sent = await make_job(shared_image(OBAMA), tasks=("faces", "identify"))
            await make_consumer().run(burst=True)
            await wait_for(
                lambda: (
                    {"job.done", "face.identified"}
                    <= {e["type"] for e in receiver.events() if e["job"]["id"] == str(sent.id)}
                )
            )
            receiver.stop()  # down: the next sighting's delivery waits
            waiting = await make_job(shared_image(OBAMA), tasks=("faces", "identify"))
            await make_consumer().run(burst=True)

            async def both_stored() -> bool:
                stored = (await http.get(deliveries)).json()["items"]
                return sum(d["payload"]["job"]["id"] == str(waiting.id) for d in stored) == 2

            await wait_for(both_stored)
            assert await rows_naming(engine, "obama") == 2
            assert (await http.delete(f"/v1/people/{obama.id}")).status_code == 204
            assert await rows_naming(engine, "obama") == 0
            assert await rows_naming(engine, str(obama.id)) == 0
            kept = (await http.get(deliveries)).json()["items"]
            # The jobs' own events stay (they name nobody).
            assert {d["payload"]["job"]["id"] for d in kept} >= {str(sent.id), str(waiting.id)}
            assert {d["event_type"] for d in kept} == {"job.done"}
            receiver.start()
            await wait_for(
                lambda: any(e["job"]["id"] == str(waiting.id) for e in receiver.events())
            )
        named = [e for e in receiver.events() if e["type"] == "face.identified"]
        assert [e["job"]["id"] for e in named] == [str(sent.id)]  # only the one sent before


async def test_a_deleted_person_s_events_read_late_from_the_firehose_are_not_delivered(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver, engine
):
    """The dispatcher was stopped (or behind) when the person was deleted."""
    receiver.start()
    hook_settings = events_settings(settings)
    enrolment = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    obama = await enroll_from_job(sessionmaker, enrolment.id, "obama")
    async with serve_app(hook_settings, api_key) as http:
        await deliveries_of_a_webhook(http, receiver, "face.identified", "job.done")
        job = await make_job(shared_image(OBAMA), tasks=("faces", "identify"))
        await make_consumer().run(burst=True)  # its events wait in the firehose
        assert (await http.delete(f"/v1/people/{obama.id}")).status_code == 204
    async with running_dispatcher(hook_settings, sessionmaker, redis):
        await wait_for(lambda: any(e["job"]["id"] == str(job.id) for e in receiver.events()))
    assert [e["type"] for e in receiver.events() if e["job"]["id"] == str(job.id)] == ["job.done"]
    assert "face.identified" not in {e["type"] for e in receiver.events()}
    assert await rows_naming(engine, str(obama.id)) == 0


async def test_deleting_a_job_deletes_its_deliveries(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver, engine
):
    """A job deleted (its image was private) takes what its events said with it: the faces,
    texts and plates read in it, sent or not."""
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        deliveries = await deliveries_of_a_webhook(http, receiver, "job.done", "object.detected")
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            kept = await make_job(shared_image("scenes/dog.jpg"), tasks=("objects",))
            deleted = await make_job(shared_image("scenes/dog.jpg"), tasks=("objects",))
            await make_consumer().run(burst=True)

            async def stored() -> set[str]:
                return {
                    d["payload"]["job"]["id"] for d in (await http.get(deliveries)).json()["items"]
                }

            await wait_for(lambda: _same(stored(), {str(kept.id), str(deleted.id)}))
            assert (await http.delete(f"/v1/jobs/{deleted.id}")).status_code == 204
            assert await stored() == {str(kept.id)}
    assert await rows_naming(engine, str(deleted.id)) == 0


async def test_a_deleted_job_s_events_read_late_from_the_firehose_are_not_delivered(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver, engine
):
    """The dispatcher was stopped (or behind) when the job was deleted: its events, still in
    the firehose, became deliveries and were sent, the job's objects and all."""
    receiver.start()
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        await deliveries_of_a_webhook(http, receiver, "job.done", "object.detected")
        deleted = await make_job(shared_image("scenes/dog.jpg"), tasks=("objects",))
        kept = await make_job(shared_image("scenes/dog.jpg"), tasks=("objects",))
        await make_consumer().run(burst=True)  # their events wait in the firehose
        assert (await http.delete(f"/v1/jobs/{deleted.id}")).status_code == 204
    async with running_dispatcher(hook_settings, sessionmaker, redis):
        await wait_for(
            lambda: (
                {"job.done", "object.detected"}
                <= {e["type"] for e in receiver.events() if e["job"]["id"] == str(kept.id)}
            )
        )
    assert {e["job"]["id"] for e in receiver.events()} == {str(kept.id)}
    assert await rows_naming(engine, str(deleted.id)) == 0


async def _same(found, wanted: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return bool(await found == wanted)


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (service._FORGET_IDENTIFIED, "ix_webhook_deliveries_person"),
        (service._FORGET_CLUSTERED, "ix_webhook_deliveries_cluster"),
        (service._FORGET_JOB, "ix_webhook_deliveries_job"),
    ],
)
async def test_each_delete_of_deliveries_is_served_by_its_index(sessionmaker, statement, index):
    """Deleting a person or a job scanned every delivery (~0.1 s at 300k rows, a day of a
    receiver being down), under the person's lock that workers wait on."""
    params = {"job_id": str(uuid.uuid4())} if "job_id" in str(statement) else {"ids": ["x"]}
    async with sessionmaker() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await session.execute(text(f"EXPLAIN {statement}"), params)).scalars().all()
    assert index in "\n".join(plan), plan
