"""Prometheus metrics of one worker process, served by its own exporter (metrics_port + i).

Each worker process has its own registry and port, so no multiprocess directory is needed;
Prometheus scrapes every process (a static list or pod annotation per process port).
"""

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

INFERENCE_BUCKETS_MS = (2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500)
BATCH_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inference_ms = Histogram(
            "lookout_worker_inference_ms",
            "Model inference time per batch, milliseconds (labelled by model files)",
            ["model"],
            buckets=INFERENCE_BUCKETS_MS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lookout_worker_batch_size",
            "Stream entries taken per read (XREADGROUP/XAUTOCLAIM); empty reads excluded",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "lookout_worker_jobs", "Messages handled by outcome", ["outcome"], registry=r
        )

    def serve(self, port: int) -> None:
        """Expose /metrics on `port` from a daemon thread."""
        start_http_server(port, registry=self.registry)
