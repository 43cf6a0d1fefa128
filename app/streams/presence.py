"""Who is alive and who holds what: worker heartbeats and the maintenance lock."""

import time
from typing import cast

from redis.asyncio import Redis

from app.streams.keys import WORKER_MODELS, WORKERS

# --- worker heartbeats ---------------------------------------------------------------------


async def beat(redis: "Redis", consumer: str, *, ttl_s: float) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(WORKERS, {consumer: now + ttl_s})
        pipe.zremrangebyscore(WORKERS, "-inf", now)
        await pipe.execute()


async def forget_worker(redis: "Redis", consumer: str) -> None:
    await redis.zrem(WORKERS, consumer)
    await redis.hdel(WORKER_MODELS, consumer)


async def live_workers(redis: "Redis") -> list[str]:
    members = cast(list[bytes], await redis.zrangebyscore(WORKERS, time.time(), "+inf"))
    return [m.decode() for m in members]


async def announce_model(redis: "Redis", consumer: str, model: str) -> None:
    """Record the face embedding model a worker runs (its faces are embedded by it)."""
    await redis.hset(WORKER_MODELS, consumer, model)


async def live_worker_models(redis: "Redis") -> dict[str, str | None]:
    """The live workers and the face embedding model each announced (None: not announced)."""
    live = await live_workers(redis)
    if not live:
        return {}
    models = cast(list[bytes | None], await redis.hmget(WORKER_MODELS, live))
    return {c: (m.decode() if m is not None else None) for c, m in zip(live, models, strict=True)}


# --- maintenance lock ----------------------------------------------------------------------


async def try_lock(redis: "Redis", key: str, *, owner: str, ttl_s: float) -> bool:
    """SET NX PX: True if `owner` now holds `key` for ttl_s."""
    return bool(await redis.set(key, owner, nx=True, px=max(1, int(ttl_s * 1000))))


async def extend_lock(redis: "Redis", key: str, *, owner: str, ttl_s: float) -> bool:
    """Keep holding `key` another ttl_s; False when `owner` no longer holds it."""
    held = cast(bytes | None, await redis.get(key))
    if held is None or held.decode() != owner:
        return False
    return bool(await redis.pexpire(key, max(1, int(ttl_s * 1000))))


async def release_lock(redis: "Redis", key: str, *, owner: str) -> None:
    held = cast(bytes | None, await redis.get(key))
    if held is not None and held.decode() == owner:
        await redis.delete(key)
