"""Webhooks: the API, the SSRF guard, and signed at-least-once deliveries to a real receiver."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook as StandardWebhook

from app import streams
from app.events_out.dispatcher import WebhookDispatcher, backoff_s
from app.jobs import events as job_events
from app.models import ApiKey, Webhook, WebhookDelivery
from app.security import Scope
from app.streams import firehose_groups as firehose_groups_module
from tests.app.events_out.helpers import (
    enroll_from_job,
    events_settings,
    failed_jobs,
    running_dispatcher,
    wait_for,
)
from tests.app.events_out.receiver import Receiver
from tests.conftest import serve_app, shared_image

OBAMA = "faces/train/obama/obama.jpg"
ALL_TYPES = [
    "job.done",
    "job.failed",
    "face.identified",
    "face.unknown",
    "object.detected",
    "text.read",
    "plate.read",
    "node.online",
    "node.offline",
    "node.dark",
]


@pytest.fixture
async def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
async def firehose_groups(redis, clean_state):
    """As the API does at start: the groups exist before any event is published."""
    await streams.ensure_firehose_groups(redis)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.20:8123/api/webhook/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://[fec0::1]/hook",  # site-local
    ],
)
async def test_targets_on_private_addresses_are_refused(settings, api_key, url):
    async with serve_app(settings, api_key) as http:  # no allowed networks: the default
        response = await http.post("/v1/webhooks", json={"url": url, "event_types": ["job.done"]})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "webhook_target_refused"
        assert "LOOKOUT_EVENTS__ALLOWED_NETWORKS" in body["detail"]
        assert (await http.get("/v1/webhooks")).json()["items"] == []


async def test_bad_urls_and_event_types_are_refused(settings, api_key):
    async with serve_app(events_settings(settings), api_key) as http:
        for body in (
            {"url": "ftp://127.0.0.1/x", "event_types": ["job.done"]},
            {"url": "http://127.0.0.1/x", "event_types": ["job.exploded"]},
            {"url": "http://127.0.0.1/x", "event_types": []},
            {"url": "http://user:pw@127.0.0.1/x", "event_types": ["job.done"]},
            {"url": "http://[::1/x", "event_types": ["job.done"]},  # urlsplit's ValueError
            # urlsplit drops leading spaces and tabs that httpx refuses: each was saved, then
            # failed every delivery without a word; an IDNA-2008-invalid name likewise.
            {"url": " http://127.0.0.1/x", "event_types": ["job.done"]},
            {"url": "http://127.0.0.1/x\t", "event_types": ["job.done"]},
            {"url": "http://127.0.0.1/x\n", "event_types": ["job.done"]},
            {"url": "http://\u2603.net/x", "event_types": ["job.done"]},
            # Port 0 passed as the default port (`or`), then no delivery could be made.
            {"url": "http://127.0.0.1:0/x", "event_types": ["job.done"]},
            # Not a field: a secret of one's own was ignored, and every signature then failed.
            {"url": "http://127.0.0.1/x", "event_types": ["job.done"], "secret": "whsec_mine"},
            {"url": "http://127.0.0.1/x", "event_types": ["job.done"], "filters": {"label": ["x"]}},
            # What the table cannot store: NUL, lone surrogates, longer than its columns.
            {"url": "http://127.0.0.1/a\u0000b", "event_types": ["job.done"]},
            {"url": "http://127.0.0.1/x", "event_types": ["job.done"], "description": "a\u0000"},
            {"url": "http://127.0.0.1/x", "event_types": ["job.done"], "description": "\ud800"},
            {
                "url": "http://127.0.0.1/x",
                "event_types": ["object.detected"],
                "filters": {"labels": ["x" * 65]},
            },
            {
                "url": "http://127.0.0.1/x",
                "event_types": ["face.identified"],
                "filters": {"people": ["a\u0000"]},
            },
        ):
            # Sent as JSON text: httpx's own encoder would refuse the lone surrogate.
            raw = json.dumps(body)  # ensure_ascii: NUL and U+D800 as JSON escapes
            response = await http.post(
                "/v1/webhooks", content=raw, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, (body, response.text)
        assert (await http.get("/v1/webhooks")).json()["items"] == []


async def test_create_list_change_delete_and_the_secret_is_shown_once(settings, make_key):
    writer = await make_key("writer", scopes=(Scope.read, Scope.write))
    other = await make_key("other", scopes=(Scope.read, Scope.write))
    async with serve_app(events_settings(settings), writer) as http:
        created = await http.post(
            "/v1/webhooks",
            json={
                "url": "http://127.0.0.1:9/hook",
                "event_types": ["face.unknown", "object.detected"],
                "description": "door",
                "filters": {"labels": ["person"], "people": ["obama"]},
            },
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        fetched = (await http.get(f"/v1/webhooks/{hook['id']}")).json()
        assert "secret" not in fetched
        assert fetched["filters"] == {"node_ids": [], "labels": ["person"], "people": ["obama"]}
        assert [h["id"] for h in (await http.get("/v1/webhooks")).json()["items"]] == [hook["id"]]
        patched = await http.patch(
            f"/v1/webhooks/{hook['id']}", json={"event_types": ["job.failed"], "enabled": False}
        )
        assert patched.status_code == 200
        assert patched.json()["event_types"] == ["job.failed"]
        assert patched.json()["enabled"] is False
        refused = await http.patch(
            f"/v1/webhooks/{hook['id']}", json={"url": "http://10.0.0.1/hook"}
        )
        assert refused.status_code == 422
        assert (
            (await http.get(f"/v1/webhooks/{hook['id']}"))
            .json()["url"]
            .startswith("http://127.0.0.1")
        )
    async with serve_app(events_settings(settings), other) as http:  # another key: not found
        assert (await http.get(f"/v1/webhooks/{hook['id']}")).status_code == 404
        assert (await http.delete(f"/v1/webhooks/{hook['id']}")).status_code == 404
        assert (await http.get("/v1/webhooks")).json()["items"] == []
    async with serve_app(events_settings(settings), writer) as http:
        assert (await http.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await http.get(f"/v1/webhooks/{hook['id']}")).status_code == 404


async def test_a_face_upload_is_delivered_signed_to_the_receiver(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver
):
    receiver.start()
    hook_settings = events_settings(settings)
    enrolment = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    obama = await enroll_from_job(sessionmaker, enrolment.id, "obama")
    async with serve_app(hook_settings, api_key) as http:
        hook = (
            await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ALL_TYPES})
        ).json()
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            job = await make_job(shared_image(OBAMA), tasks=("faces", "identify", "objects"))
            await make_consumer().run(burst=True)

            def of_job():
                return [
                    e for e in receiver.events() if (e.get("job") or {}).get("id") == str(job.id)
                ]

            await wait_for(lambda: {"job.done", "face.identified"} <= {e["type"] for e in of_job()})
        deliveries = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["items"]
    verifier = StandardWebhook(hook["secret"])
    for received in receiver.received:
        assert received.headers["content-type"] == "application/json"
        verified = verifier.verify(received.body, received.headers)  # raises if forged
        assert verified["id"] == received.headers["webhook-id"]
    events = {e["type"]: e for e in of_job()}
    identified = events["face.identified"]
    assert identified["data"]["person"] == {"id": str(obama.id), "name": "obama"}
    assert identified["data"]["similarity"] > 0.9  # the very face that was enrolled
    assert identified["data"]["source"] == {"kind": "upload", "job_id": str(job.id)}
    assert identified["links"]["job"] == f"/v1/jobs/{job.id}"
    assert identified["time"].endswith("Z")
    assert events["job.done"]["data"]["counts"]["face"] == 1
    objects = {
        e["data"]["label"]: e["data"]["count"] for e in of_job() if e["type"] == "object.detected"
    }
    counts = events["job.done"]["data"]["counts"]
    assert objects == {label: n for label, n in counts.items() if label != "face"}
    assert objects.get("person") == 1
    assert all(d["status"] == "delivered" and d["last_status_code"] == 204 for d in deliveries)
    # A forged body fails the reference verifier.
    tampered = receiver.received[0].body.replace(b'"v":1', b'"v":2')
    with pytest.raises(Exception, match=r"(?i)signature"):
        verifier.verify(tampered, receiver.received[0].headers)


async def test_a_receiver_that_was_down_gets_every_event_in_order(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver
):
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        hook = (
            await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["job.done"]})
        ).json()
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            jobs = []
            for _ in range(4):  # one at a time: their events reach the firehose in this order
                jobs.append(await make_job(shared_image(OBAMA), tasks=("faces",)))
                await make_consumer().run(burst=True)

            async def retried_while_down():
                page = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
                return len(page["items"]) == 4 and max(d["attempts"] for d in page["items"]) >= 3

            await wait_for(retried_while_down)
            page = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
            assert {d["status"] for d in page["items"]} == {"pending"}
            assert all(d["last_error"] for d in page["items"] if d["attempts"])
            receiver.start()  # back up
            await wait_for(lambda: len({e["id"] for e in receiver.events()}) == 4)
        page = (await http.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
    assert {d["status"] for d in page["items"]} == {"delivered"}
    in_order = [e["job"]["id"] for e in receiver.events()]
    first_seen = list(dict.fromkeys(in_order))
    assert first_seen == [str(j.id) for j in jobs]  # none lost, order kept
    assert in_order == first_seen  # and each delivered exactly as often as it was acked: once


async def test_a_receiver_answering_500_is_retried_then_dead_lettered_and_can_be_redelivered(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver
):
    receiver.status = 500
    receiver.start()
    hook_settings = events_settings(settings, retry_window_s=1.5)
    async with serve_app(hook_settings, api_key) as http:
        hook = (
            await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["job.done"]})
        ).json()
        deliveries = f"/v1/webhooks/{hook['id']}/deliveries"
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            await make_job(shared_image(OBAMA), tasks=("faces",))
            await make_consumer().run(burst=True)

            async def dead():
                items = (await http.get(deliveries, params={"status": "dead"})).json()["items"]
                return items

            await wait_for(dead)
            [letter] = (await http.get(deliveries, params={"status": "dead"})).json()["items"]
            assert letter["attempts"] >= 3
            assert letter["last_status_code"] == 500
            assert "500" in letter["last_error"]
            assert letter["next_attempt_at"] is None
            assert len(receiver.received) == letter["attempts"]
            ids = {r.headers["webhook-id"] for r in receiver.received}
            assert ids == {letter["event_id"]}  # the same event each time
            stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
            assert stamps == sorted(stamps)
            status = (await http.get("/v1/events/status")).json()
            assert status["deliveries_dead"] == 1

            receiver.status = 200
            again = await http.post(f"{deliveries}/{letter['id']}/redeliver")
            assert again.status_code == 202
            assert again.json()["status"] == "pending"

            async def delivered():
                items = (await http.get(deliveries)).json()["items"]
                return items[0]["status"] == "delivered"

            await wait_for(delivered)
            assert (await http.post(f"{deliveries}/{letter['id']}/redeliver")).status_code == 202


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    for attempts, full in ((1, 5.0), (2, 10.0), (3, 20.0), (10, 600.0)):
        waits = [backoff_s(attempts, base_s=5.0, max_s=600.0) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits)
        assert max(waits) - min(waits) > full / 10  # jittered, not one fixed value


async def test_the_address_is_checked_again_at_delivery_time(settings, sessionmaker, redis):
    """A target that was allowed when saved but resolves to a refused address now (DNS
    rebinding, or the operator narrowed the allowed networks) is not contacted."""
    receiver = Receiver()
    receiver.start()
    try:
        strict = WebhookDispatcher(settings, sessionmaker, redis)  # no allowed networks
        status_code, error = await strict.attempt(
            receiver.url, "whsec_" + "A" * 32, "evt_1-0_0", {"v": 1}
        )
        assert status_code is None
        assert "loopback" in error
        assert receiver.received == []
        allowed = WebhookDispatcher(events_settings(settings), sessionmaker, redis)
        assert await allowed.attempt(receiver.url, "whsec_" + "A" * 32, "evt_1-0_0", {"v": 1}) == (
            204,
            None,
        )
        assert len(receiver.received) == 1
        await strict.http.aclose()
        await allowed.http.aclose()
    finally:
        receiver.stop()


async def test_redirects_are_not_followed(settings, sessionmaker, redis, receiver):
    receiver.status = 307
    receiver.start()
    dispatcher = WebhookDispatcher(events_settings(settings), sessionmaker, redis)
    status_code, error = await dispatcher.attempt(receiver.url, "whsec_" + "A" * 32, "e", {})
    await dispatcher.http.aclose()
    assert status_code == 307
    assert "redirects are not followed" in error
    assert len(receiver.received) == 1


async def test_a_revoked_key_s_webhook_gets_nothing_more(
    settings, sessionmaker, redis, make_key, make_job, make_consumer, receiver
):
    """Its sockets close at revocation; its webhooks stop too: no new deliveries, and what was
    queued is not sent (it was, for ever: keys are revoked, never deleted)."""
    writer = await make_key("writer", scopes=(Scope.read, Scope.write))
    async with sessionmaker() as session:
        owner_id = await session.scalar(select(ApiKey.id).where(ApiKey.name == "writer"))
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, writer) as http:
        hook = (
            await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["job.done"]})
        ).json()

    async def deliveries() -> list[WebhookDelivery]:
        async with sessionmaker() as session:
            return list(await session.scalars(select(WebhookDelivery)))

    async with running_dispatcher(hook_settings, sessionmaker, redis):
        before = await make_job(shared_image(OBAMA), owner_id=owner_id)
        await make_consumer().run(burst=True)
        # The receiver is down: the delivery is queued and retried.
        await wait_for(lambda: _attempted(deliveries()))
        async with sessionmaker.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == owner_id).values(revoked_at=datetime.now(UTC))
            )
        after = await make_job(shared_image(OBAMA), owner_id=owner_id)
        await make_consumer().run(burst=True)
        receiver.start()
        await asyncio.sleep(3)  # retries come every 0.5 s at most (events_settings)
    assert receiver.received == []
    [queued] = await deliveries()
    assert str(queued.webhook_id) == hook["id"] and queued.payload["job"]["id"] == str(before.id)
    assert queued.status == "pending"
    assert str(after.id) not in {(d.payload.get("job") or {}).get("id") for d in await deliveries()}


async def _attempted(rows) -> bool:  # type: ignore[no-untyped-def]
    return any(d.attempts >= 1 for d in await rows)


@pytest.mark.parametrize("endless", ["head", "body"])
async def test_a_receiver_that_never_stops_answering_holds_no_delivery(
    settings, sessionmaker, redis, endless
):
    """One deadline for the whole answer, and its body is not read: a receiver trickling its
    headers (each byte within httpx's per-read timeout) or streaming an endless body held the
    delivery, and one of the dispatcher's slots, for ever, and the body filled its memory."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the request
        try:
            if endless == "head":
                writer.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    writer.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)
        except OSError:  # the dispatcher hung up
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dispatcher = WebhookDispatcher(
        events_settings(settings, webhook_timeout_s=1.0), sessionmaker, redis
    )
    started = time.monotonic()
    try:
        status_code, error = await asyncio.wait_for(
            dispatcher.attempt(f"http://127.0.0.1:{port}/hook", "whsec_" + "A" * 32, "e", {}), 30
        )
    finally:
        await dispatcher.http.aclose()
        server.close()
    if endless == "head":
        assert status_code is None and error == "the receiver did not answer within 1 s"
    else:
        assert (status_code, error) == (200, None)  # the status is the answer
    assert time.monotonic() - started < 10


