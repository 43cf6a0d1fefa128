"""Firehose consumer groups: each reader of results (webhooks and MQTT in app/events_out, the
unknown-face clustering in app/gallery) reads `lookout:events` through a group of its own, so it
resumes where it stopped after a restart, and a slow reader never slows a job (ARCHITECTURE.md).

- groups `webhooks`, `mqtt` and `clusters` on `lookout:events`;
- `lookout:webhooks:lock:{id}`: held by the one dispatcher delivering that webhook's queue;
- `lookout:mqtt:status`: the MQTT bridge's connection state (JSON), read by the API.
"""

import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from app.streams.events import decode_firehose_entries
from app.streams.keys import FIREHOSE, MAX_BLOCK_MS, RawEntries, StreamId
from app.streams.queue import LAG_COUNT_CAP, is_missing_group

WEBHOOKS_GROUP = "webhooks"
MQTT_GROUP = "mqtt"
CLUSTERS_GROUP = "clusters"
FIREHOSE_GROUPS = (WEBHOOKS_GROUP, MQTT_GROUP, CLUSTERS_GROUP)
# A consumer's unacked firehose entries are taken over by another after this long.
STALE_CLAIM_MS = 60_000


def webhook_lock_key(webhook_id: uuid.UUID | str) -> str:
    """Held by the one dispatcher delivering this webhook's queue (keeps its order)."""
    return f"lookout:webhooks:lock:{webhook_id}"


async def ensure_firehose_groups(redis: "Redis", groups: Iterable[str] = FIREHOSE_GROUPS) -> None:
    """Create the firehose consumer groups at the stream's current end; idempotent.

    The API creates them at start too, so events published while `lookout events` is down are
    waiting for it (as long as MAXLEN has not trimmed them).
    """
    for group in groups:
        try:
            await redis.xgroup_create(FIREHOSE, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def read_firehose_group(
    redis: "Redis", group: str, consumer: str, *, count: int, block_ms: int | None, pending: bool
) -> list[tuple[StreamId, dict[str, Any] | None]]:
    """Firehose entries for this consumer: its own unacked ones (pending=True, from the start)
    or new ones. An entry that is not a valid event (or was trimmed) comes back as None."""
    if block_ms is not None:
        block_ms = min(block_ms, MAX_BLOCK_MS)
    response = cast(
        list[tuple[bytes, RawEntries]],
        await redis.xreadgroup(
            group, consumer, {FIREHOSE: "0" if pending else ">"}, count=count, block=block_ms
        ),
    )
    return decode_firehose_entries(response[0][1] if response else [])


async def ack_firehose(redis: "Redis", group: str, entry_ids: Sequence[StreamId]) -> None:
    if entry_ids:
        await redis.xack(FIREHOSE, group, *entry_ids)


async def firehose_groups_lag(redis: "Redis") -> dict[str, tuple[int, int]]:
    """(pending, lag) of every firehose group that exists, by name, from one XINFO GROUPS."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(FIREHOSE)
    except ResponseError:
        return {}
    lags: dict[str, tuple[int, int]] = {}
    for found in groups:
        lag = found.get("lag")
        if lag is None:
            last = _name(found.get("last-delivered-id")) or "0-0"
            entries = cast(
                RawEntries, await redis.xrange(FIREHOSE, min=f"({last}", count=LAG_COUNT_CAP)
            )
            lag = len(entries)
        lags[_name(found.get("name")) or ""] = (int(found.get("pending", 0)), int(lag))
    return lags


# The MQTT bridge's connection state (JSON), refreshed while it runs; read by GET /v1/events/status.
MQTT_STATUS = "lookout:mqtt:status"


async def claim_stale_firehose(
    redis: "Redis", group: str, consumer: str, *, min_idle_ms: int, count: int
) -> int:
    """Move firehose entries a dead consumer of `group` left unacked to `consumer`; they are
    then read with its own pending entries. Returns how many were claimed."""
    response = await redis.xautoclaim(
        FIREHOSE, group, consumer, min_idle_ms, start_id="0-0", count=count
    )
    return len(cast(RawEntries, response[1]))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class FirehoseReader:
    """One consumer's reads of a firehose group; the caller acks each entry once handled.

    Its own unacked entries come first: after a start, after `retry()` (a failure: what it read
    but never acked), and after each claim of the entries dead consumers left. Those are claimed
    at the start and then every STALE_CLAIM_MS, not only at a start: a consumer is named after
    its host and pid, so one that died (this process before a restart included) leaves its
    entries under a name nobody reads, and at this one's start they were not yet idle long
    enough to claim. A group Redis lost (wiped, or restarted empty) is made again, from now.
    """

    def __init__(
        self, redis: "Redis", group: str, *, count: int, consumer: str | None = None
    ) -> None:
        self.redis = redis
        self.group = group
        self.count = count
        self.consumer = consumer or consumer_name()
        self.stale_claim_ms = STALE_CLAIM_MS
        self._own_pending = True
        self._claimed_at = -math.inf

    def retry(self) -> None:
        """Read this consumer's unacked entries again (after a failure to handle them)."""
        self._own_pending = True

    async def read(self, *, block_ms: int) -> list[tuple[StreamId, dict[str, Any] | None]]:
        """The next entries: this consumer's unacked ones while there are any, else new ones
        ([] when none came within block_ms). An invalid or trimmed entry is None: ack it too."""
        while True:
            try:
                if time.monotonic() - self._claimed_at > self.stale_claim_ms / 1000:
                    await ensure_firehose_groups(self.redis, [self.group])
                    await claim_stale_firehose(
                        self.redis,
                        self.group,
                        self.consumer,
                        min_idle_ms=self.stale_claim_ms,
                        count=self.count,
                    )
                    self._claimed_at = time.monotonic()
                    self._own_pending = True
                entries = await read_firehose_group(
                    self.redis,
                    self.group,
                    self.consumer,
                    count=self.count,
                    block_ms=None if self._own_pending else block_ms,
                    pending=self._own_pending,
                )
            except ResponseError as exc:
                if not is_missing_group(exc):
                    raise
                self._claimed_at = -math.inf  # made again (from now) at the next turn
                continue
            if self._own_pending and not entries:
                self._own_pending = False
                continue
            return entries

    async def ack(self, entry_ids: Sequence[StreamId]) -> None:
        await ack_firehose(self.redis, self.group, entry_ids)


def _name(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)
