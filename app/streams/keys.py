"""Stream and key names, schema version, entry types: what API and workers agree on."""

import math
import time
import uuid

# 2: node frames moved out of the message (v1 `image`, inline bytes) into `frame_key`.
SCHEMA_VERSION = 2
# The longest one blocking read may wait. Callers that wait longer loop; the Redis client's
# socket timeout (settings.redis.socket_timeout_s) must exceed this, or a quiet stream would
# look like a dead connection.
MAX_BLOCK_MS = 5000
JOBS = "lookout:jobs"
GROUP = "detectors"
DEAD = "lookout:jobs:dead"
FIREHOSE = "lookout:events"
WORKERS = "lookout:workers"
# consumer name → the face embedding model its pack runs (a model upgrade waits for the switch)
WORKER_MODELS = "lookout:workers:models"
MAINTENANCE_LOCK = "lookout:maintenance:lock"
# Set after the image store's sweep, for as long as the next should wait (app/maintenance.py).
IMAGES_SWEPT = "lookout:maintenance:images-swept"
# A job's entry marker outlives any sane queue wait; if it expires the reconciler re-enqueues
# the job, which is harmless (a second message for a finished job is skipped).
ENTRY_MARKER_TTL_S = 7 * 24 * 3600

StreamId = bytes  # Redis stream entry id, e.g. b"1718000000000-0"
Fields = dict[bytes, bytes]
# Entries as Redis returns them; fields are None for an entry trimmed away while pending.
RawEntries = list[tuple[StreamId, Fields | None]]
# What acking one entry takes (see `ack`): its id, its job (whose entry marker goes), and its
# node frame's key (the frame goes too), if any.
AckEntry = tuple[StreamId, uuid.UUID | None, str | None]


class ProtocolError(ValueError):
    """A stream entry that does not follow this schema (wrong version, missing fields)."""


def job_events_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:job:{job_id}"


def job_entry_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:jobs:entry:{job_id}"


def import_lock_key(import_id: uuid.UUID | str) -> str:
    """Held by the API process running a bulk import (POST /v1/people/import)."""
    return f"lookout:import:{import_id}:lock"


def rate_limit_key(owner: str, window: int) -> str:
    return f"lookout:ratelimit:{owner}:{window}"


def client_limit_key(kind: str, client: str, window: int) -> str:
    """Per-client-address counters (failed authentications, WebSocket connects) in a window."""
    return f"lookout:clientlimit:{kind}:{client}:{window}"


def frame_key(job_id: uuid.UUID | str) -> str:
    return f"lookout:frame:{job_id}"


def frame_ttl_ms(*, job_timeout_s: float, max_deliveries: int) -> int:
    """How long a node frame is kept for its job: past this it is gone, and so is the job.

    Each delivery (max_deliveries, then one more that dead-letters it) may run job_timeout_s
    and then sit job_timeout_s before another worker reclaims it. A frame still queued after
    that fails its job: a live frame that old has no one waiting for it.
    """
    return int(2 * job_timeout_s * (max_deliveries + 1) * 1000)


def retry_after_s(window_s: int) -> int:
    """Seconds until the current fixed window of `window_s` ends (at least 1)."""
    return max(1, math.ceil(window_s - time.time() % window_s))