async def test_events_a_dead_consumer_read_are_claimed_later_not_only_at_a_start(
    settings, api_key, redis, sessionmaker, make_job, make_consumer, receiver, monkeypatch
):
    """A dispatcher that died (here: read, never acked) under another name, and this one
    started before its entries were idle long enough to claim: claimed at the next round,
    STALE_CLAIM_MS later. They were claimed only at a start, so never."""
    receiver.start()
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["job.done"]})
    job = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    taken = await streams.read_firehose_group(
        redis, streams.WEBHOOKS_GROUP, "dead-dispatcher", count=100, block_ms=None, pending=False
    )
    assert str(job.id) in {(e or {}).get("job_id") for _, e in taken}
    monkeypatch.setattr(firehose_groups_module, "STALE_CLAIM_MS", 1500)
    async with running_dispatcher(hook_settings, sessionmaker, redis):
        await wait_for(lambda: any(e["job"]["id"] == str(job.id) for e in receiver.events()))
    pending = await redis.xpending(streams.FIREHOSE, streams.WEBHOOKS_GROUP)
    assert pending["pending"] == 0


async def test_an_event_postgres_cannot_store_is_dropped_and_the_ones_after_it_arrive(
    settings, api_key, redis, sessionmaker, receiver
):
    """A firehose entry whose delivery Postgres refuses for what it holds (a NUL: no JSON column
    stores one) failed the dispatcher's whole read, which it then read again for ever: no webhook
    got anything more. It is dropped alone now; the entries read with it are delivered."""
    receiver.start()
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["job.failed"]})
    bad, good = await failed_jobs(sessionmaker, 2)
    for job_id, reason in ((bad, "cannot\x00be stored"), (good, "an ordinary failure")):
        event = job_events.error(
            job_id, None, reason, node_id=None, node_name=None, stored_image=True
        )
        await streams.publish_firehose_event(redis, event, maxlen=1000)

    async def all_acked() -> bool:
        pending = await redis.xpending(streams.FIREHOSE, streams.WEBHOOKS_GROUP)
        return bool(pending["pending"] == 0)

    async with running_dispatcher(hook_settings, sessionmaker, redis):
        await wait_for(lambda: any(e["job"]["id"] == str(good) for e in receiver.events()))
        await wait_for(all_acked)
    assert [e["job"]["id"] for e in receiver.events()] == [str(good)]
    async with sessionmaker() as session:
        stored = (await session.scalars(select(WebhookDelivery.payload))).all()
    assert [payload["job"]["id"] for payload in stored] == [str(good)]


