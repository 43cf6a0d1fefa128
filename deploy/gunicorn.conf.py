"""gunicorn settings for the API (`gunicorn -c deploy/gunicorn.conf.py 'app.main:create_app()'`).

gunicorn supervises uvicorn workers: it restarts a worker that dies or hangs and drains them on
SIGTERM. `preload_app` imports the app once in the master before forking; that is safe because
importing and building the app connect to nothing (the lifespan opens the database pool and the
Redis client in each worker).

The bind address comes from Lookout's own settings (LOOKOUT_API__HOST / LOOKOUT_API__PORT) so
every tool agrees on one port. gunicorn's standard variables also apply: WEB_CONCURRENCY (worker
count), FORWARDED_ALLOW_IPS (whose X-Forwarded-* headers to trust), GUNICORN_CMD_ARGS.

Metrics: every worker has its own memory, and a scrape of /metrics reaches one of them. So that
it reports all of them, prometheus_client's multiprocess mode is switched on here, in the master,
before the app is imported and the workers fork (app/ops/metrics.py). Its switch is the
environment variable PROMETHEUS_MULTIPROC_DIR, which prometheus_client reads on import: the one
place outside app/settings.py where Lookout relies on the environment, because the library
offers no other switch and the choice must be made before any metric exists. Set it yourself to
an empty directory (a tmpfs volume) to choose where the files go; otherwise a fresh directory is
made per server start and removed when it stops.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.settings import available_cpus, get_settings

_api = get_settings().api
# The heartbeat file lives on tmpfs; a slow disk must not make healthy workers look dead.
# (gunicorn creates it with mkstemp, so a shared directory is safe.) The metric files too:
# every request writes to them.
_SHM = Path("/dev/shm")  # noqa: S108
_TMPFS = str(_SHM) if _SHM.is_dir() else None

# Values left behind by an earlier server would be counted again: start from an empty directory.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lookout-metrics-", dir=_TMPFS)

bind = [f"{_api.host}:{_api.port}"]
# Async workers: one per CPU serves many connections each; CPU work runs in the workers service.
workers = int(os.environ.get("WEB_CONCURRENCY") or available_cpus())
# uvicorn's worker with a deadline for request heads (slow clients; app/server.py).
worker_class = "app.server.LookoutUvicornWorker"
preload_app = True
# SIGTERM: stop accepting, let in-flight requests (and ?wait= up to max_wait_s) finish. Open
# WebSockets are closed when this runs out; clients reconnect and replay from the job stream.
graceful_timeout = int(_api.max_wait_s) + 5
# A worker that does not check in with the master for this long is killed and replaced.
timeout = 60
# Longer than nginx's upstream keepalive_timeout (60s), so nginx closes idle connections first.
keepalive = 75
worker_tmp_dir = _TMPFS
# gunicorn 25+ opens a control socket under $HOME by default; nothing here uses it, the home of
# the image's user is read-only, and two servers on one machine would fight over the path.
control_socket_disable = True
accesslog = None  # nginx logs requests; the app logs events
errorlog = "-"


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its open-WebSocket count (a `livesum` gauge) must stop counting."""
    from prometheus_client import multiprocess  # after PROMETHEUS_MULTIPROC_DIR is set above

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
