"""gunicorn with deploy/gunicorn.conf.py: 2 uvicorn workers, --preload, requests, metrics of
both workers in one scrape, clean stop."""

import os
import runpy
import signal
from pathlib import Path

import httpx
import psutil
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.conftest import shared_image
from tests.processes import REPO, free_port, http_ok, lookout_env, start_python, stop, wait_until

T1 = shared_image("scenes/t1.jpg")
CONFIG = REPO / "deploy" / "gunicorn.conf.py"
JOBS_LISTED = {"method": "GET", "route": "/v1/jobs", "status": "200"}
REQUESTS_COUNT = "lookout_http_request_duration_seconds_count"


def scraped(text: str, name: str, labels: dict[str, str] | None = None) -> list[float]:
    """Values of the samples called `name` with exactly `labels`, from a /metrics body."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == (labels or {})
    ]


def recorded_per_worker(
    metrics_dir: Path, kind: str, name: str, labels: dict[str, str]
) -> dict[int, float]:
    """What each process wrote to its own files (`<kind>_<pid>.db`): who served or scraped."""
    found = {}
    for path in metrics_dir.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    found[pid] = sample.value
    return found


def test_gunicorn_serves_with_two_preloaded_workers_and_stops_cleanly(settings, tmp_path, api_key):
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    # Set here (as an operator may) so that the test can read each worker's own file.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # The bind address comes from Lookout's settings, as in the container.
    env = lookout_env(
        settings,
        LOOKOUT_API__HOST="127.0.0.1",
        LOOKOUT_API__PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    master = start_python(
        [
            "gunicorn",
            "--config",
            str(CONFIG),
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
        worker_pids = {w.pid for w in workers}

        # Fresh connections, so both workers get requests; each one's lifespan connected it.
        # Keep going until each worker's own file shows it served some.
        auth = {"X-API-Key": api_key}
        statuses: list[int] = []
        while len(statuses) < 200:
            statuses += [httpx.get(f"{base}/v1/jobs", headers=auth).status_code for _ in range(10)]
            served = recorded_per_worker(metrics_dir, "histogram", REQUESTS_COUNT, JOBS_LISTED)
            if set(served) == worker_pids and all(served.values()):
                break
        assert statuses == [200] * len(statuses)
        assert set(served) == worker_pids and all(served.values()), served

        # A request is counted once its response has gone out (app/ops/middleware.py): the
        # last ones may still be on their way into the workers' files (CI run 114 read 9 of 10).
        def all_counted() -> bool:
            served = recorded_per_worker(metrics_dir, "histogram", REQUESTS_COUNT, JOBS_LISTED)
            return sum(served.values()) == len(statuses)

        wait_until(
            all_counted,
            timeout_s=10,
            what="every request counted",
            process=master,
            log_path=log_path,
        )
        # Whichever worker answers the scrape reports both workers' requests.
        scrapes = [httpx.get(f"{base}/metrics").text for _ in range(6)]
        assert [scraped(s, REQUESTS_COUNT, JOBS_LISTED) for s in scrapes] == [[len(statuses)]] * 6

        # Its workers run uvicorn with the API's options (app/server.py): WebSocket messages
        # go out uncompressed to a client that offers permessage-deflate.
        with ws_connect(f"ws://127.0.0.1:{port}/v1/ws", additional_headers=auth) as ws:
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert "Sec-WebSocket-Extensions" not in ws.response.headers

        upload = httpx.post(
            f"{base}/v1/images", files={"image": ("t1.jpg", T1, "image/jpeg")}, headers=auth
        )
        job = httpx.get(f"{base}/v1/jobs/{upload.json()['id']}", headers=auth)
        assert upload.status_code == 202, upload.text
        assert job.json()["status"] == "queued"

        # Gauges read from Postgres at scrape time: once both workers have scraped, each of
        # them still reports the one queued job, never the sum of their two readings.
        queued = {"status": "queued"}
        both_read_one = dict.fromkeys(worker_pids, 1.0)
        scrapes = []
        while len(scrapes) < 40:
            scrapes.append(httpx.get(f"{base}/metrics").text)
            readings = recorded_per_worker(metrics_dir, "gauge_*", "lookout_jobs", queued)
            if readings == both_read_one:
                break
        assert readings == both_read_one
        assert [scraped(s, "lookout_jobs", queued) for s in scrapes] == [[1.0]] * len(scrapes)
        assert all("pid=" not in s for s in scrapes)

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
    # child_exit marked each worker dead: its open-WebSocket count no longer adds up; its
    # request counts stay. An operator's directory is left in place.
    for pid in worker_pids:
        assert not (metrics_dir / f"gauge_livesum_{pid}.db").exists()
        assert (metrics_dir / f"histogram_{pid}.db").exists()


def test_gunicorn_config_makes_a_fresh_metrics_dir_unless_given_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # so that teardown restores the original
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    config = runpy.run_path(str(CONFIG))
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir() and list(made.iterdir()) == []
    config["on_exit"](None)
    assert not made.exists()

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    config = runpy.run_path(str(CONFIG))
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    config["on_exit"](None)
    assert tmp_path.is_dir()
