"""gunicorn with deploy/gunicorn.conf.py: 2 uvicorn workers, --preload, requests, clean stop."""

import signal

import httpx
import psutil

from tests.conftest import shared_image
from tests.processes import REPO, free_port, http_ok, lookout_env, start_python, stop, wait_until

T1 = shared_image("scenes/t1.jpg")


def test_gunicorn_serves_with_two_preloaded_workers_and_stops_cleanly(settings, tmp_path, api_key):
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    # The bind address comes from Lookout's settings, as in the container.
    env = lookout_env(settings, LOOKOUT_API__HOST="127.0.0.1", LOOKOUT_API__PORT=str(port))
    master = start_python(
        [
            "gunicorn",
            "--config",
            str(REPO / "deploy" / "gunicorn.conf.py"),
            "--workers",
            "2",
            "--preload",
            "app.main:create_app()",
        ],
        env=env,
        log_path=log_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            http_ok(f"{base}/health/live"),
            timeout_s=60,
            what="gunicorn",
            process=master,
            log_path=log_path,
        )
        workers = psutil.Process(master.pid).children()
        assert len(workers) == 2, [w.cmdline() for w in workers]

        # Fresh connections, so both workers get requests; each one's lifespan connected it.
        auth = {"X-API-Key": api_key}
        statuses = [httpx.get(f"{base}/v1/jobs", headers=auth).status_code for _ in range(20)]
        upload = httpx.post(
            f"{base}/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")}, headers=auth
        )
        job = httpx.get(f"{base}/v1/jobs/{upload.json()['id']}", headers=auth)
        assert statuses == [200] * 20
        assert upload.status_code == 202, upload.text
        assert job.json()["status"] == "queued"

        # --preload imported and built the app in the master; it connected to nothing there
        # (Postgres and Redis listen on Unix sockets here; the workers hold connections to them).
        assert psutil.Process(master.pid).net_connections(kind="unix") == []
        assert any(worker.net_connections(kind="unix") for worker in workers)
    finally:
        code = stop(master, sig=signal.SIGTERM, timeout_s=45)

    log = log_path.read_text()
    assert code == 0, log
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert log.count("Booting worker") == 2, log
    assert "Shutting down: Master" in log, log
