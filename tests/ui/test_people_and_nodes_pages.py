"""The People and Nodes pages against the API contract of issues 4 and 5, answered by the test.

Their APIs are built on other branches, so here the browser's calls to /v1/people, /v1/faces,
/v1/identify and /v1/nodes are answered by Playwright routes that hold the state the way the
issues describe it (everything else, sign-in included, is the real server). This checks the
pages' own logic: rendering, enrolment rejections, identify, the secret shown once, live status.
The same flows against the real APIs are in tests/ui_pending (run after the merge).
"""

import json
import re
import uuid
from typing import Any

from playwright.async_api import Page, Route, expect

from tests.conftest import SHARED_IMAGES
from tests.ui.browser import screenshots

TRAIN = SHARED_IMAGES / "faces" / "train"
TEST = SHARED_IMAGES / "faces" / "test"
DOG = SHARED_IMAGES / "scenes" / "dog.jpg"


def reply(route: Route, status: int, body: Any = None) -> Any:
    if body is None:
        return route.fulfill(status=status)
    return route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


class FakePeopleApi:
    """Issue 4's routes, in memory. Enrolment refuses photos named dog*: 'no face found'."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def handle(self, route: Route) -> None:
        request = route.request
        path = request.url.split("/v1/", 1)[1].split("?")[0]
        self.calls.append(f"{request.method} /v1/{path}")
        parts = path.split("/")
        if path == "people" and request.method == "GET":
            await reply(route, 200, {"items": list(self.people.values())})
        elif path == "people" and request.method == "POST":
            person = {"id": str(uuid.uuid4()), "name": request.post_data_json["name"], "faces": []}
            self.people[person["id"]] = person
            await reply(route, 201, person)
        elif parts[0] == "people" and len(parts) == 2 and request.method == "DELETE":
            self.people.pop(parts[1], None)
            await reply(route, 204)
        elif parts[0] == "people" and len(parts) == 3 and request.method == "POST":
            names = re.findall(rb'filename="([^"]+)"', request.post_data_buffer or b"")
            rejected = [n.decode() for n in names if n.startswith(b"dog")]
            if rejected:
                await reply(
                    route,
                    422,
                    {
                        "error": "invalid_image",
                        "detail": f"{len(rejected)} of {len(names)} photos refused",
                        "rejected": [{"filename": n, "reason": "no face found"} for n in rejected],
                    },
                )
                return
            person = self.people[parts[1]]
            person["faces"] += [{"id": str(uuid.uuid4())} for _ in names]
            await reply(route, 201, person)
        elif parts[0] == "people" and len(parts) == 4 and request.method == "DELETE":
            person = self.people[parts[1]]
            person["faces"] = [f for f in person["faces"] if f["id"] != parts[3]]
            await reply(route, 204)
        elif path == "identify":
            known = [p for p in self.people.values() if p["faces"]]
            match = {"person_id": known[0]["id"], "name": known[0]["name"], "similarity": 0.71}
            await reply(route, 200, {"faces": [{"identity": match if known else None}]})
        else:
            await reply(route, 404, {"error": "not_found", "detail": path})


async def test_people_page_creates_enrolls_shows_rejections_identifies_and_deletes(
    signed_in: Page,
):
    page = signed_in
    fake = FakePeopleApi()
    await page.route(re.compile(r".*/v1/(people|faces|identify).*"), fake.handle)
    await page.click('.tabs a[data-page="people"]')
    await page.fill("#person-name", "Barack Obama")
    await page.click('#create-person button[type="submit"]')
    card = page.locator('.person[data-name="Barack Obama"]')
    await expect(card.locator(".face-count")).to_have_text("0 face(s)")

    await card.locator(".enroll-input").set_input_files([str(DOG)])
    await expect(card.locator(".rejections li")).to_have_text("dog.jpg: no face found")

    photos = sorted(str(p) for p in (TRAIN / "obama").glob("*.jpg"))
    await card.locator(".enroll-input").set_input_files(photos)
    await expect(card.locator(".face-count")).to_have_text(f"{len(photos)} face(s)")
    await expect(card.locator(".face-id")).to_have_count(len(photos))

    await page.set_input_files("#identify-input", str(TEST / "obama1.jpg"))
    await expect(page.locator("#identify-result .identified-name")).to_have_text("Barack Obama")
    await expect(page.locator("#identify-result li")).to_contain_text("(71%)")
    await screenshots(page, "people-contract")

    await card.locator(".face-id button").first.click()
    await expect(card.locator(".face-count")).to_have_text(f"{len(photos) - 1} face(s)")
    await card.locator(".delete-person").click()
    await expect(card).to_have_count(0)
    assert any(c.startswith("DELETE /v1/people/") and "/faces/" in c for c in fake.calls)


class FakeNodesApi:
    """Issue 5's fleet, in memory; `beat()` is a heartbeat as the server would record it."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def beat(self, name: str, *, fps: float, dark: bool = False) -> None:
        node = next(n for n in self.nodes.values() if n["name"] == name)
        node.update(
            online=True,
            fps=fps,
            p50_latency_ms=42.0,
            frames_per_min=fps * 60,
            last_seen="2026-01-02T03:04:05+00:00",
            dark_warning=dark,
        )

    async def handle(self, route: Route) -> None:
        request = route.request
        path = request.url.split("/v1/", 1)[1].split("?")[0]
        if path == "nodes" and request.method == "GET":
            await reply(route, 200, {"items": list(self.nodes.values())})
        elif path == "nodes" and request.method == "POST":
            node_id = str(uuid.uuid4())
            self.nodes[node_id] = {
                "id": node_id,
                "name": request.post_data_json["name"],
                "online": False,
                "last_seen": None,
            }
            await reply(route, 201, {**self.nodes[node_id], "secret": "s3cr3t-shown-once"})
        elif path.startswith("nodes/") and request.method == "DELETE":
            self.nodes.pop(path.split("/")[1], None)
            await reply(route, 204)
        else:
            await reply(route, 404, {"error": "not_found", "detail": path})


async def test_nodes_page_registers_shows_the_secret_once_updates_status_and_revokes(
    signed_in: Page,
):
    page = signed_in
    fake = FakeNodesApi()
    await page.route(re.compile(r".*/v1/nodes.*"), fake.handle)
    await page.click('.tabs a[data-page="nodes"]')
    await page.fill("#node-name", "door-cam")
    await page.click('#register-node button[type="submit"]')
    await expect(page.locator("#node-secret")).to_have_text("s3cr3t-shown-once")
    row = page.locator('#nodes tr[data-name="door-cam"]')
    await expect(row).to_have_attribute("data-status", "offline")

    fake.beat("door-cam", fps=12.5)  # the page polls; a node event on the firehose also refreshes
    await expect(row).to_have_attribute("data-status", "online")
    await expect(row.locator(".node-fps")).to_have_text("12.5")
    # 03:04:05 UTC is 12:04:05 in Tokyo, the browser's zone in these tests.
    await expect(row.locator(".node-last-seen time")).to_have_text("12:04:05")
    fake.beat("door-cam", fps=3, dark=True)
    await expect(row).to_have_attribute("data-status", "dark")
    await screenshots(page, "nodes-contract")

    await page.reload()
    await expect(page.locator("#node-secret")).to_have_count(0)
    await expect(row).to_be_visible()
    await row.locator(".revoke").click()
    await expect(row).to_have_count(0)
