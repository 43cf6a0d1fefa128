"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Headers: `webhook-id` (the event id, stable across retries), `webhook-timestamp` (epoch
seconds of this attempt), `webhook-signature` ("v1," + base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}" keyed with the base64-decoded part of the `whsec_…` secret).
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, *, message_id: str, timestamp_s: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, *, message_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(
            secret, message_id=message_id, timestamp_s=timestamp_s, body=body
        ),
    }
