"""GET /v1/apikeys/me: a key learns its own scopes (the dashboard hides what it may not do)."""

from datetime import timedelta

import httpx

from app.main import create_app
from app.security import Scope, parse_key
from app.settings import AuthSettings


async def test_a_key_reads_its_own_name_prefix_scopes_and_expiry(client, make_key):
    token = await make_key("viewer", scopes=(Scope.write, Scope.read), expires_in=timedelta(days=1))
    response = await client.get("/v1/apikeys/me", headers={"X-API-Key": token})
    assert response.status_code == 200, response.text
    me = response.json()
    parsed = parse_key(token)
    assert parsed is not None
    assert (me["name"], me["prefix"], me["scopes"]) == ("viewer", parsed[0], ["read", "write"])
    assert me["expires_at"] is not None and me["auth_enabled"] is True
    assert parsed[1] not in response.text  # never the secret


async def test_an_admin_key_says_admin(client):
    me = (await client.get("/v1/apikeys/me")).json()
    assert me["scopes"] == ["admin"] and me["expires_at"] is None


async def test_a_key_with_any_scope_may_ask_and_no_key_is_401(client, make_key):
    read_only = await make_key("reader", scopes=(Scope.read,))
    assert (await client.get("/v1/apikeys/me", headers={"X-API-Key": read_only})).json()[
        "scopes"
    ] == ["read"]
    refused = await client.get("/v1/apikeys/me", headers={"X-API-Key": "lk_nope_nope"})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"


async def test_with_keys_off_the_caller_is_the_anonymous_admin(settings):
    app = create_app(settings.model_copy(update={"auth": AuthSettings(enabled=False)}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            me = (await http.get("/v1/apikeys/me")).json()
    assert me == {
        "name": None,
        "prefix": None,
        "scopes": ["read", "write", "admin"],
        "expires_at": None,
        "auth_enabled": False,
        "rate_limit": None,  # keys off: nothing is counted
        "rate_limit_window_s": 60,
    }
