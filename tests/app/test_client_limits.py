"""Per client address: failed authentications and WebSocket connects are limited (Redis)."""

import time

from httpx_ws import aconnect_ws

from app.limits import WEBSOCKET_CONNECTS
from app.security import Scope
from app.settings import AuthSettings
from app.streams import client_limit_key
from tests.app.test_auth import ws_close_code
from tests.conftest import serve_app

BAD_KEY = "lk_0123456789ab_" + "x" * 43
# The limits count in fixed windows; an hour-long one keeps a slow test's requests in one window
# (with 60 s, a loaded machine could cross a boundary mid-test and reset the count).
WINDOW_S = 3600


async def test_guessing_keys_is_cut_off_with_429_for_the_address(settings, make_key):
    limited = settings.model_copy(
        update={"auth": AuthSettings(failed_auth_per_client=3, rate_limit_window_s=WINDOW_S)}
    )
    good = await make_key("good", (Scope.read,))
    async with serve_app(limited) as http:
        assert (await http.get("/v1/jobs", headers={"X-API-Key": good})).status_code == 200
        statuses = [
            (await http.get("/v1/jobs", headers={"X-API-Key": BAD_KEY})).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        blocked = await http.get("/v1/jobs", headers={"X-API-Key": good})
        assert blocked.status_code == 429  # the address, not the key, is over its limit
        assert blocked.json()["error"] == "rate_limited"
        assert 1 <= int(blocked.headers["retry-after"]) <= WINDOW_S
        assert await ws_close_code(http, f"/v1/ws?api_key={good}") == 4429


async def test_guessing_keys_through_the_compatible_apis_is_cut_off_too(settings, make_key):
    """DeepStack's api_key field and CompreFace's x-api-key are keys like X-API-Key: their
    failures count against the address, and its limit refuses them (they counted nothing)."""
    limited = settings.model_copy(
        update={"auth": AuthSettings(failed_auth_per_client=3, rate_limit_window_s=WINDOW_S)}
    )
    good = await make_key("good", (Scope.read,))
    async with serve_app(limited) as http:

        async def deepstack(key: str) -> int:
            response = await http.post("/v1/vision/face/list", data={"api_key": key})
            return response.status_code

        async def compreface(key: str) -> int:
            response = await http.get("/api/v1/recognition/subjects", headers={"x-api-key": key})
            return response.status_code

        assert await deepstack(good) == 200 and await compreface(good) == 200
        statuses = [await deepstack(BAD_KEY), await compreface(BAD_KEY), await deepstack(BAD_KEY)]
        assert statuses == [401, 404, 401]  # each API's own "unknown key"
        assert await compreface(BAD_KEY) == 429
        assert await deepstack(good) == 429 and await compreface(good) == 429
        assert (await http.get("/v1/jobs", headers={"X-API-Key": good})).status_code == 429


async def test_websocket_connects_are_limited_per_address(settings, make_key, redis):
    limited = settings.model_copy(
        update={"auth": AuthSettings(websocket_connects_per_client=2, rate_limit_window_s=WINDOW_S)}
    )
    key = await make_key("sockets", (Scope.read,))
    async with serve_app(limited) as http:
        # Redis holds back writes for a moment (reads go on): the first connect's count waits,
        # and the handshake waits for it. Counted before the socket opens, the next connect is
        # judged after this one (CI once saw a third connect counted before the first two, and
        # let in: the socket was accepted first and counted after).
        await redis.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        for connects in (1, 2):
            async with aconnect_ws(f"/v1/ws?api_key={key}", http):
                assert await connects_counted(redis) == connects
        assert await ws_close_code(http, f"/v1/ws?api_key={key}") == 4429
        # Plain HTTP is not a socket connect: still served.
        assert (await http.get("/v1/jobs", headers={"X-API-Key": key})).status_code == 200


async def test_without_limits_many_failures_stay_401(settings):
    """The control: with the limit off, the tenth bad key is still just a 401."""
    off = settings.model_copy(update={"auth": AuthSettings(failed_auth_per_client=0)})
    async with serve_app(off) as http:
        for _ in range(10):
            response = await http.get("/v1/jobs", headers={"X-API-Key": BAD_KEY})
            assert response.status_code == 401


async def connects_counted(redis) -> int:
    """The WebSocket connects counted for the test client's address (httpx's ASGI transport
    connects from 127.0.0.1) in the current window."""
    window = int(time.time() // WINDOW_S)
    return int(await redis.get(client_limit_key(WEBSOCKET_CONNECTS, "127.0.0.1", window)) or 0)
