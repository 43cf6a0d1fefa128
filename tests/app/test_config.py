"""Environments and .env files, CORS, trusted hosts, JSON logs outside dev."""

import json
import logging

import httpx
import pytest
import structlog

from app.logging import configure_logging
from app.main import create_app
from app.settings import ApiSettings, Settings, get_settings


def test_the_environment_picks_its_own_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("LOOKOUT_"):
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("LOOKOUT_ENV=staging\nLOOKOUT_LOG_LEVEL=WARNING\n")
    (tmp_path / ".env.staging").write_text(
        'LOOKOUT_LOG_LEVEL=DEBUG\nLOOKOUT_API__CORS_ORIGINS=["https://app.example"]\n'
    )
    (tmp_path / ".env.prod").write_text("LOOKOUT_LOG_LEVEL=ERROR\n")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.env == "staging"
        assert settings.log_level == "DEBUG"  # .env.staging wins over .env
        assert settings.api.cors_origins == ["https://app.example"]
        monkeypatch.setenv("LOOKOUT_LOG_LEVEL", "INFO")  # the process environment wins over both
        get_settings.cache_clear()
        assert get_settings().log_level == "INFO"
    finally:
        get_settings.cache_clear()


async def test_cors_allows_only_the_configured_origins(settings):
    app = create_app(
        settings.model_copy(update={"api": ApiSettings(cors_origins=["https://app.example"])})
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as http:
            preflight = {"Access-Control-Request-Method": "POST"}
            allowed = await http.options(
                "/v1/images", headers={"Origin": "https://app.example", **preflight}
            )
            other = await http.options(
                "/v1/images", headers={"Origin": "https://evil.example", **preflight}
            )
            # Every method the API answers passes the preflight: PUT renames a CompreFace
            # subject, PATCH edits a person.
            for method in ("PUT", "PATCH", "DELETE"):
                response = await http.options(
                    "/api/v1/recognition/subjects/ada",
                    headers={
                        "Origin": "https://app.example",
                        "Access-Control-Request-Method": method,
                    },
                )
                assert response.status_code == 200, (method, response.text)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


async def test_unknown_host_headers_are_refused(settings):
    app = create_app(
        settings.model_copy(update={"api": ApiSettings(trusted_hosts=["lookout.example"])})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as http:
            assert (await http.get("/health/live")).status_code == 400
        async with httpx.AsyncClient(
            transport=transport, base_url="http://lookout.example"
        ) as http:
            assert (await http.get("/health/live")).status_code == 200


def test_logs_are_json_lines_with_bound_ids_outside_dev(capsys):
    configure_logging(Settings(env="prod", log_level="INFO"))
    try:
        log = structlog.get_logger()
        structlog.contextvars.bind_contextvars(request_id="r-1", job_id="j-1")
        log.info("job_queued", bytes=10)
        log.debug("hidden")  # below the configured level
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging(Settings(env="dev"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 1
    assert lines[0] == {
        **lines[0],
        "event": "job_queued",
        "request_id": "r-1",
        "job_id": "j-1",
        "level": "info",
        "bytes": 10,
    }


def _fail_with_a_secret_in_a_local() -> None:
    secret = "whsec_" + "S3cr3t" * 6  # noqa: F841 - what a traceback's locals showed
    key = "lk_0123456789ab_" + "k" * 32  # noqa: F841
    raise ValueError("a delivery went wrong")


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_tracebacks_carry_no_local_variables_and_no_secret(capsys, env):
    """A failed webhook delivery's traceback logged the frame's locals, its signing secret
    among them, every second: in JSON (prod) and on the console (dev). Tracebacks keep their
    frames and the error, not the locals, and a whsec_ secret is redacted wherever it shows."""
    configure_logging(Settings(env=env, log_level="INFO"))
    try:
        try:
            _fail_with_a_secret_in_a_local()
        except ValueError:
            structlog.get_logger().exception("webhook_drain_failed")
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
        structlog.get_logger().info("configured", secret_seen="whsec_" + "Z" * 32)
    finally:
        configure_logging(Settings(env="dev"))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("a delivery went wrong") >= 2  # both tracebacks are there
    assert "_fail_with_a_secret_in_a_local" in text
    assert "S3cr3t" not in text and "kkkkkkkk" not in text and "ZZZZZZZZ" not in text
    assert "whsec_[redacted]" in text


def test_allowed_networks_are_read_as_a_list_or_commas_and_a_typo_stops_the_start(monkeypatch):
    """The one way to let webhooks reach a LAN receiver (Home Assistant): a plain
    "192.168.1.0/24" failed to parse with a message naming only `events`, and a typo
    ("/33") started fine, then made every webhook create a 500 and the dispatcher crash."""
    for value, expected in (
        ("192.168.1.0/24", ["192.168.1.0/24"]),
        ("192.168.1.0/24, 10.0.0.5", ["192.168.1.0/24", "10.0.0.5"]),
        ('["192.168.1.0/24", "fd00::/8"]', ["192.168.1.0/24", "fd00::/8"]),
    ):
        monkeypatch.setenv("LOOKOUT_EVENTS__ALLOWED_NETWORKS", value)
        assert Settings().events.allowed_networks == expected
    for typo in ("192.168.1.0/33", "lan", "192.168.1.0/24,home"):
        monkeypatch.setenv("LOOKOUT_EVENTS__ALLOWED_NETWORKS", typo)
        with pytest.raises(ValueError, match="LOOKOUT_EVENTS__ALLOWED_NETWORKS") as refused:
            Settings()
        assert repr(typo.split(",")[-1]) in str(refused.value)


def test_an_empty_setting_is_its_default(monkeypatch):
    """.env.example shows defaults as commented lines; one uncommented as it is (`NAME=`) was an
    empty string: MQTT on with no URL (the events process crash-looped), ints refused."""
    for name in (
        "LOOKOUT_MQTT__URL",
        "LOOKOUT_API__PROCESSES",
        "LOOKOUT_REDIS__FRAMES_URL",
        "LOOKOUT_API__ACCEL_REDIRECT_PREFIX",
        "LOOKOUT_EVENTS__ALLOWED_NETWORKS",
    ):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert settings.mqtt.url is None and settings.redis.frames_url is None
    assert settings.api.processes is None  # the default: as many as the cores allow
    assert settings.api.accel_redirect_prefix is None
    assert settings.events.allowed_networks == []
