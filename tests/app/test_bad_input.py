"""Input that used to answer a plain-text 500 (or drop the connection) is a 422 in the error
shape, and whatever still goes wrong inside is a JSON 500, never plain text."""

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.main import create_app
from app.models import Person
from tests.conftest import bearer, node_token

NUL = "\x00"


def assert_error_shape(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert "object at 0x" not in response.text and "<class" not in response.text
    return body


async def test_a_nul_in_a_person_name_is_422_and_stores_nothing(client, sessionmaker):
    body = assert_error_shape(await client.post("/v1/people", json={"name": f"a{NUL}b"}), 422)
    assert body["fields"][0]["loc"] == ["body", "name"]
    assert "NUL" in body["detail"]
    person = (await client.post("/v1/people", json={"name": "ann"})).json()
    assert_error_shape(await client.patch(f"/v1/people/{person['id']}", json={"name": NUL}), 422)
    assert (await client.get(f"/v1/people/{person['id']}")).json()["name"] == "ann"
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Person)) == 1


async def test_a_nul_in_the_people_name_filter_is_422(client):
    assert_error_shape(await client.get("/v1/people", params={"name": NUL}), 422)
    assert_error_shape(await client.get("/v1/people?name=%00"), 422)
    assert (await client.get("/v1/people", params={"name": "x"})).status_code == 200


async def test_a_lone_surrogate_is_422_not_an_encoding_crash(client):
    raw = b'{"name": "a\\ud800b"}'  # valid JSON, not encodable as UTF-8
    response = await client.post(
        "/v1/people", content=raw, headers={"content-type": "application/json"}
    )
    assert_error_shape(response, 422)


async def test_a_nul_in_a_heartbeat_version_is_422(client, settings, make_node):
    node = await make_node()
    headers = bearer(node_token(settings, node.id))
    for field in ("version", "last_error"):
        body = {"fps": 1, "state": "active", field: f"1.0{NUL}"}
        response = await client.post("/v1/nodes/me/heartbeat", json=body, headers=headers)
        assert_error_shape(response, 422)
    ok = await client.post(
        "/v1/nodes/me/heartbeat", json={"fps": 1, "state": "active"}, headers=headers
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"from": "9999-12-31T23:00:00Z"},
        {"to": "9999-12-31T23:59:59Z"},
        {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"},
    ],
)
async def test_stats_times_outside_the_calendar_s_range_are_422(client, query):
    assert_error_shape(await client.get("/v1/stats/counts", params=query), 422)


async def test_concurrent_rename_and_delete_of_one_person_never_500(client):
    statuses: list[int] = []
    for _ in range(15):
        person = (await client.post("/v1/people", json={"name": "racer"})).json()
        url = f"/v1/people/{person['id']}"
        renamed, deleted = await asyncio.gather(
            client.patch(url, json={"name": "renamed"}), client.delete(url)
        )
        for response in (renamed, deleted):
            if response.status_code >= 400:
                assert_error_shape(response, response.status_code)
        statuses += [renamed.status_code, deleted.status_code]
    assert set(statuses) <= {200, 204, 404, 409}, statuses


async def test_an_unhandled_error_is_a_json_500(settings):
    app = create_app(settings)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/broken", broken)
    app.router.routes.insert(0, app.router.routes.pop())  # before the dashboard's catch-all
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/v1/broken")
    body = assert_error_shape(response, 500)
    assert body["error"] == "internal"
    assert "a bug" not in response.text  # the detail is logged, not sent


async def test_a_wrong_method_is_405_naming_the_allowed_ones(client):
    response = await client.put("/v1/people")
    assert_error_shape(response, 405)
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
