"""Webhook dispatcher: the firehose's `webhooks` consumer group → signed POSTs, at least once.

Two loops in `lookout events`:

- ingest: XREADGROUP firehose entries (its own unacked ones first, after a restart), turn each
  into outbound events (events.py), and INSERT one delivery row per matching webhook (keyed by
  webhook and event id: reading an entry twice stores nothing twice). XACK after the commit.
  Postgres then holds every delivery until it succeeds or is dead-lettered. An entry Postgres
  refuses for what it holds (a data error, SQLSTATE class 22 or 54) is logged and dropped, alone.
- deliver: for each webhook with a due delivery, one task (and, across replicas, one holder of
  the webhook's Redis lock) sends its pending deliveries one by one in `seq` order. A failure
  stops that webhook's queue until the retry (exponential backoff, jittered), so a receiver
  that is down gets everything in order once it is back. After `retry_window_s` a failing
  delivery becomes `dead` (the dead letter) and the queue moves on.

Every request goes to the address the SSRF guard just checked (never re-resolved by the HTTP
client), redirects are not followed.
"""

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import ColumnElement, case, delete, exists, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.cancellation import cancel_and_wait
from app.events_out import events, signing, ssrf
from app.gallery.people import existing_people
from app.jobs.service import existing_jobs
from app.models import ApiKey, DeliveryStatus, Webhook, WebhookDelivery
from app.settings import Settings

log = structlog.get_logger()

USER_AGENT = "Lookout-Webhooks/1"
# Finished deliveries beyond events.keep_deliveries per webhook are pruned this often.
PRUNE_INTERVAL_S = 300.0
RETRY_S = 1.0
# Pending deliveries of one webhook read per query (then sent one by one, in order).
HEAD_BATCH = 50


