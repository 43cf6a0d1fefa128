"""Credentials, pure functions (no database, no FastAPI): client API keys and node JWTs.

API keys read `lk_<prefix>_<secret>`. The prefix (12 hex chars) is stored in clear and finds the
row; only the SHA-256 of the secret is stored. The secret has 256 bits of entropy, so a fast
hash is enough (a slow KDF only matters for guessable passwords), and it keeps per-request
verification cheap. Digests are compared in constant time.

Node tokens are HS256 JWTs. The `kid` header names the key that signed them: the current key
(`settings.nodes.signing_key_id`) signs, and the current plus `previous_signing_keys` verify, so
keys rotate without cutting nodes off. Verification pins the algorithm, the audience and the
issuer, and requires exp, iat, sub and jti; a token issued in the future (beyond a small clock
skew) or living longer than `token_ttl_s` is refused, so a leaked or guessed key cannot mint
long-lived tokens that outlast a TTL change. Revocation is not in the token: callers check the
node row on every request (app/nodes/service.py) and on open sockets (app/revocation.py).
"""

import enum
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError

from app.errors import AppError
from app.settings import PLACEHOLDER_NODE_SIGNING_KEY, NodeSettings, is_placeholder

KEY_MARK = "lk"
PREFIX_BYTES = 6  # 12 hex chars
SECRET_BYTES = 32
_KEY = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


class Scope(enum.StrEnum):
    read = "read"  # list and fetch its own jobs, follow their events
    write = "write"  # upload and delete its own jobs
    admin = "admin"  # everything, on every owner's jobs

    def granted_by(self, scopes: "frozenset[Scope] | set[Scope]") -> bool:
        return self in scopes or Scope.admin in scopes


@dataclass(frozen=True)
class NewKey:
    token: str  # shown to the user once, never stored
    prefix: str
    secret_sha256: str


