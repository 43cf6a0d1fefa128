"""THE wire protocol between API and workers: stream names, message schemas, publish/read helpers.

One package, one module per concern: `keys` (names, schema version, entry types), `queue` (job
messages and the work queue), `events` (job and node events), `frames` (node frame bytes),
`acks` (what acking an entry takes), `presence` (worker heartbeats, locks). The names below
are re-exported so that `from app import streams; streams.X` reads as one protocol.

Every message carries `v` (schema version). Redis clients are created with bytes responses
(decode_responses=False): stream fields and node frames are bytes.

- `lookout:jobs` (group `detectors`): one entry per job to run (JobMessage).
- `lookout:job:{id}`: what workers (and the reconciler) report of that job: events (status |
  result | error), in order, one entry per step (a result and its final status share one);
  expires `job_events_ttl_s` after its last entry. It starts with the first report: the job's
  `queued` event is its row in Postgres, sent from there by the job's events socket.
- `lookout:events`: firehose of finished jobs (result | error) and of edge node status changes
  (node), MAXLEN-trimmed. Consumers dispatch on `type` and skip types they do not know.
- `lookout:jobs:dead`: messages that exceeded max deliveries, with the last error.
- `lookout:jobs:entry:{id}`: the stream entry id of the job's latest message, set with the XADD
  and deleted with the XACK. The reconciler reads it to tell a job whose message is still in
  the stream from one that Redis lost.
- `lookout:workers`: sorted set of worker heartbeats (member: consumer name, score: the epoch
  second the beat expires). /health/ready counts the unexpired ones.
- `lookout:maintenance:lock`: held by the one API replica running the reconciler + janitor.
- `lookout:ratelimit:{owner}:{window}`: request counter of one API key in one window.
- `lookout:frame:{job_id}` (in the *frames* Redis): the bytes of a node frame that must not be
  stored (`store_frames` false). The job message names it in `frame_key`; it is deleted when
  the job ends (done, failed, skipped or dead-lettered) and expires after `frame_ttl_ms` anyway.

The frames Redis (settings.redis.frames_url) keeps nothing on disk; the main Redis may (AOF in
production, for the work in flight), so frame bytes never go into anything written to it. Where
no frames URL is set the main Redis holds the frames too (`lookout up`: no persistence at all).
"""

from app.streams.events import (
    NODE_EVENT,
    EventType,
    NodeChange,
    firehose_tail,
    has_terminal_event,
    is_terminal,
    make_event,
    make_node_event,
    publish_firehose_event,
    publish_job_event,
    publish_job_events,
    read_firehose,
    read_job_events,
)
from app.streams.firehose_groups import (
    CLUSTERS_GROUP,
    FIREHOSE_GROUPS,
    MQTT_GROUP,
    MQTT_STATUS,
    STALE_CLAIM_MS,
    WEBHOOKS_GROUP,
    FirehoseReader,
    ack_firehose,
    claim_stale_firehose,
    consumer_name,
    ensure_firehose_groups,
    firehose_groups_lag,
    read_firehose_group,
    webhook_lock_key,
)
from app.streams.frames import frames_present, get_frames
from app.streams.keys import (
    DEAD,
    ENTRY_MARKER_TTL_S,
    FIREHOSE,
    GROUP,
    IMAGES_SWEPT,
    JOBS,
    MAINTENANCE_LOCK,
    MAX_BLOCK_MS,
    SCHEMA_VERSION,
    WORKERS,
    AckEntry,
    Fields,
    ProtocolError,
    RawEntries,
    StreamId,
    client_limit_key,
    frame_key,
    frame_ttl_ms,
    import_lock_key,
    job_entry_key,
    job_events_key,
    rate_limit_key,
    retry_after_s,
)
from app.streams.presence import (
    announce_model,
    beat,
    extend_lock,
    forget_worker,
    live_worker_models,
    live_workers,
    release_lock,
    try_lock,
)
from app.streams.queue import (
    LAG_COUNT_CAP,
    JobMessage,
    QueueStats,
    ack,
    ack_many,
    claim_stale,
    dead_letter,
    delivery_count,
    enqueue_job,
    ensure_group,
    is_missing_group,
    jobs_with_live_entry,
    queue_stats,
    read_new,
)

__all__ = [
    "CLUSTERS_GROUP",
    "DEAD",
    "ENTRY_MARKER_TTL_S",
    "FIREHOSE",
    "FIREHOSE_GROUPS",
    "GROUP",
    "IMAGES_SWEPT",
    "JOBS",
    "LAG_COUNT_CAP",
    "MAINTENANCE_LOCK",
    "MAX_BLOCK_MS",
    "MQTT_GROUP",
    "MQTT_STATUS",
    "NODE_EVENT",
    "SCHEMA_VERSION",
    "STALE_CLAIM_MS",
    "WEBHOOKS_GROUP",
    "WORKERS",
    "AckEntry",
    "EventType",
    "Fields",
    "FirehoseReader",
    "JobMessage",
    "NodeChange",
    "ProtocolError",
    "QueueStats",
    "RawEntries",
    "StreamId",
    "ack",
    "ack_firehose",
    "ack_many",
    "announce_model",
    "beat",
    "claim_stale",
    "claim_stale_firehose",
    "client_limit_key",
    "consumer_name",
    "dead_letter",
    "delivery_count",
    "enqueue_job",
    "ensure_firehose_groups",
    "ensure_group",
    "extend_lock",
    "firehose_groups_lag",
    "firehose_tail",
    "forget_worker",
    "frame_key",
    "frame_ttl_ms",
    "frames_present",
    "get_frames",
    "has_terminal_event",
    "import_lock_key",
    "is_missing_group",
    "is_terminal",
    "job_entry_key",
    "job_events_key",
    "jobs_with_live_entry",
    "live_worker_models",
    "live_workers",
    "make_event",
    "make_node_event",
    "publish_firehose_event",
    "publish_job_event",
    "publish_job_events",
    "queue_stats",
    "rate_limit_key",
    "read_firehose",
    "read_firehose_group",
    "read_job_events",
    "read_new",
    "release_lock",
    "retry_after_s",
    "try_lock",
    "webhook_lock_key",
]
