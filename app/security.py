"""API key format and hashing. Pure functions: no database, no FastAPI.

A key reads `lk_<prefix>_<secret>`. The prefix (12 hex chars) is stored in clear and finds the
row; only the SHA-256 of the secret is stored. The secret has 256 bits of entropy, so a fast
hash is enough (a slow KDF only matters for guessable passwords), and it keeps per-request
verification cheap. Digests are compared in constant time.
"""

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

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
