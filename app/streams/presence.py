"""Who is alive and who holds what: worker heartbeats and the maintenance lock."""

import time
from typing import cast

from redis.asyncio import Redis

from app.streams.keys import WORKERS

# --- worker heartbeats ---------------------------------------------------------------------


async def beat(redis: "Redis", consumer: str, *, ttl_s: float) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(WORKERS, {consumer: now + ttl_s})
        pipe.zremrangebyscore(WORKERS, "-inf", now)
        await pipe.execute()


async def forget_worker(redis: "Redis", consumer: str) -> None:
    await redis.zrem(WORKERS, consumer)


async def live_workers(redis: "Redis") -> list[str]:
    members = cast(list[bytes], await redis.zrangebyscore(WORKERS, time.time(), "+inf"))
    return [m.decode() for m in members]


# --- maintenance lock ----------------------------------------------------------------------


async def try_lock(redis: "Redis", key: str, *, owner: str, ttl_s: float) -> bool:
    """SET NX PX: True if `owner` now holds `key` for ttl_s."""
    return bool(await redis.set(key, owner, nx=True, px=max(1, int(ttl_s * 1000))))
