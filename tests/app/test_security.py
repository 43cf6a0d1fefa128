"""Node secrets and signing keys: hashed at rest, placeholder keys refused outside dev."""

import uuid

import pytest
from pydantic import SecretStr

from app.main import create_app
from app.security import (
    InvalidNodeToken,
    check_node_signing_keys,
    generate_node_secret,
    hash_node_secret,
    issue_node_token,
    verify_node_secret,
    verify_node_token,
)
from app.settings import NodeSettings, Settings

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


def test_the_api_does_not_start_in_prod_with_the_placeholder_key():
    good_secret = "s" * 48  # the generic secret is fine: the node key is what is refused
    with pytest.raises(RuntimeError, match="LOOKOUT_NODES__SIGNING_KEY"):
        create_app(Settings(env="prod", secret_key=good_secret))
    for env in ("local", "dev"):
        create_app(Settings(env=env, secret_key=good_secret))


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
