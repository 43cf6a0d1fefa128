"""Acking job entries: XACK, the entry marker, the node frame (one helper for every MULTI)."""

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from app.streams.keys import GROUP, JOBS, AckEntry, job_entry_key


def frame_keys_of(entries: Sequence[AckEntry]) -> list[str]:
    return [key for _, _, key in entries if key is not None]


def append_acks(pipe: "Pipeline", entries: Sequence[AckEntry], *, delete_frames: bool) -> None:
    for entry_id, job_id, frame_key in entries:
        pipe.xack(JOBS, GROUP, entry_id)
        if job_id is not None:
            pipe.delete(job_entry_key(job_id))
        if frame_key is not None and delete_frames:
            pipe.delete(frame_key)
