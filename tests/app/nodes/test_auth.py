"""Node credentials: every bad token is refused (401), every time; another node's job is 404
(as an unknown one: its existence is not revealed)."""

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from httpx_ws import WebSocketDisconnect, aconnect_ws
from jose import jwt

from app.security import NODE_TOKEN_AUDIENCE, NODE_TOKEN_ISSUER, issue_node_token
from app.settings import PLACEHOLDER_NODE_SIGNING_KEY
from tests.conftest import bearer, node_token, serve_app, shared_image, with_node_settings

T1 = shared_image("scenes/t1.jpg")
OTHER_KEY = "another-signing-key-of-32-bytes-or-more!"
OLD_KEY = "the-previous-signing-key-32-bytes-long!!"


def claims(node_id: uuid.UUID, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": NODE_TOKEN_ISSUER,
        "aud": NODE_TOKEN_AUDIENCE,
        "sub": str(node_id),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, object], key: str, *, kid: str = "k1", alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def bad_tokens(settings, node_id: uuid.UUID) -> dict[str, str | None]:
    """Token by case; None means no Authorization header at all."""
    key = settings.nodes.signing_key.get_secret_value()
    valid = sign(claims(node_id), key)
    head, payload, signature = valid.split(".")
    forged_payload = b64(claims(uuid.uuid4()))
    expired_at = datetime.now(UTC) - timedelta(hours=1)
    return {
        "none": None,
        "not bearer": f"Basic {valid}",
        "empty bearer": "Bearer",
        "not a jwt": "Bearer not.a.jwt",
        "expired": "Bearer "
        + issue_node_token(
            node_id, settings.nodes, now=expired_at - timedelta(seconds=settings.nodes.token_ttl_s)
        ).token,
        "bad signature": f"Bearer {head}.{forged_payload}.{signature}",
        "alg none": "Bearer " + b64({"alg": "none", "kid": "k1", "typ": "JWT"}) + f".{payload}.",
        "alg HS512, same key": "Bearer " + sign(claims(node_id), key, alg="HS512"),
        "another key": "Bearer " + sign(claims(node_id), OTHER_KEY),
        "unknown kid": "Bearer " + sign(claims(node_id), key, kid="k9"),
        "no kid": "Bearer " + jwt.encode(claims(node_id), key, algorithm="HS256"),
        "no jti": "Bearer " + sign(claims(node_id, jti=None), key),
        "no exp": "Bearer " + sign(claims(node_id, exp=None), key),
        "no iat": "Bearer " + sign(claims(node_id, iat=None), key),
        "no sub": "Bearer " + sign(claims(node_id, sub=None), key),
        "wrong audience": "Bearer " + sign(claims(node_id, aud="lookout:admin"), key),
        "unknown node": "Bearer " + sign(claims(uuid.uuid4()), key),
        # Forgeries the attack used: the public placeholder key, a far exp, a future iat.
        "public placeholder key": "Bearer " + sign(claims(node_id), PLACEHOLDER_NODE_SIGNING_KEY),
        # JSON's Infinity: jose's own exp check overflowed converting it (a 500).
        "infinite exp": "Bearer " + sign(claims(node_id, exp=float("inf")), key),
        "ten years of life": "Bearer "
        + sign(claims(node_id, exp=int(time.time()) + 10 * 365 * 86400), key),
        "issued in the future": "Bearer "
        + sign(claims(node_id, iat=int(time.time()) + 3600, exp=int(time.time()) + 3900), key),
        "one second over the TTL": "Bearer "
        + sign(
            claims(
                node_id,
                iat=int(time.time()),
                exp=int(time.time()) + settings.nodes.token_ttl_s + 1,
            ),
            key,
        ),
    }


