"""Real processes for the end-to-end tests: the API, workers, gunicorn and Debian's nginx.

Children get the test session's Postgres and Redis (Unix sockets) through LOOKOUT_* variables,
the same way a container gets them from docker-compose.yml.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
NGINX = Path("/usr/sbin/nginx")
NGINX_TEMPLATES = REPO / "nginx" / "templates"
NGINX_TLS_TEMPLATE = REPO / "nginx" / "tls" / "tls.conf.template"
NGINX_LIMITS_SCRIPT = REPO / "nginx" / "lookout-limits.envsh"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Who nginx's worker processes run as (Debian's unprivileged user and group).
NGINX_WORKER_USER, NGINX_WORKER_GROUP = "nobody", "nogroup"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Every child process runs the verified test pack from LOOKOUT_MODELS_DIR: never a download.
TEST_PACK_ENV = {
    "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
    "LOOKOUT_MODELS__DOWNLOAD": "false",
}


# Keys are on in the tests' dev servers, so node tokens need a real signing key, never the public
# placeholder (app/security.check_node_signing_keys).
TEST_NODE_SIGNING_KEY = "test-node-signing-key-0123456789abcdef0123456789"


def child_env(
    *, database_url: str, redis_url: str, data_dir: Path, models_dir: Path, **overrides: str
) -> dict[str, str]:
    """The environment of a `lookout` child process: dev, these servers, the test pack.

    Variables of the test run itself (LOOKOUT_*) are dropped so that nothing leaks in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    env.update(
        LOOKOUT_ENV="dev",
        LOOKOUT_DATABASE__URL=database_url,
        LOOKOUT_REDIS__URL=redis_url,
        LOOKOUT_DATA_DIR=str(data_dir),
        LOOKOUT_MODELS_DIR=str(models_dir),
        LOOKOUT_NODES__SIGNING_KEY=TEST_NODE_SIGNING_KEY,
        **TEST_PACK_ENV,
    )
    env.update(overrides)
    return env


def lookout_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a Lookout child process that shares the test session's servers."""
    assert settings.database.url and settings.redis.url and settings.models_dir
    return child_env(
        database_url=settings.database.url,
        redis_url=settings.redis.url,
        data_dir=settings.data_dir,
        models_dir=settings.models_dir,
        LOOKOUT_WORKER__PROCESSES="1",
        LOOKOUT_WORKER__THREADS="1",
        LOOKOUT_WORKER__BLOCK_MS="100",
        **overrides,
    )


def start(
    args: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor


def start_python(
    module_args: list[str], *, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    return start([sys.executable, "-m", *module_args], env=env, log_path=log_path)


def stop(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 30
) -> int:
    """Signal the process, wait for it; kill it (and fail the caller's check) if it hangs."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def child_uids(pid: int) -> set[int]:
    """Effective uids of the processes whose parent is `pid` (e.g. nginx's workers)."""
    uids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(fields["PPid"]) == pid:
            uids.add(int(fields["Uid"].split()[1]))
    return uids


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout_s} s:\n{log_path.read_text()}")


def http_ok(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return ready


def render_template(text: str, values: Mapping[str, str]) -> str:
    """What the nginx image's entrypoint does with envsubst: ${NAME} → value.

    Stricter than envsubst: a variable without a value is an error here rather than text left
    for nginx to trip over.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"nginx template variable {name} has no value")
        return values[name]

    return _VARIABLE.sub(value, text)


def template_variables(text: str) -> set[str]:
    return set(_VARIABLE.findall(text))


def nginx_body_limit(max_upload_bytes: int) -> str:
    """NGINX_MAX_BODY_BYTES exactly as the nginx container computes it (lookout-limits.envsh)."""
    result = subprocess.run(
        ["sh", "-c", f'. "{NGINX_LIMITS_SCRIPT}" && printf %s "$NGINX_MAX_BODY_BYTES"'],
        env={"PATH": os.environ["PATH"], "LOOKOUT_API__MAX_UPLOAD_BYTES": str(max_upload_bytes)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def write_nginx_site(root: Path, values: Mapping[str, str], *, tls: bool) -> Path:
    """nginx.conf laid out like the nginx image's /etc/nginx (conf.d/ rendered from nginx/).

    The main file stands in for the image's own nginx.conf; everything Lookout-specific comes
    from the repository's templates.
    """
    conf_d = root / "conf.d"
    conf_d.mkdir(parents=True)
    templates = sorted(NGINX_TEMPLATES.glob("*.template"))
    if tls:
        templates.append(NGINX_TLS_TEMPLATE)
    for template in templates:
        rendered = render_template(template.read_text(), values)
        (conf_d / template.name.removesuffix(".template")).write_text(rendered)
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "temp" / temp).mkdir(parents=True)
    # As in the nginx image, the workers are not the user who wrote the images (there: uid 101
    # vs the API's 10001), so a stored file they may not read fails here as it would there.
    # `root` and every directory above it must be open to `nobody`. Only root can switch users.
    user = f"user {NGINX_WORKER_USER} {NGINX_WORKER_GROUP};" if os.geteuid() == 0 else ""
    main = root / "nginx.conf"
    main.write_text(
        f"""{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {root}/access.log;
    sendfile on;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include conf.d/*.conf;
}}
"""
    )
    return main


def nginx_command(main: Path, *extra: str) -> list[str]:
    if not NGINX.is_file():
        raise RuntimeError(
            f"{NGINX} is missing: `make install` runs scripts/ensure-system-deps.sh to install it"
        )
    root = main.parent
    return [str(NGINX), "-p", f"{root}/", "-c", str(main), "-e", str(root / "error.log"), *extra]


def self_signed_certificate(directory: Path) -> None:
    directory.mkdir(parents=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(directory / "privkey.pem"),
            "-out",
            str(directory / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
