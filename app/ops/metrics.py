"""Prometheus metrics of the API process, in a registry of its own (one per app instance).

Queue and job gauges are refreshed from Redis and Postgres when /metrics is scraped, so every
API replica reports the same cluster-wide numbers; HTTP and WebSocket metrics are per process.

Multi-process caveat: under gunicorn with several uvicorn workers each worker process has its
own registry, and a scrape reaches one of them at random. The per-process series (HTTP latency,
WebSocket clients) then need prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set
before start, MultiProcessCollector here) or one scrape target per worker. The cluster-wide
gauges are correct from any worker.
"""

from prometheus_client import CollectorRegistry, Gauge, Histogram

# Seconds; from a cache hit to a ?wait= upload.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
            "Open WebSocket connections of this process (app.limits.WebSocketLimit counts them)",
            registry=r,
        )
        self.jobs = Gauge("lookout_jobs", "Jobs in Postgres by status", ["status"], registry=r)
        self.stream_length = Gauge(
            "lookout_jobs_stream_length",
            "Entries in lookout:jobs (acked ones included)",
            registry=r,
        )
        self.stream_lag = Gauge(
            "lookout_jobs_stream_lag",
            "Entries not yet delivered to any worker (consumer-group lag)",
            registry=r,
        )
        self.stream_pending = Gauge(
            "lookout_jobs_stream_pending", "Entries delivered but not acked", registry=r
        )
        self.dead_letters = Gauge(
            "lookout_jobs_dead_letters", "Entries in lookout:jobs:dead", registry=r
        )
        self.workers_alive = Gauge(
            "lookout_workers_alive", "Workers with an unexpired heartbeat", registry=r
        )
        self.dependency_up = Gauge(
            "lookout_dependency_up",
            "1 if the dependency answered during the last scrape",
            ["dependency"],
            registry=r,
        )