async def failures_hook(http, url: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """A webhook of job.failed events to `url` (what publish_failures sends)."""
    response = await http.post("/v1/webhooks", json={"url": url, "event_types": ["job.failed"]})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def publish_failures(redis, sessionmaker, count: int) -> None:  # type: ignore[no-untyped-def]
    for n, job_id in enumerate(await failed_jobs(sessionmaker, count)):
        event = job_events.error(
            job_id, None, f"failure {n}", node_id=None, node_name=None, stored_image=True
        )
        await streams.publish_firehose_event(redis, event, maxlen=1000)


async def test_a_url_saved_before_it_was_checked_fails_its_deliveries_out_loud(
    settings, api_key, redis, sessionmaker, receiver
):
    """A URL with a tab (saved before the shape check) made every attempt raise inside the
    dispatcher: nothing recorded (attempts 0, no error), never dead-lettered, the queue stuck,
    and the traceback with the webhook's secret logged every second. Each attempt is a recorded
    failure now, and the queue moves on when it is dead-lettered."""
    receiver.start()
    hook_settings = events_settings(settings, retry_window_s=1.0)
    async with serve_app(hook_settings, api_key) as http:
        hook = await failures_hook(http, receiver.url)
        async with sessionmaker.begin() as session:
            stored = await session.get(Webhook, uuid.UUID(hook["id"]))
            stored.url = receiver.url + "\t"  # as an older version let it in
        deliveries = f"/v1/webhooks/{hook['id']}/deliveries"
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            await publish_failures(redis, sessionmaker, 2)

            async def both_dead():
                items = (await http.get(deliveries, params={"status": "dead"})).json()["items"]
                return len(items) == 2

            await wait_for(both_dead)
        items = (await http.get(deliveries)).json()["items"]
    assert all(d["attempts"] >= 1 for d in items)
    assert all("control character" in d["last_error"] for d in items)
    assert receiver.received == []


async def test_a_fixed_receiver_gets_what_waits_at_once_not_at_the_next_backoff(
    settings, api_key, redis, sessionmaker, receiver
):
    """A receiver answering 404 (an inactive n8n workflow, a wrong path) holds the webhook's
    queue behind its first event, retried on a backoff up to an hour apart; changing the URL,
    enabling the webhook again or redelivering the pending one did nothing until that next try
    (redeliver was a 422). Each now tries what waits at once."""
    broken = Receiver(status=404)
    broken.start()
    receiver.start()
    # A backoff far longer than the test: only "at once" can deliver within it.
    hook_settings = events_settings(settings, retry_base_s=600.0, retry_max_backoff_s=600.0)
    try:
        async with serve_app(hook_settings, api_key) as http:
            hook = await failures_hook(http, broken.url)
            path = f"/v1/webhooks/{hook['id']}"

            async def failed_attempt_recorded() -> bool:
                # The receiver has its POST before the dispatcher records the failure: act
                # after the record (that race is the dispatcher's to handle, not this test's).
                items = (await http.get(f"{path}/deliveries")).json()["items"]
                return any(d["status"] == "pending" and d["attempts"] for d in items)

            async with running_dispatcher(hook_settings, sessionmaker, redis):
                await publish_failures(redis, sessionmaker, 3)
                await wait_for(failed_attempt_recorded)
                assert len(broken.received) == 1
                # The URL fixed: all three arrive, in order, the first one's attempts kept.
                assert (await http.patch(path, json={"url": receiver.url})).status_code == 200
                await wait_for(lambda: len(receiver.received) == 3, timeout_s=10)
                errors = [e["data"]["error"] for e in receiver.events()]
                assert errors == ["failure 0", "failure 1", "failure 2"]
                first = (await http.get(f"{path}/deliveries")).json()["items"][-1]
                assert (first["status"], first["attempts"]) == ("delivered", 2)

                # Disabled while the receiver fails, enabled again once it works.
                receiver.status = 500
                await publish_failures(redis, sessionmaker, 1)
                await wait_for(failed_attempt_recorded)
                assert (await http.patch(path, json={"enabled": False})).status_code == 200
                receiver.status = 204
                assert (await http.patch(path, json={"enabled": True})).status_code == 200
                await wait_for(lambda: len(receiver.received) == 5, timeout_s=10)

                # Redeliver on a pending delivery: "retry now".
                receiver.status = 503
                await publish_failures(redis, sessionmaker, 1)
                await wait_for(failed_attempt_recorded)
                [waiting] = (
                    await http.get(f"{path}/deliveries", params={"status": "pending"})
                ).json()["items"]
                receiver.status = 204
                again = await http.post(f"{path}/deliveries/{waiting['id']}/redeliver")
                assert again.status_code == 202, again.text
                assert again.json()["attempts"] == 1  # its count kept
                await wait_for(lambda: len(receiver.received) == 7, timeout_s=10)
    finally:
        broken.stop()


async def test_a_url_fixed_while_an_attempt_is_under_way_is_tried_after_it(
    settings, api_key, redis, sessionmaker, receiver
):
    """The attempt under way fails after the user's PATCH: recording that failure must not put
    the next try back at the end of its backoff."""
    broken = Receiver(status=404, delay_s=1.0)
    broken.start()
    receiver.start()
    hook_settings = events_settings(settings, retry_base_s=600.0, retry_max_backoff_s=600.0)
    try:
        async with serve_app(hook_settings, api_key) as http:
            hook = await failures_hook(http, broken.url)
            async with running_dispatcher(hook_settings, sessionmaker, redis):
                await publish_failures(redis, sessionmaker, 1)
                await wait_for(lambda: len(broken.received) == 1)  # answered in 1 s
                patched = await http.patch(f"/v1/webhooks/{hook['id']}", json={"url": receiver.url})
                assert patched.status_code == 200
                await wait_for(lambda: len(receiver.received) == 1, timeout_s=10)
    finally:
        broken.stop()


async def test_only_a_due_head_makes_a_webhook_due(settings, api_key, redis, sessionmaker):
    """Deliveries go out in order behind their queue's head: while the head waits out its
    backoff the webhook has nothing to send, however many later deliveries are due. It was
    drained at every poll all the same (a task, a Redis lock and a query each second, up to an
    hour), and so was a disabled webhook's due queue."""
    failing = Receiver(status=500)
    failing.start()
    hook_settings = events_settings(settings, retry_base_s=600.0, retry_max_backoff_s=600.0)
    try:
        async with serve_app(hook_settings, api_key) as http:
            hook = await failures_hook(http, failing.url)
            path = f"/v1/webhooks/{hook['id']}"

            async def deliveries() -> list[dict]:  # type: ignore[type-arg]
                return (await http.get(f"{path}/deliveries")).json()["items"]  # type: ignore[no-any-return]

            async def stored(count: int, attempted: int) -> bool:
                items = await deliveries()
                return len(items) == count and sum(1 for d in items if d["attempts"]) == attempted

            async with running_dispatcher(hook_settings, sessionmaker, redis):
                await publish_failures(redis, sessionmaker, 1)
                await wait_for(lambda: stored(1, 1))
                await publish_failures(redis, sessionmaker, 2)
                await wait_for(lambda: stored(3, 1))
            assert len(failing.received) == 1
            # The two behind the head are due now; the head is 5-10 minutes away.
            now = datetime.now(UTC)
            waits = sorted(
                (datetime.fromisoformat(d["next_attempt_at"]) - now).total_seconds()
                for d in await deliveries()
            )
            assert waits[0] <= 0 and waits[1] <= 0 and waits[2] > 250, waits
            probe = WebhookDispatcher(hook_settings, sessionmaker, redis, consumer="probe")
            assert await probe.due_webhooks() == []

            # Disabled, its head due: still nothing to send.
            assert (await http.patch(path, json={"enabled": False})).status_code == 200
            async with sessionmaker.begin() as session:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.webhook_id == uuid.UUID(hook["id"]))
                    .values(next_attempt_at=datetime.now(UTC))
                )
            assert await probe.due_webhooks() == []
            # Enabled again (what waits is tried at once): due.
            assert (await http.patch(path, json={"enabled": True})).status_code == 200
            assert await probe.due_webhooks() == [uuid.UUID(hook["id"])]
    finally:
        failing.stop()


