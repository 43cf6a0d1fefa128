"""One firehose reader per API process, fanned out to every `/v1/ws` subscriber.

A blocking XREAD per subscriber would hold one Redis connection per client; here one task
reads `lookout:events` and copies each event into every subscriber's bounded queue. A client
too slow to drain its queue is dropped (closed with 1013, "try again later") rather than
allowed to grow memory or stall the others.
"""

import asyncio
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app import streams
from app.cancellation import cancel_and_wait

log = structlog.get_logger()

READ_BLOCK_MS = 1000
RETRY_S = 1.0

Event = dict[str, Any]


class Subscription:
    """A subscriber's bounded queue of events as JSON text. `None` in the queue means: dropped
    for being too slow.

    With an `owner`, only that owner's events are queued (events carry `owner_id`).
    """

    def __init__(self, max_queued: int, owner: str | None = None) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max_queued)
        self.owner = owner
        self.dropped = False

    def offer(self, event: Event, text: str) -> None:
        """Queue `text` (`event` as JSON) if this subscriber is to see `event`."""
        if self.dropped or (self.owner is not None and event.get("owner_id") != self.owner):
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            # Discard the backlog and leave only the verdict, which the sender sees next.
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class Firehose:
    def __init__(self, redis: Redis, *, max_queued_per_client: int) -> None:
        self.redis = redis
        self.max_queued_per_client = max_queued_per_client
        self.subscriptions: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None

    def subscribe(self, owner: str | None = None) -> Subscription:
        subscription = Subscription(self.max_queued_per_client, owner)
        self.subscriptions.add(subscription)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    async def close(self) -> None:
        # redis-py may absorb a cancel that lands mid-XREAD (it drops the connection and retries
        # the read), so the loop is also told to end: with no subscriptions it stops after the
        # current read (READ_BLOCK_MS at most), or at the next cancel.
        self.subscriptions.clear()
        if self._reader is not None:
            await cancel_and_wait([self._reader])

    async def _read_forever(self) -> None:
        after: streams.StreamId | None = None
        while self.subscriptions:
            try:
                if after is None:
                    after = await streams.firehose_tail(self.redis)
                entries = await streams.read_firehose(
                    self.redis, after=after, block_ms=READ_BLOCK_MS
                )
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("firehose_read_failed", error=repr(exc))
                await asyncio.sleep(RETRY_S)
                continue
            for entry_id, event in entries:
                after = entry_id
                if event is None:
                    log.warning("firehose_entry_invalid", entry_id=entry_id.decode())
                    continue
                # Encoded once for every subscriber: a thousand sockets, a thousand encodes.
                text = orjson.dumps(event).decode()
                for subscription in list(self.subscriptions):
                    subscription.offer(event, text)
        self._reader = None
