"""Node secrets and signing keys: hashed at rest, placeholder keys refused outside dev."""

import time
import uuid

import pytest
from jose import jwt
from pydantic import SecretStr

from app.cli.server import local_secrets_env
from app.main import create_app
from app.security import (
    NODE_TOKEN_AUDIENCE,
    NODE_TOKEN_ISSUER,
    InvalidNodeToken,
    check_node_signing_keys,
    generate_node_secret,
    hash_node_secret,
    issue_node_token,
    verify_node_secret,
    verify_node_token,
)
from app.settings import PLACEHOLDER_NODE_SIGNING_KEY, AuthSettings, NodeSettings, Settings

GOOD_KEY = SecretStr("k" * 40)


def test_secrets_are_random_and_only_their_hash_verifies():
    secret, other = generate_node_secret(), generate_node_secret()
    assert secret != other and secret.startswith("lkn_")
    stored = hash_node_secret(secret)
    assert secret not in stored
    assert verify_node_secret(secret, stored)
    assert not verify_node_secret(other, stored)
    assert not verify_node_secret(secret + " ", stored)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_the_placeholder_or_a_short_key_is_refused_outside_dev(env):
    with pytest.raises(RuntimeError, match="placeholder"):
        check_node_signing_keys(NodeSettings(), env=env)
    with pytest.raises(RuntimeError, match="shorter"):
        check_node_signing_keys(NodeSettings(signing_key=SecretStr("short")), env=env)
    with pytest.raises(RuntimeError, match="placeholder"):
        check_node_signing_keys(
            NodeSettings(
                signing_key=GOOD_KEY, previous_signing_keys={"k0": NodeSettings().signing_key}
            ),
            env=env,
        )
    check_node_signing_keys(NodeSettings(signing_key=GOOD_KEY), env=env)  # a real key is fine


@pytest.mark.parametrize(
    "key", ["change-me-node-signing-key-32-random-bytes", "x" * 32 + "CHANGEME"]
)
def test_a_long_key_marked_change_me_is_a_placeholder(key):
    with pytest.raises(RuntimeError, match="placeholder"):
        check_node_signing_keys(NodeSettings(signing_key=SecretStr(key)), env="prod")


def test_the_api_does_not_start_with_the_placeholder_key_wherever_keys_are_required():
    good_secret = "s" * 48  # the generic secret is fine: the node key is what is refused
    for env in ("local", "dev", "staging", "prod"):
        with pytest.raises(RuntimeError, match="LOOKOUT_NODES__SIGNING_KEY"):
            create_app(Settings(env=env, secret_key=good_secret))  # keys are on by default
        create_app(
            Settings(env=env, secret_key=good_secret, nodes=NodeSettings(signing_key=GOOD_KEY))
        )
    # A dev server with keys off checks no credentials at all: the placeholder does no harm.
    create_app(Settings(env="dev", auth=AuthSettings(enabled=False)))


def test_up_keeps_a_random_node_signing_key_in_its_data_dir(tmp_path):
    first = local_secrets_env(Settings(_env_file=None, env="local", data_dir=tmp_path / "a"))
    again = local_secrets_env(Settings(_env_file=None, env="local", data_dir=tmp_path / "a"))
    other = local_secrets_env(Settings(_env_file=None, env="local", data_dir=tmp_path / "b"))
    key = first["LOOKOUT_NODES__SIGNING_KEY"]
    assert key == again["LOOKOUT_NODES__SIGNING_KEY"]  # stable: tokens survive a restart
    assert key != other["LOOKOUT_NODES__SIGNING_KEY"]  # per data dir
    assert key != PLACEHOLDER_NODE_SIGNING_KEY and len(key) >= 32
    assert (tmp_path / "a" / "node_signing_key").stat().st_mode & 0o077 == 0
    # The API accepts what `up` hands it.
    create_app(
        Settings(
            _env_file=None,
            env="local",
            secret_key=first["LOOKOUT_SECRET_KEY"],
            nodes=NodeSettings(signing_key=key),
        )
    )
    assert local_secrets_env(Settings(_env_file=None, env="prod", data_dir=tmp_path)) == {}


def forged(nodes: NodeSettings, *, iat: int, exp: int) -> str:
    payload = {
        "iss": NODE_TOKEN_ISSUER,
        "aud": NODE_TOKEN_AUDIENCE,
        "sub": str(uuid.uuid4()),
        "jti": "j",
        "iat": iat,
        "exp": exp,
    }
    key = nodes.signing_key.get_secret_value()
    return jwt.encode(payload, key, algorithm="HS256", headers={"kid": nodes.signing_key_id})


def test_tokens_from_the_future_or_longer_than_the_ttl_are_refused():
    nodes = NodeSettings(signing_key=GOOD_KEY, token_ttl_s=900)
    now = int(time.time())
    verify_node_token(forged(nodes, iat=now, exp=now + 900), nodes)  # the control: valid
    verify_node_token(forged(nodes, iat=now + 5, exp=now + 905), nodes)  # within clock skew
    with pytest.raises(InvalidNodeToken, match="future"):
        verify_node_token(forged(nodes, iat=now + 3600, exp=now + 3700), nodes)
    with pytest.raises(InvalidNodeToken, match="longer"):
        verify_node_token(forged(nodes, iat=now, exp=now + 901), nodes)
    with pytest.raises(InvalidNodeToken, match="longer"):
        verify_node_token(forged(nodes, iat=now, exp=now + 10 * 365 * 86400), nodes)


def test_a_token_verifies_only_under_the_key_that_signed_it():
    node_id = uuid.uuid4()
    nodes = NodeSettings(signing_key=GOOD_KEY, signing_key_id="k2")
    claims = verify_node_token(issue_node_token(node_id, nodes).token, nodes)
    assert (claims.node_id, claims.key_id) == (node_id, "k2")
    rotated = NodeSettings(
        signing_key=SecretStr("n" * 40), signing_key_id="k3", previous_signing_keys={"k2": GOOD_KEY}
    )
    assert verify_node_token(issue_node_token(node_id, nodes).token, rotated).node_id == node_id
    same_kid_new_key = NodeSettings(signing_key=SecretStr("n" * 40), signing_key_id="k2")
    with pytest.raises(InvalidNodeToken):
        verify_node_token(issue_node_token(node_id, nodes).token, same_kid_new_key)
