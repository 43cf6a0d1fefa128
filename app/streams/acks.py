"""Acking job entries: XACK, the entry marker, the node frame (one helper for every MULTI)."""

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from app.streams.keys import GROUP, JOBS, AckEntry, job_entry_key


def frame_keys_of(entries: Sequence[AckEntry]) -> list[str]:
    return [key for _, _, key in entries if key is not None]


def append_acks(pipe: "Pipeline", entries: Sequence[AckEntry], *, delete_frames: bool) -> None:
    """Two commands for any number of entries: one XACK of every id, one DEL of every entry
    marker (and node frame, with delete_frames)."""
    if not entries:
        return
    pipe.xack(JOBS, GROUP, *(entry_id for entry_id, _, _ in entries))
    doomed = [job_entry_key(job_id) for _, job_id, _ in entries if job_id is not None]
    if delete_frames:
        doomed += frame_keys_of(entries)
    if doomed:
        pipe.delete(*doomed)