def backoff_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """Wait before retry number `attempts` (≥ 1): base·2^(attempts−1), capped, jittered to
    between half and all of it (so receivers coming back are not hit by every sender at once)."""
    wait = min(max_s, base_s * 2 ** min(attempts - 1, 30))
    return random.uniform(wait / 2, wait)


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        *,
        http: httpx.AsyncClient | None = None,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.consumer = consumer or streams.consumer_name()
        self.http = http or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._own_http = http is None
        self.allowed = ssrf.parse_networks(settings.events.allowed_networks)
        self.wake = asyncio.Event()
        self.draining: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.semaphore = asyncio.Semaphore(settings.events.max_concurrent_webhooks)
        self.delivered = 0  # successful POSTs, for the benchmark and the logs

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(self.ingest_loop(stop), self.deliver_loop(stop))
        finally:
            await cancel_and_wait(self.draining.values())
            if self._own_http:
                await self.http.aclose()

    # --- ingest --------------------------------------------------------------------------

    async def ingest_loop(self, stop: asyncio.Event) -> None:
        reader = streams.FirehoseReader(
            self.redis,
            streams.WEBHOOKS_GROUP,
            count=self.settings.events.read_count,
            consumer=self.consumer,
        )
        while not stop.is_set():
            try:
                entries = await reader.read(block_ms=1000)
                if entries:
                    await self.ingest_or_drop(entries)
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError) as exc:
                if isinstance(exc, ResponseError):
                    log.error("webhook_ingest_failed", error=repr(exc))
                else:
                    log.warning("webhook_ingest_retry", error=repr(exc))
                reader.retry()
                await _sleep_or_stop(stop, RETRY_S)

    async def ingest_or_drop(
        self, entries: Sequence[tuple[streams.StreamId, dict[str, Any] | None]]
    ) -> None:
        """`ingest`; if Postgres refuses the entries for what they hold, each alone, and one
        refused alone is dropped: read again it would fail again, and hold every webhook's
        events behind it. Any other failure (an outage, a deadlock) goes to the caller, which
        waits and reads the same entries again."""
        try:
            await self.ingest(entries)
            return
        except DBAPIError as exc:
            if not _refused_for_content(exc):
                raise
        for entry in entries:
            try:
                await self.ingest([entry])
            except DBAPIError as exc:
                if not _refused_for_content(exc):
                    raise
                log.error("webhook_event_dropped", entry_id=entry[0].decode(), error=repr(exc))
                await streams.ack_firehose(self.redis, streams.WEBHOOKS_GROUP, [entry[0]])

    async def ingest(
        self, entries: Sequence[tuple[streams.StreamId, dict[str, Any] | None]]
    ) -> int:
        """Store the deliveries of these firehose entries, then ack them. Returns rows added."""
        outbound: list[events.OutboundEvent] = []
        for entry_id, entry in entries:
            if entry is not None:
                outbound.extend(
                    events.from_firehose(
                        entry_id, entry, public_url=self.settings.events.public_url
                    )
                )
        added = 0
        if outbound:
            async with self.sessionmaker.begin() as session:
                outbound = await _still_there(session, outbound)
                webhooks = list(
                    await session.scalars(select(Webhook).where(Webhook.enabled, _owner_usable()))
                )
                rows = [
                    {
                        "webhook_id": webhook.id,
                        "event_id": event["id"],
                        "event_type": event["type"],
                        "payload": event,
                    }
                    for event in outbound
                    for webhook in webhooks
                    if _wants(webhook, event)
                ]
                if rows:
                    result = await session.execute(
                        insert(WebhookDelivery)
                        .values(rows)
                        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
                        .returning(WebhookDelivery.id)
                    )
                    added = len(result.all())
        await streams.ack_firehose(
            self.redis, streams.WEBHOOKS_GROUP, [entry_id for entry_id, _ in entries]
        )
        if added:
            self.wake.set()
        return added

    # --- deliver -------------------------------------------------------------------------

    async def deliver_loop(self, stop: asyncio.Event) -> None:
        last_prune = time.monotonic()
        while not stop.is_set():
            self.wake.clear()
            try:
                for webhook_id in await self.due_webhooks():
                    task = self.draining.get(webhook_id)
                    if task is None or task.done():
                        self.draining[webhook_id] = asyncio.create_task(self.drain(webhook_id))
                if time.monotonic() - last_prune > PRUNE_INTERVAL_S:
                    last_prune = time.monotonic()
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError) as exc:
                log.warning("webhook_deliver_retry", error=repr(exc))
            self.draining = {k: t for k, t in self.draining.items() if not t.done()}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.events.poll_interval_s)

    async def due_webhooks(self) -> list[uuid.UUID]:
        """The webhooks whose queue's head is due, of those that may be sent to now.

        Only the head counts: deliveries queue behind it in order, so a webhook whose head
        waits out a backoff has nothing to send, however many later ones are due (they were
        drained at every poll, up to an hour, to find the head not due); a disabled webhook's
        or a revoked key's queue likewise waits. One index probe per webhook (the head by
        ix_webhook_deliveries_pending), not a scan of every pending delivery."""
        head = (
            select(WebhookDelivery.next_attempt_at)
            .where(
                WebhookDelivery.webhook_id == Webhook.id,
                WebhookDelivery.status == DeliveryStatus.pending,
            )
            .order_by(WebhookDelivery.seq)
            .limit(1)
            .lateral("head")
        )
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Webhook.id)
                .join(head, true())
                .where(Webhook.enabled, _owner_usable(), head.c.next_attempt_at <= func.now())
            )
            return list(rows)

    async def drain(self, webhook_id: uuid.UUID) -> None:
        """Send this webhook's due deliveries in order until its queue is empty or one fails."""
        lock_ttl_s = self.settings.events.webhook_timeout_s * 2 + 30
        lock = streams.webhook_lock_key(webhook_id)
        async with self.semaphore:
            try:
                if not await streams.try_lock(
                    self.redis, lock, owner=self.consumer, ttl_s=lock_ttl_s
                ):
                    return  # another dispatcher is on it
                try:
                    while await self._deliver_head(webhook_id, lock, lock_ttl_s):
                        pass
                finally:
                    await _release(self.redis, lock, self.consumer)
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError) as exc:
                log.warning("webhook_drain_failed", webhook_id=str(webhook_id), error=repr(exc))

    async def _deliver_head(self, webhook_id: uuid.UUID, lock: str, lock_ttl_s: float) -> bool:
        """Attempt the oldest pending deliveries, in order, while they succeed (up to
        HEAD_BATCH per query); True if the queue may hold more to send now. The webhook's lock
        is held another lock_ttl_s after each attempt (a batch of slow receivers' answers
        outlasted it, and another dispatcher then sent the same queue beside this one); once
        lost, this one stops."""
        # The queue's head and the webhook's URL and secret in one statement, so from one
        # snapshot: read apart, a PATCH of the URL committing between the two reads made its
        # "retry now" due with the old URL read, and that attempt's failure put the next try
        # back at its backoff (CI run 108).
        async with self.sessionmaker() as session:
            heads = (
                await session.execute(
                    select(WebhookDelivery, Webhook.url, Webhook.secret)
                    .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                    .where(
                        WebhookDelivery.webhook_id == webhook_id,
                        WebhookDelivery.status == DeliveryStatus.pending,
                        Webhook.enabled,
                        _owner_usable(),
                    )
                    .order_by(WebhookDelivery.seq)
                    .limit(HEAD_BATCH)
                )
            ).all()
            if not heads:
                # A disabled webhook keeps its queue until it is enabled again; one whose key was
                # revoked or expired, until the key is usable again (never, for a revoked one).
                return False
            url, secret = heads[0].url, heads[0].secret
            batch = [
                (h.id, h.event_id, h.payload, h.attempts, h.created_at, h.next_attempt_at)
                for h, _, _ in heads
            ]
        for delivery_id, event_id, payload, attempts, queued_at, due_at in batch:
            if due_at > datetime.now(UTC):
                return False
            if not await self._attempt_one(
                webhook_id, url, secret, delivery_id, event_id, payload, attempts, queued_at, due_at
            ):
                return False
            if not await streams.extend_lock(
                self.redis, lock, owner=self.consumer, ttl_s=lock_ttl_s
            ):
                log.warning("webhook_lock_lost", webhook_id=str(webhook_id))
                return False
        return len(batch) == HEAD_BATCH

    async def _attempt_one(
        self,
        webhook_id: uuid.UUID,
        url: str,
        secret: str,
        delivery_id: uuid.UUID,
        event_id: str,
        payload: dict[str, Any],
        attempts: int,
        queued_at: datetime,
        due_at: datetime,
    ) -> bool:
        """One attempt, recorded; True when the queue may go on (delivered, or dead-lettered).
        `due_at`: the next_attempt_at that made it due."""
        status_code, error = await self.attempt(url, secret, event_id, payload)
        attempts += 1
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_status_code": status_code,
            "last_error": error,
            "last_attempt_at": now,
        }
        ok = error is None
        if ok:
            values |= {"status": DeliveryStatus.delivered, "delivered_at": now}
        else:
            wait_s = backoff_s(
                attempts,
                base_s=self.settings.events.retry_base_s,
                max_s=self.settings.events.retry_max_backoff_s,
            )
            retry_at = now + timedelta(seconds=wait_s)
            if (retry_at - queued_at).total_seconds() > self.settings.events.retry_window_s:
                values["status"] = DeliveryStatus.dead
                log.warning(
                    "webhook_dead_letter",
                    webhook_id=str(webhook_id),
                    event_id=event_id,
                    attempts=attempts,
                    error=error,
                )
            else:
                # A "retry now" that came during the attempt (a new URL, a redeliver) moved the
                # row's next try past `due_at`: it stands.
                values["next_attempt_at"] = case(
                    (WebhookDelivery.next_attempt_at > due_at, WebhookDelivery.next_attempt_at),
                    else_=retry_at,
                )
        async with self.sessionmaker.begin() as session:
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
            )
        if ok:
            self.delivered += 1
        else:
            log.info(
                "webhook_attempt_failed",
                webhook_id=str(webhook_id),
                event_id=event_id,
                attempts=attempts,
                status_code=status_code,
                error=error,
            )
        # A dead letter frees the queue: go on with the next one.
        return ok or values.get("status") == DeliveryStatus.dead

    async def attempt(
        self, url: str, secret: str, event_id: str, payload: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """One signed POST. Returns (status code, error): error None means delivered."""
        try:
            target = await ssrf.resolve_target(url, self.allowed)
        except ssrf.TargetRefused as exc:
            return None, str(exc)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signing.headers(secret, message_id=event_id, timestamp_s=int(time.time()), body=body),
        }
        timeout_s = self.settings.events.webhook_timeout_s
        try:
            request_url = httpx.URL(url)
            extensions: dict[str, Any] = {}
            if request_url.host != str(target.address):
                # Connect to the checked address; the Host header and TLS SNI keep the name.
                headers["host"] = request_url.netloc.decode("ascii")
                if target.scheme == "https":
                    extensions["sni_hostname"] = target.host
                request_url = request_url.copy_with(host=str(target.address))
            # One deadline for connect, send and the answer's head, however the receiver trickles
            # them (httpx's timeout is per read); the answer's body is never read, so a receiver
            # cannot hold a delivery slot, or this process's memory, with an endless one.
            async with asyncio.timeout(timeout_s):
                async with self.http.stream(
                    "POST",
                    request_url,
                    content=body,
                    headers=headers,
                    timeout=timeout_s,
                    extensions=extensions,
                ) as response:
                    status_code = response.status_code
        except TimeoutError:
            return None, f"the receiver did not answer within {timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:
            # Anything else one delivery raises is its failure (retried, in the end dead-
            # lettered), not the end of the task that drains its webhook's queue.
            log.warning("webhook_attempt_error", error=repr(exc)[:500])
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status_code < 300:
            return status_code, None
        if 300 <= status_code < 400:
            return status_code, "the receiver redirected; redirects are not followed"
        return status_code, f"the receiver answered {status_code}"

    async def prune(self) -> None:
        """Keep the newest `keep_deliveries` finished deliveries of each webhook."""
        keep = self.settings.events.keep_deliveries
        ranked = (
            select(
                WebhookDelivery.id,
                func.row_number()
                .over(partition_by=WebhookDelivery.webhook_id, order_by=WebhookDelivery.seq.desc())
                .label("rank"),
            )
            .where(WebhookDelivery.status != DeliveryStatus.pending)
            .subquery()
        )
        async with self.sessionmaker.begin() as session:
            await session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.id.in_(select(ranked.c.id).where(ranked.c.rank > keep))
                )
            )


