"""Prometheus metrics of the API process, in a registry of its own (one per app instance).

Queue and job gauges are refreshed from Redis and Postgres when /metrics is scraped, so every
API replica reports the same cluster-wide numbers; HTTP and WebSocket metrics are per process.

Several processes (gunicorn with N uvicorn workers): a scrape reaches one worker at random, so
each worker's own numbers alone would be wrong. deploy/gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the app is imported; prometheus_client then keeps every value
in per-process files there, and /metrics merges the files of all workers (MultiProcessCollector).
How each gauge merges is its `multiprocess_mode`: WebSocket clients add up over live workers
(`livesum`); the cluster-wide gauges take the value of the latest scrape (`mostrecent`), never a
sum of the same number counted by each worker. Without the variable (uvicorn, tests) the
registry below is served as it is.
"""

import math

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds; from a cache hit to a ?wait= upload.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def multiprocess_mode() -> bool:
    """Whether metric values live in PROMETHEUS_MULTIPROC_DIR's files.

    prometheus_client decides this once, when it is imported, from the environment variable;
    asking it (rather than reading os.environ here) keeps that the only reader of the variable,
    and answers what matters: where this process's values actually went.
    """
    return values.ValueClass is not values.MutexValue


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_request_seconds = Histogram(
            "lookout_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS_S,
            registry=r,
        )
        self.websocket_clients = Gauge(
            "lookout_websocket_clients",
            "Open WebSocket connections (all API worker processes of this instance)",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Set at scrape time from Postgres/Redis: the latest scrape's value is the true one.
        self.jobs = Gauge(
            "lookout_jobs",
            "Jobs in Postgres by status (done and failed: recounted at most every 5 minutes)",
            ["status"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # The last count of the finished jobs (by status) and when it was made (monotonic s):
        # app/ops/service.py refresh_metrics counts them again only when it is old.
        self.finished_jobs: dict[str, int] = {}
        self.finished_jobs_counted_at = -math.inf
        self.stream_length = Gauge(
            "lookout_jobs_stream_length",
            "Entries in lookout:jobs (acked ones included)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.stream_lag = Gauge(
            "lookout_jobs_stream_lag",
            "Entries not yet delivered to any worker (consumer-group lag)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.stream_pending = Gauge(
            "lookout_jobs_stream_pending",
            "Entries delivered but not acked",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dead_letters = Gauge(
            "lookout_jobs_dead_letters",
            "Entries in lookout:jobs:dead",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # A firehose reader (webhooks, MQTT, clustering) that falls this far behind loses what
        # streams.firehose_maxlen trims: the clustering's hourly sweep catches up, the outbound
        # paths do not.
        self.firehose_lag = Gauge(
            "lookout_firehose_group_lag",
            "Firehose entries a reader's consumer group has not read yet",
            ["group"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.firehose_pending = Gauge(
            "lookout_firehose_group_pending",
            "Firehose entries a reader's consumer group read but has not acked",
            ["group"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.workers_alive = Gauge(
            "lookout_workers_alive",
            "Workers with an unexpired heartbeat",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dependency_up = Gauge(
            "lookout_dependency_up",
            "1 if the dependency answered during the last scrape",
            ["dependency"],
            registry=r,
            multiprocess_mode="mostrecent",
        )

    def exposition(self) -> bytes:
        """The text format of every series: this registry, or every worker's files merged."""
        if not multiprocess_mode():
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # reads the variable itself
        return generate_latest(merged)