def generate_key() -> NewKey:
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(f"{KEY_MARK}_{prefix}_{secret}", prefix, hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key; None for anything else."""
    match = _KEY.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_sha256)


NODE_TOKEN_ALGORITHM = "HS256"  # noqa: S105 (a name, not a secret)
NODE_TOKEN_AUDIENCE = "lookout:node"  # noqa: S105 (a name, not a secret)
NODE_TOKEN_ISSUER = "lookout"  # noqa: S105 (a name, not a secret)
NODE_SECRET_PREFIX = "lkn_"  # noqa: S105 (a name, not a secret)
MIN_NODE_SIGNING_KEY_BYTES = 32
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
# Clocks of the API replicas may differ by this much: a token's iat may lie this far ahead.
NODE_TOKEN_CLOCK_SKEW_S = 30


class InvalidNodeToken(AppError):
    """No usable node credentials: 401, whatever the reason, with a reason a person can act on."""

    status = 401
    code = "invalid_token"
    headers = {"WWW-Authenticate": 'Bearer realm="lookout-nodes"'}


class NodeForbidden(AppError):
    """A valid node asking for what belongs to another node."""

    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class NodeToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class NodeClaims:
    node_id: uuid.UUID
    jti: str
    key_id: str
    issued_at: datetime
    expires_at: datetime


def check_node_signing_keys(nodes: NodeSettings, *, env: str, auth_enabled: bool = True) -> None:
    """Refuse to serve with a placeholder or short key wherever credentials are required.

    Only a dev server with auth off (which checks no credentials at all) may keep the public
    placeholder; `lookout up` writes a random key into its data dir instead. Call at startup.
    """
    if not auth_enabled:
        return
    keys = {nodes.signing_key_id: nodes.signing_key, **nodes.previous_signing_keys}
    for key_id, key in keys.items():
        value = key.get_secret_value()
        if value == PLACEHOLDER_NODE_SIGNING_KEY or is_placeholder(value):
            raise RuntimeError(
                f"node signing key {key_id!r} is a placeholder; set "
                f"LOOKOUT_NODES__SIGNING_KEY to 32+ random bytes (env is {env}; "
                "`lookout up` generates one in its data dir)"
            )
        if len(value.encode()) < MIN_NODE_SIGNING_KEY_BYTES:
            raise RuntimeError(
                f"node signing key {key_id!r} is shorter than {MIN_NODE_SIGNING_KEY_BYTES} bytes"
            )


def _verification_keys(nodes: NodeSettings) -> dict[str, str]:
    keys = {kid: key.get_secret_value() for kid, key in nodes.previous_signing_keys.items()}
    keys[nodes.signing_key_id] = nodes.signing_key.get_secret_value()
    return keys


def issue_node_token(
    node_id: uuid.UUID, nodes: NodeSettings, *, now: datetime | None = None
) -> NodeToken:
    """A token for `node_id`, signed with the current key, valid for `nodes.token_ttl_s`."""
    issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
    expires_at = issued_at + timedelta(seconds=nodes.token_ttl_s)
    claims = {
        "iss": NODE_TOKEN_ISSUER,
        "aud": NODE_TOKEN_AUDIENCE,
        "sub": str(node_id),
        "jti": uuid.uuid4().hex,
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(
        claims,
        nodes.signing_key.get_secret_value(),
        algorithm=NODE_TOKEN_ALGORITHM,
        headers={"kid": nodes.signing_key_id},
    )
    return NodeToken(token=token, expires_at=expires_at)


def verify_node_token(token: str, nodes: NodeSettings) -> NodeClaims:
    """Claims of a valid node token; InvalidNodeToken (401) for anything else."""
    try:
        header = jwt.get_unverified_header(token)
    except JOSEError as exc:
        raise InvalidNodeToken("the token is not a JWT") from exc
    # jose checks the algorithm against the allowed list too; refuse early with a clear reason.
    if header.get("alg") != NODE_TOKEN_ALGORITHM:
        raise InvalidNodeToken(f"token algorithm must be {NODE_TOKEN_ALGORITHM}")
    key_id = header.get("kid")
    key = _verification_keys(nodes).get(key_id) if isinstance(key_id, str) else None
    if key is None or not isinstance(key_id, str):
        raise InvalidNodeToken("the token names no signing key this server knows (kid)")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[NODE_TOKEN_ALGORITHM],
            audience=NODE_TOKEN_AUDIENCE,
            issuer=NODE_TOKEN_ISSUER,
            options={f"require_{claim}": True for claim in _REQUIRED_CLAIMS}
            | {"require_aud": True, "require_iss": True, "leeway": 0},
        )
    except ExpiredSignatureError as exc:
        raise InvalidNodeToken(
            "the token has expired; get a new one at POST /v1/nodes/token"
        ) from exc
    except (JOSEError, ValueError, TypeError, OverflowError) as exc:  # exp: Infinity overflows
        raise InvalidNodeToken(f"invalid token: {exc}") from exc
    try:
        parsed = NodeClaims(
            node_id=uuid.UUID(str(claims["sub"])),
            jti=str(claims["jti"]),
            key_id=key_id,
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (KeyError, ValueError, TypeError, OverflowError, OSError) as exc:
        raise InvalidNodeToken("invalid token claims") from exc
    skew = timedelta(seconds=NODE_TOKEN_CLOCK_SKEW_S)
    if parsed.issued_at > datetime.now(UTC) + skew:
        raise InvalidNodeToken("the token was issued in the future (iat)")
    if parsed.expires_at - parsed.issued_at > timedelta(seconds=nodes.token_ttl_s):
        raise InvalidNodeToken(
            f"the token lives longer than this server's token lifetime ({nodes.token_ttl_s} s)"
        )
    return parsed


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header; InvalidNodeToken if there is none."""
    if not authorization:
        raise InvalidNodeToken("missing credentials: send Authorization: Bearer <node token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidNodeToken("the Authorization header must be `Bearer <node token>`")
    return token.strip()


def generate_node_secret() -> str:
    """A fresh node secret: 256 random bits, prefixed so secret scanners can spot leaks."""
    return NODE_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_node_secret(secret: str) -> str:
    """What the database keeps instead of the secret.

    SHA-256 rather than a slow password hash on purpose: node secrets are 256 random bits, so
    there is nothing to brute-force, and the token endpoint stays cheap (no CPU burn in the API
    process that a flood of bad requests could exploit). The prefix leaves room to change scheme.
    """
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def verify_node_secret(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_node_secret(secret), secret_hash)