async def test_a_patch_of_one_filter_leaves_the_others(settings, api_key):
    """PATCH {"filters": {"labels": [...]}} emptied node_ids and people: a webhook kept to one
    camera then fired for every camera."""
    node = str(uuid.uuid4())
    async with serve_app(events_settings(settings), api_key) as http:
        hook = (
            await http.post(
                "/v1/webhooks",
                json={
                    "url": "http://127.0.0.1:9/hook",
                    "event_types": ["object.detected", "face.identified"],
                    "filters": {"node_ids": [node], "labels": ["person"], "people": ["alice"]},
                },
            )
        ).json()
        patched = await http.patch(
            f"/v1/webhooks/{hook['id']}", json={"filters": {"labels": ["person", "car"]}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["filters"] == {
            "node_ids": [node],
            "labels": ["person", "car"],
            "people": ["alice"],
        }
        cleared = await http.patch(f"/v1/webhooks/{hook['id']}", json={"filters": {"people": []}})
        assert cleared.json()["filters"]["people"] == []
        assert cleared.json()["filters"]["node_ids"] == [node]


async def test_node_events_are_refused_to_a_key_that_cannot_receive_them(settings, make_key):
    """Node events belong to no key: only admin keys' webhooks get them. A read-write key's
    subscription to node.online was accepted and then waited for ever."""
    writer = await make_key("writer", scopes=(Scope.read, Scope.write))
    admin = await make_key("admin", scopes=(Scope.admin,))
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["job.done", "node.online"]}
    async with serve_app(events_settings(settings), writer) as http:
        refused = await http.post("/v1/webhooks", json=body)
        assert refused.status_code == 422, refused.text
        assert "node.online" in refused.json()["detail"]
        hook = (await http.post("/v1/webhooks", json={**body, "event_types": ["job.done"]})).json()
        patched = await http.patch(
            f"/v1/webhooks/{hook['id']}", json={"event_types": ["node.offline"]}
        )
        assert patched.status_code == 422, patched.text
    async with serve_app(events_settings(settings), admin) as http:
        assert (await http.post("/v1/webhooks", json=body)).status_code == 201


async def test_a_lost_secret_is_replaced_and_what_follows_is_signed_with_the_new_one(
    settings, api_key, make_key, redis, sessionmaker, receiver
):
    """A lost or leaked secret meant deleting the webhook (its queue with it) and making
    another: the secret is replaced in place now, shown once."""
    receiver.start()
    hook_settings = events_settings(settings)
    async with serve_app(hook_settings, api_key) as http:
        hook = await failures_hook(http, receiver.url)
        rotated = await http.post(f"/v1/webhooks/{hook['id']}/secret")
        assert rotated.status_code == 200, rotated.text
        secret = rotated.json()["secret"]
        assert secret.startswith("whsec_") and secret != hook["secret"]
        assert rotated.json()["id"] == hook["id"] and rotated.json()["url"] == receiver.url
        assert "secret" not in (await http.get(f"/v1/webhooks/{hook['id']}")).json()
        async with running_dispatcher(hook_settings, sessionmaker, redis):
            await publish_failures(redis, sessionmaker, 1)
            await wait_for(lambda: len(receiver.received) == 1)
    [delivery] = receiver.received
    StandardWebhook(secret).verify(delivery.body, delivery.headers)
    with pytest.raises(Exception, match=r"(?i)signature"):
        StandardWebhook(hook["secret"]).verify(delivery.body, delivery.headers)
    other = await make_key("other", scopes=(Scope.read, Scope.write))
    async with serve_app(hook_settings, other) as http:  # another key's webhook: not found
        assert (await http.post(f"/v1/webhooks/{hook['id']}/secret")).status_code == 404
