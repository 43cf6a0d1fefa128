"""`lookout apikey create|list|revoke`, run as a user would, against the test database."""

import os
import subprocess
import sys

from app.apikeys.service import authenticate
from app.errors import Unauthorized


def lookout(servers, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    env.update(LOOKOUT_ENV="dev", LOOKOUT_DATABASE__URL=servers.database_url)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )


async def test_create_list_revoke(servers, engine):
    created = lookout(
        servers, "apikey", "create", "ci-bot", "--scopes", "read", "--expires-in", "1d"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("lk_")
    assert "shown only this once" in created.stderr
    prefix = token.split("_")[1]

    principal = await authenticate(engine, token, last_used_resolution_s=60)
    assert {s.value for s in principal.scopes} == {"read"}

    listed = lookout(servers, "apikey", "list")
    assert prefix in listed.stdout and "ci-bot" in listed.stdout and "active" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout  # never the secret

    assert lookout(servers, "apikey", "revoke", prefix).returncode == 0
    assert "revoked" in lookout(servers, "apikey", "list").stdout
    try:
        await authenticate(engine, token, last_used_resolution_s=60)
        raise AssertionError("a revoked key authenticated")
    except Unauthorized:
        pass


def test_unknown_scope_and_prefix_are_clear_errors(servers):
    bad_scope = lookout(servers, "apikey", "create", "x", "--scopes", "read,root")
    assert bad_scope.returncode == 1
    assert "unknown scope" in bad_scope.stderr
    missing = lookout(servers, "apikey", "revoke", "000000000000")
    assert missing.returncode == 1
    assert "no API key with prefix" in missing.stderr


async def test_a_key_s_own_rate_limit_is_set_listed_and_reset(servers, engine):
    """Frigate's key without a limit (its detector posts every frame), then a few thousand a
    minute, then the server's default again; `list` says which applies."""
    created = lookout(servers, "apikey", "create", "frigate", "--rate-limit", "0")
    assert created.returncode == 0, created.stderr
    assert "rate limit none" in created.stderr
    token = created.stdout.strip()
    prefix = token.split("_")[1]

    def listed_limit() -> str:
        [row] = [r for r in lookout(servers, "apikey", "list").stdout.splitlines() if prefix in r]
        return row

    assert (await authenticate(engine, token, last_used_resolution_s=60)).rate_limit == 0
    assert " none " in listed_limit()
    changed = lookout(servers, "apikey", "limit", prefix, "3000")
    assert changed.returncode == 0, changed.stderr
    assert "3000/60s" in changed.stdout and "3000/60s" in listed_limit()
    assert (await authenticate(engine, token, last_used_resolution_s=60)).rate_limit == 3000
    reset = lookout(servers, "apikey", "limit", prefix, "default")
    assert reset.returncode == 0 and "600/60s (default)" in listed_limit()
    assert (await authenticate(engine, token, last_used_resolution_s=60)).rate_limit is None

    for bad in ("-1", "lots"):
        refused = lookout(servers, "apikey", "limit", prefix, bad)
        assert refused.returncode == 1 and "requests" in refused.stderr, refused.stderr
    unknown = lookout(servers, "apikey", "limit", "000000000000", "10")
    assert unknown.returncode == 1 and "no API key with prefix" in unknown.stderr