async def node_requests(client, authorization: str | None) -> list[tuple[str, int]]:
    headers = {"authorization": authorization} if authorization is not None else {}
    job_id = uuid.uuid4()
    responses = [
        ("me", await client.get("/v1/nodes/me", headers=headers)),
        (
            "heartbeat",
            await client.post(
                "/v1/nodes/me/heartbeat", json={"fps": 1, "state": "active"}, headers=headers
            ),
        ),
        (
            "frames",
            await client.post(
                "/v1/nodes/me/frames",
                content=T1,
                headers={**headers, "content-type": "image/jpeg"},
            ),
        ),
        ("job", await client.get(f"/v1/nodes/me/jobs/{job_id}", headers=headers)),
    ]
    for name, response in responses:
        assert response.json()["error"] == "invalid_token", (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    return [(name, r.status_code) for name, r in responses]


async def socket_close_code(client, authorization: str | None) -> int:
    headers = {"authorization": authorization} if authorization is not None else {}
    with pytest.raises(WebSocketDisconnect) as refused:
        async with aconnect_ws("/v1/nodes/me/stream", client, headers=headers):
            pass
    return refused.value.code


async def test_every_bad_token_is_refused_with_401_every_time(client, settings, make_node):
    node = await make_node()
    for case, authorization in bad_tokens(settings, node.id).items():
        for _ in range(2):
            statuses = await node_requests(client, authorization)
            assert {status for _, status in statuses} == {401}, case
            assert await socket_close_code(client, authorization) == 4401, case


async def test_a_valid_token_is_accepted_everywhere(client, settings, make_node):
    """The control for the test above: the same requests with a good token succeed."""
    node = await make_node()
    headers = bearer(node_token(settings, node.id))
    assert (await client.get("/v1/nodes/me", headers=headers)).status_code == 200
    heartbeat = await client.post(
        "/v1/nodes/me/heartbeat", json={"fps": 1, "state": "active"}, headers=headers
    )
    assert heartbeat.status_code == 200
    frame = await client.post(
        "/v1/nodes/me/frames", content=T1, headers={**headers, "content-type": "image/jpeg"}
    )
    assert frame.status_code == 202
    job = await client.get(f"/v1/nodes/me/jobs/{frame.json()['id']}", headers=headers)
    assert job.status_code == 200
    async with aconnect_ws("/v1/nodes/me/stream", client, headers=headers) as ws:
        await ws.send_bytes(T1)
        assert (await ws.receive_json())["type"] == "accepted"


async def test_node_a_cannot_read_node_b_s_frames(client, settings, make_node):
    node_a, node_b = await make_node("a"), await make_node("b")
    sent_by_b = await client.post(
        "/v1/nodes/me/frames",
        content=T1,
        headers={**bearer(node_token(settings, node_b.id)), "content-type": "image/jpeg"},
    )
    job_id = sent_by_b.json()["id"]
    as_a = bearer(node_token(settings, node_a.id))
    unknown = await client.get(f"/v1/nodes/me/jobs/{uuid.uuid4()}", headers=as_a)
    for _ in range(2):
        response = await client.get(f"/v1/nodes/me/jobs/{job_id}", headers=as_a)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        # Word for word what an unknown id gets, but for the id itself.
        assert response.json()["detail"].replace(job_id, "?") == unknown.json()["detail"].replace(
            unknown.url.path.rsplit("/", 1)[1], "?"
        )
    as_b = bearer(node_token(settings, node_b.id))
    assert (await client.get(f"/v1/nodes/me/jobs/{job_id}", headers=as_b)).status_code == 200


async def test_a_socket_refreshed_with_another_node_s_token_closes_4403(
    client, settings, make_node
):
    node_a, node_b = await make_node("a"), await make_node("b")
    async with aconnect_ws(
        "/v1/nodes/me/stream", client, headers=bearer(node_token(settings, node_a.id))
    ) as ws:
        await ws.send_text(json.dumps({"type": "token", "token": node_token(settings, node_b.id)}))
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_json()
    assert closed.value.code == 4403


async def test_a_revoked_node_s_token_fails_on_its_next_request(client, settings, make_node):
    node = await make_node()
    headers = bearer(node_token(settings, node.id))  # issued before the revocation
    assert (await client.get("/v1/nodes/me", headers=headers)).status_code == 200
    async with aconnect_ws("/v1/nodes/me/stream", client, headers=headers) as open_socket:
        assert (await client.delete(f"/v1/nodes/{node.id}")).status_code == 204
        for _ in range(2):
            statuses = await node_requests(client, headers["authorization"])
            assert {status for _, status in statuses} == {401}
        assert await socket_close_code(client, headers["authorization"]) == 4401
        # The socket opened before the revocation closes at its next frame.
        await open_socket.send_bytes(T1)
        with pytest.raises(WebSocketDisconnect) as closed:
            await open_socket.receive_json()
        assert closed.value.code == 4401
        assert "revoked" in closed.value.reason
    exchange = await client.post(
        "/v1/nodes/token", json={"node_id": str(node.id), "secret": node.secret}
    )
    assert exchange.status_code == 401


async def test_tokens_of_a_previous_key_verify_until_that_key_is_dropped(settings, make_node):
    node = await make_node()
    old_token = sign(claims(node.id), OLD_KEY, kid="k0")
    rotated = with_node_settings(settings, previous_signing_keys={"k0": OLD_KEY})
    async with serve_app(rotated) as client:
        assert (await client.get("/v1/nodes/me", headers=bearer(old_token))).status_code == 200
        # New tokens come from the current key.
        exchange = await client.post(
            "/v1/nodes/token", json={"node_id": str(node.id), "secret": node.secret}
        )
        assert jwt.get_unverified_header(exchange.json()["access_token"])["kid"] == "k1"
    async with serve_app(settings) as client:  # k0 retired
        response = await client.get("/v1/nodes/me", headers=bearer(old_token))
        assert response.status_code == 401


async def test_token_exchange_refuses_wrong_secrets_and_unknown_nodes(client, make_node):
    node = await make_node()
    for body in (
        {"node_id": str(node.id), "secret": node.secret + "x"},
        {"node_id": str(uuid.uuid4()), "secret": node.secret},
    ):
        response = await client.post("/v1/nodes/token", json=body)
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown node id or wrong secret"


async def test_an_exchanged_token_carries_the_required_claims(client, settings, make_node):
    node = await make_node()
    response = await client.post(
        "/v1/nodes/token", json={"node_id": str(node.id), "secret": node.secret}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.nodes.token_ttl_s
    assert body["expires_at"].endswith("Z")
    header = jwt.get_unverified_header(body["access_token"])
    payload = jwt.get_unverified_claims(body["access_token"])
    assert header == {**header, "alg": "HS256", "kid": settings.nodes.signing_key_id}
    assert {"exp", "iat", "sub", "jti", "aud", "iss"} <= set(payload)
    assert payload["sub"] == str(node.id)
    assert payload["exp"] - payload["iat"] == settings.nodes.token_ttl_s


async def test_the_token_response_is_documented_field_by_field(client):
    """Issue 12: `access_token` was undocumented: /docs says what each field is and how to
    send the token."""
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["TokenOut"]
    fields = schema["properties"]
    assert set(fields) == {"access_token", "token_type", "expires_in", "expires_at"}
    assert all(field.get("description") for field in fields.values()), fields
    assert "Authorization: Bearer" in fields["access_token"]["description"]
