"""People are private to the key that created them; admin keys manage everyone's (README, Auth)."""

from app.security import Scope


async def test_another_key_s_person_is_404_and_an_admin_key_sees_it(client, make_key):
    alice = await make_key("alice", (Scope.read, Scope.write))
    bob = await make_key("bob", (Scope.read, Scope.write))
    created = await client.post("/v1/people", json={"name": "ann"}, headers={"X-API-Key": alice})
    url = f"/v1/people/{created.json()['id']}"
    as_bob = {"X-API-Key": bob}
    assert (await client.get(url, headers=as_bob)).status_code == 404
    assert (await client.patch(url, json={"name": "x"}, headers=as_bob)).status_code == 404
    assert (await client.delete(url, headers=as_bob)).status_code == 404
    assert (await client.get("/v1/people", headers=as_bob)).json()["items"] == []
    # The client's own key is an admin key: it sees and may rename Alice's person.
    assert (await client.get(url)).status_code == 200
    assert (await client.patch(url, json={"name": "anna"})).json()["name"] == "anna"
