"""Node frames in the frames Redis (or the main one when no frames URL is set)."""

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis


def elsewhere(redis: "Redis", frames_redis: "Redis | None") -> "Redis | None":
    """The frames Redis when it is a server of its own; None when the main Redis holds frames."""
    return None if frames_redis is None or frames_redis is redis else frames_redis


async def delete_separate_frames(
    redis: "Redis", frame_keys: Sequence[str], frames_redis: "Redis | None"
) -> bool:
    """Delete these frames now if they live in a Redis of their own; True when they are in the
    main Redis instead, for the caller's MULTI to delete."""
    separate = elsewhere(redis, frames_redis)
    if frame_keys and separate is not None:
        await separate.delete(*frame_keys)
    return separate is None


async def get_frames(frames_redis: "Redis", keys: Sequence[str]) -> list[bytes | None]:
    """The bytes of these node frames, in order, in one MGET; None for a frame that is gone."""
    if not keys:
        return []
    return cast(list[bytes | None], await frames_redis.mget(list(keys)))


async def frames_present(frames_redis: "Redis", keys: Sequence[str]) -> set[str]:
    """Which of these node frames are still there (not expired, not lost)."""
    if not keys:
        return set()
    async with frames_redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        found = cast(list[int], await pipe.execute())
    return {key for key, exists in zip(keys, found, strict=True) if exists}
