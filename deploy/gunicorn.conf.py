"""gunicorn settings for the API (`gunicorn -c deploy/gunicorn.conf.py 'app.main:create_app()'`).

gunicorn supervises uvicorn workers: it restarts a worker that dies or hangs and drains them on
SIGTERM. `preload_app` imports the app once in the master before forking; that is safe because
importing and building the app connect to nothing (the lifespan opens the database pool and the
Redis client in each worker).

The bind address comes from Lookout's own settings (LOOKOUT_API__HOST / LOOKOUT_API__PORT) so
every tool agrees on one port. gunicorn's standard variables also apply: WEB_CONCURRENCY (worker
count), FORWARDED_ALLOW_IPS (whose X-Forwarded-* headers to trust), GUNICORN_CMD_ARGS.
"""

import math
import os
from pathlib import Path

from app.settings import get_settings


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota if any."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota != "max":
        cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


_api = get_settings().api

bind = [f"{_api.host}:{_api.port}"]
# Async workers: one per CPU serves many connections each; CPU work runs in the workers service.
workers = int(os.environ.get("WEB_CONCURRENCY") or available_cpus())
worker_class = "uvicorn_worker.UvicornWorker"
preload_app = True
# SIGTERM: stop accepting, let in-flight requests (and ?wait= up to max_wait_s) finish. Open
# WebSockets are closed when this runs out; clients reconnect and replay from the job stream.
graceful_timeout = int(_api.max_wait_s) + 5
# A worker that does not check in with the master for this long is killed and replaced.
timeout = 60
# Longer than nginx's upstream keepalive_timeout (60s), so nginx closes idle connections first.
keepalive = 75
# The heartbeat file lives on tmpfs; a slow disk must not make healthy workers look dead.
# (gunicorn creates it with mkstemp, so a shared directory is safe.)
_SHM = Path("/dev/shm")  # noqa: S108
worker_tmp_dir = str(_SHM) if _SHM.is_dir() else None
# gunicorn 25+ opens a control socket under $HOME by default; nothing here uses it, the home of
# the image's user is read-only, and two servers on one machine would fight over the path.
control_socket_disable = True
accesslog = None  # nginx logs requests; the app logs events
errorlog = "-"
