"""workers/health.py: heartbeat files written by the consumer loop, judged by the health check."""

import os
import socket
import subprocess
import time

from app.settings import Settings, WorkerSettings
from workers.health import Heartbeat, check, max_age_s

HOST = socket.gethostname()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def test_the_consumer_loop_beats_while_it_runs_and_removes_its_file_after(
    tmp_path, make_consumer
):
    name = f"{HOST}-{os.getpid()}"
    consumer = make_consumer(name=name)
    consumer.heartbeat_file = Heartbeat(
        tmp_path, name
    )  # what heartbeat_dir= does in workers/pool.py
    assert check(tmp_path, hostname=HOST, max_age_s=5)[0] is False  # not started yet
    beats: list[bool] = []
    original_beat = consumer._beat_file

    def beat_and_check() -> None:
        original_beat()
        beats.append(check(tmp_path, hostname=HOST, max_age_s=5)[0])

    consumer._beat_file = beat_and_check
    await consumer.run(burst=True)
    assert beats and all(beats)  # healthy at every turn of the loop
    assert list(tmp_path.iterdir()) == []  # a stopped worker leaves no heartbeat behind


def test_healthy_when_every_running_worker_beat_recently(tmp_path):
    Heartbeat(tmp_path, f"{HOST}-{os.getpid()}").beat()
    healthy, reason = check(tmp_path, hostname=HOST, max_age_s=5)
    assert healthy, reason


def test_unhealthy_when_a_running_worker_stopped_coming_round(tmp_path):
    Heartbeat(tmp_path, f"{HOST}-{os.getpid()}").beat()
    healthy, reason = check(tmp_path, hostname=HOST, max_age_s=5, now=time.time() + 6)
    assert not healthy
    assert f"{HOST}-{os.getpid()}" in reason


def test_heartbeats_of_exited_processes_and_other_hosts_do_not_count(tmp_path):
    Heartbeat(tmp_path, f"{HOST}-{_dead_pid()}").beat()
    Heartbeat(tmp_path, f"another-host-{os.getpid()}").beat()
    healthy, reason = check(tmp_path, hostname=HOST, max_age_s=5)
    assert not healthy
    assert "no running worker process" in reason


def test_unhealthy_without_a_heartbeat_directory(tmp_path):
    healthy, _ = check(tmp_path / "missing", hostname=HOST, max_age_s=5)
    assert not healthy


def test_a_batch_of_slow_images_is_busy_not_dead(tmp_path):
    """A batch past job_timeout_s runs again job by job, each with its own timeout: the loop may
    not come round for (batch_size + 1) timeouts. The limit was one timeout (61 s), and the
    liveness probe killed workers that were only busy."""
    settings = Settings(worker=WorkerSettings(job_timeout_s=60, batch_size=4, block_ms=1000))
    limit = max_age_s(settings)
    assert limit == 60 * 5 + 1
    Heartbeat(tmp_path, f"{HOST}-{os.getpid()}").beat()
    two_slow_images_later = time.time() + 3 * 60
    assert check(tmp_path, hostname=HOST, max_age_s=limit, now=two_slow_images_later)[0]
    assert not check(tmp_path, hostname=HOST, max_age_s=limit, now=time.time() + limit + 5)[0]
