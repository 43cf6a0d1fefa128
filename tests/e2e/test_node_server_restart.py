"""`lookout node run` against a real API process that is killed (-9) and restarted."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
from sqlalchemy import func, select

from app.models import Job, JobStatus
from tests.conftest import shared_image
from tests.images import decode, write_video
from tests.processes import TEST_NODE_SIGNING_KEY
from tests.test_cli import free_port

STEP_TIMEOUT_S = 60
BACKOFF_MAX_S = 1.0


def lookout(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    env.update(extra)
    return env


class Api:
    """`lookout api` as a child process on a fixed port: start, kill -9, start again."""

    def __init__(self, servers, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.env = child_env(
            LOOKOUT_ENV="dev",
            LOOKOUT_NODES__SIGNING_KEY=TEST_NODE_SIGNING_KEY,
            LOOKOUT_DATA_DIR=str(workdir / "api-data"),
            LOOKOUT_DATABASE__URL=servers.database_url,
            LOOKOUT_REDIS__URL=servers.redis_url,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> None:
        self.starts += 1
        with open(self.workdir / f"api-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                lookout("api", "--host", "127.0.0.1", "--port", str(self.port)),
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.spawn()
        assert self.process is not None
        deadline = time.monotonic() + STEP_TIMEOUT_S
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                log = self.workdir / f"api-{self.starts}.log"
                assert self.process.poll() is None, log.read_text()
                try:
                    if (await http.get(f"{self.url}/openapi.json", timeout=1)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the API did not start in time")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STEP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=STEP_TIMEOUT_S)


def client_events(log_path: Path, event: str) -> list[dict]:
    events = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            events.append(record)
    return events


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def spawn_node(*args: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`lookout node run` with JSON log lines in log_path."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            lookout("node", "run", *args),
            env=child_env(LOOKOUT_ENV="staging"),
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def run_cli(*args: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *lookout(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_the_node_client_backs_off_while_the_server_is_dead_and_resumes(
    servers, make_consumer, sessionmaker, tmp_path, api_key
):
    api = Api(servers, free_port(), tmp_path)
    stop_worker = asyncio.Event()
    worker = asyncio.create_task(make_consumer().run(stop_worker))
    node_process: subprocess.Popen[bytes] | None = None
    try:
        await api.start()
        secret_file = tmp_path / "node.secret"
        registered = json.loads(
            await run_cli(
                "nodes",
                "register",
                "yard-cam",
                "--server",
                api.url,
                "--api-key",
                api_key,
                "--secret-file",
                str(secret_file),
                "--json",
                env=child_env(),
            )
        )
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
        assert registered["secret"].startswith("(written to")

        t1 = cv2.resize(decode(shared_image("scenes/t1.jpg")), (640, 448))
        dog = cv2.resize(decode(shared_image("scenes/dog.jpg")), (640, 448))
        video = write_video(tmp_path / "yard.avi", [t1] * 5 + [dog] * 5, fps=10)
        node_log = tmp_path / "node.log"
        node_process = spawn_node(
            "--source", str(video),
            "--loop",
            "--server", api.url,
            "--node-id", registered["id"],
            "--secret-file", str(secret_file),
            "--max-interval-s", "0.3",
            "--backoff-max-s", str(BACKOFF_MAX_S),
            log_path=node_log,
        )  # fmt: skip

        def results() -> list[dict]:
            return client_events(node_log, "frame_result")

        def failures() -> list[dict]:
            return client_events(node_log, "node_disconnected")

        await wait_for(lambda: len(results()) >= 2, "results before the kill")

        api.kill()
        await wait_for(lambda: len(failures()) >= 3, "the client to retry while the API is dead")
        assert node_process.poll() is None, node_log.read_text()
        delays = [f["retry_in_s"] for f in failures()]
        assert delays[0] <= 0.5 * 1.2 and max(delays) <= BACKOFF_MAX_S * 1.2
        assert delays[0] < delays[2]  # backing off

        results_before = len(results())
        restarted_at = time.time()
        await api.start()
        await wait_for(lambda: len(results()) > results_before + 2, "results after the restart")
        assert node_process.poll() is None
        assert len(client_events(node_log, "node_connected")) >= 2

        async with sessionmaker() as session:
            answered_after_restart = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.node_id == registered["id"],
                    Job.status == JobStatus.done,
                    Job.created_at > func.to_timestamp(restarted_at),
                )
            )
        assert answered_after_restart >= 1

        fleet = await run_cli(
            "nodes", "list", "--server", api.url, "--api-key", api_key, env=child_env()
        )
        assert "yard-cam" in fleet and "yes" in fleet  # online

        # Revoked: the socket closes at the next frame, the token exchange is refused, and the
        # client keeps retrying (an operator may fix its secret) instead of dying.
        await run_cli(
            "nodes",
            "revoke",
            registered["id"],
            "--server",
            api.url,
            "--api-key",
            api_key,
            env=child_env(),
        )
        await wait_for(
            lambda: any("401" in f["error"] for f in failures()), "the client to see the 401"
        )
        assert node_process.poll() is None

        node_process.send_signal(signal.SIGTERM)
        assert node_process.wait(timeout=STEP_TIMEOUT_S) == 0, node_log.read_text()
        assert "Traceback" not in node_log.read_text()
        [stopped] = client_events(node_log, "node_stopped")
        assert stopped["results"] == len(results())
    finally:
        if node_process is not None and node_process.poll() is None:
            node_process.kill()
        api.stop()
        stop_worker.set()
        await worker