async def _still_there(
    session: AsyncSession, outbound: list[events.OutboundEvent]
) -> list[events.OutboundEvent]:
    """The events but those of a job, or naming a person, deleted while the event waited in the
    firehose (the dispatcher was behind, or stopped): what was deleted is not sent. The jobs and
    people are held until the deliveries commit: a deletion then finds them and deletes them."""
    of_jobs = {j for e in outbound if (j := _job_id(e)) is not None}
    named = {p for e in outbound if (p := _person_id(e)) is not None}
    jobs = await existing_jobs(session, of_jobs)
    people = await existing_people(session, named)
    return [
        e
        for e in outbound
        if ((j := _job_id(e)) is None or j in jobs)
        and ((p := _person_id(e)) is None or p in people)
    ]


def _job_id(event: events.OutboundEvent) -> str | None:
    """The job an event is about (a node's events are about none)."""
    job = event.get("job")
    return str(job["id"]) if job and job.get("id") else None


def _person_id(event: events.OutboundEvent) -> str | None:
    """The person a face.identified event names."""
    if event["type"] != "face.identified":
        return None
    return str(event["data"]["person"]["id"])


def _refused_for_content(exc: DBAPIError) -> bool:
    """Postgres refused the statement for a value it holds: a data exception (SQLSTATE class
    22: a NUL in JSON, an unrepresentable number) or a size past its limits (54)."""
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return sqlstate[:2] in ("22", "54")


def _owner_usable() -> ColumnElement[bool]:
    """The webhook's API key is neither revoked nor expired (a webhook made while keys were off
    has none): a revoked key's webhooks get nothing more, as its sockets are closed."""
    return or_(
        Webhook.owner_id.is_(None),
        exists().where(
            ApiKey.id == Webhook.owner_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
        ),
    )


def _wants(webhook: Webhook, event: events.OutboundEvent) -> bool:
    return events.visible_to(
        event,
        owner_id=str(webhook.owner_id) if webhook.owner_id is not None else None,
        sees_all=webhook.sees_all,
    ) and events.matches(
        event,
        event_types=list(webhook.event_types),
        node_ids=list(webhook.node_ids),
        labels=list(webhook.labels),
        people=list(webhook.people),
    )


_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def _release(redis: Redis, key: str, owner: str) -> None:
    await redis.eval(_RELEASE_SCRIPT, 1, key, owner)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
