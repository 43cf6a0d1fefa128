"""People (issue 4) and Nodes (issue 5) pages in real Chromium, against their real APIs."""

import re
from datetime import UTC, datetime, timedelta

import httpx
from playwright.async_api import APIResponse, Page, Route, expect

from tests.conftest import SHARED_IMAGES
from tests.ui.browser import PHONE, screenshots

TRAIN = SHARED_IMAGES / "faces" / "train"
TEST = SHARED_IMAGES / "faces" / "test"
DOG = SHARED_IMAGES / "scenes" / "dog.jpg"
# The label behind a face's name on a drawn image (draw.js COLORS.face, #38bdf8), as RGBA.
FACE_COLOR = [56, 189, 248, 255]


async def enroll(api: httpx.AsyncClient, name: str, folder: str) -> dict:  # type: ignore[type-arg]
    person = (await api.post("/v1/people", json={"name": name})).json()
    photos = [
        ("images", (p.name, p.read_bytes(), "image/jpeg"))
        for p in sorted((TRAIN / folder).glob("*.jp*g"))
    ]
    enrolled = await api.post(f"/v1/people/{person['id']}/faces", files=photos)
    assert enrolled.status_code in (200, 201), enrolled.text
    return dict(person)


async def test_enroll_a_person_then_identify_shows_the_name(signed_in: Page):
    page = signed_in
    await page.click('.tabs a[data-page="people"]')
    await page.fill("#person-name", "Barack Obama")
    await page.click('#create-person button[type="submit"]')
    card = page.locator('.person[data-name="Barack Obama"]')
    await expect(card).to_be_visible()

    photos = sorted(str(p) for p in (TRAIN / "obama").glob("*.jpg"))
    await card.locator(".enroll-input").set_input_files(photos)
    await expect(page.locator('.person[data-name="Barack Obama"] .face-count')).to_have_text(
        f"{len(photos)} faces"
    )

    await page.set_input_files("#identify-input", str(TEST / "obama1.jpg"))
    await expect(page.locator("#identify-result .identified-name")).to_have_text("Barack Obama")
    await screenshots(page, "people-enrolled")


async def test_a_photo_without_a_face_is_rejected_with_its_reason(signed_in: Page):
    page = signed_in
    await page.click('.tabs a[data-page="people"]')
    await page.fill("#person-name", "Nobody")
    await page.click('#create-person button[type="submit"]')
    card = page.locator('.person[data-name="Nobody"]')
    await card.locator(".enroll-input").set_input_files([str(DOG)])
    await expect(card.locator(".rejections li")).to_have_text("dog.jpg: no face found")
    await expect(card.locator(".rejections li strong")).to_have_text("dog.jpg")
    await expect(card.locator(".face-count")).to_have_text("0 faces")
    one = sorted((TRAIN / "obama").glob("*.jpg"))[0]
    await card.locator(".enroll-input").set_input_files([str(one)])
    await expect(card.locator(".face-count")).to_have_text("1 face")


async def test_identifying_a_photo_without_a_face_says_so_and_nothing_else(signed_in: Page):
    page = signed_in
    await page.click('.tabs a[data-page="people"]')
    await page.set_input_files("#identify-input", str(DOG))
    # Exactly the message: no stray text beside it (the figure it replaces is absent).
    await expect(page.locator("#identify-result")).to_have_text("No face found.")


async def test_identify_draws_each_face_s_box_with_its_name_and_similarity(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    await enroll(api, "Joe Biden", "biden")
    await page.click('.tabs a[data-page="people"]')
    await page.set_input_files("#identify-input", str(TEST / "obama_and_biden.jpg"))
    canvas = page.locator("#identify-result canvas#identify-image")
    await expect(canvas).to_be_visible()
    # Biden named with his similarity; Obama (not enrolled here) unknown.
    await expect(canvas).to_have_attribute("aria-label", re.compile(r"faces: .*Joe Biden \d+%"))
    await expect(canvas).to_have_attribute("aria-label", re.compile(r"unknown"))
    # The boxes are drawn: each label sits on a solid patch of the face colour, which a photo
    # alone does not have.
    solid = await canvas.evaluate(
        """(canvas, color) => {
          const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
          let n = 0;
          for (let i = 0; i < data.length; i += 4)
            if (color.every((v, k) => data[i + k] === v)) n += 1;
          return n;
        }""",
        FACE_COLOR,
    )
    assert solid > 200, f"only {solid} pixels of the face colour: no labelled boxes drawn"
    await expect(page.locator("#identify-result .identified-name")).to_have_text("Joe Biden")


async def test_a_refused_enrollment_prints_each_reason_once(signed_in: Page):
    page = signed_in
    await page.click('.tabs a[data-page="people"]')
    await page.fill("#person-name", "Dog Owner")
    await page.click('#create-person button[type="submit"]')
    card = page.locator('.person[data-name="Dog Owner"]')
    await card.locator(".enroll-input").set_input_files(
        [str(DOG), str(TRAIN / "obama" / "obama.jpg")]
    )
    report = card.locator(".enroll-report")
    await expect(report.locator(".rejections li")).to_have_text(["dog.jpg: no face found"])
    text = await report.inner_text()
    assert text.count("no face found") == 1, text
    await expect(report).to_contain_text("Nothing enrolled")


async def test_a_list_answered_late_does_not_replace_a_newer_one(signed_in: Page):
    """The page's first list of people, overtaken by the list asked for after a person was
    added, arrives last: it is dropped, and the person stays on the page."""
    page = signed_in
    held: list[tuple[Route, APIResponse]] = []

    async def hold_the_first_list(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, await route.fetch()))  # answered now (nobody), delivered later
        else:
            await route.continue_()

    await page.route(re.compile(r"/v1/people(\?[^/]*)?$"), hold_the_first_list)
    await page.click('.tabs a[data-page="people"]')
    await page.fill("#person-name", "Late Answer")
    await page.click('#create-person button[type="submit"]')
    card = page.locator('.person[data-name="Late Answer"]')
    await expect(card).to_be_visible()

    route, stale = held[0]
    async with page.expect_request_finished(lambda r: r == route.request):
        await route.fulfill(response=stale)
    await page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # its handler runs
    await expect(card).to_be_visible()
    await expect(page.get_by_text("Nobody enrolled yet.")).to_have_count(0)


async def test_the_people_page_fits_a_phone_with_a_person_s_faces(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    # A name with no place to break a line (a CompreFace subject, a handle) wraps nowhere by itself.
    handle = "kit_harington_official@winterfell_castle_example_org"
    await enroll(api, handle, "kit_harington")
    await enroll(api, "Rose Leslie", "rose_leslie")
    await page.set_viewport_size(PHONE)
    await page.click('.tabs a[data-page="people"]')
    card = page.locator(f'.person[data-name="{handle}"]')
    await expect(card.locator(".face-tile img")).to_have_count(2)
    await expect(card.locator(".face-tile img").last).to_have_js_property("complete", True)
    await assert_fits_a_phone(page, "the People page")

    await page.set_input_files("#identify-input", str(TRAIN / "kit_harington" / "john1.jpeg"))
    await expect(page.locator("#identify-result .identified-name")).to_have_text(handle)
    await expect(page.locator("#identify-result canvas")).to_be_visible()
    await assert_fits_a_phone(page, "the People page after Identify")


async def assert_fits_a_phone(page: Page, what: str) -> None:
    width = await page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], f"{what} is {width}px wide on a {PHONE['width']}px phone"


async def test_the_job_page_names_a_known_face_and_a_person_can_be_deleted(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    person = (await api.post("/v1/people", json={"name": "Alex Lacamoire"})).json()
    photos = [
        ("images", (p.name, p.read_bytes(), "image/jpeg"))
        for p in (TRAIN / "alex_lacamoire").glob("*.jpg")
    ]
    enrolled = await api.post(f"/v1/people/{person['id']}/faces", files=photos)
    assert enrolled.status_code in (200, 201), enrolled.text
    job = (
        await api.post(
            "/v1/images?wait=30",
            files={"image": ("alex.jpg", (TEST / "alex_lacamoire1.jpg").read_bytes())},
            data={"tasks": "faces,identify"},  # identity is a task of its own (issue 4)
        )
    ).json()
    await page.goto(f"/#/jobs/{job['id']}")
    await expect(page.locator("#faces .identity").first).to_have_text("Alex Lacamoire")

    await page.click('.tabs a[data-page="people"]')
    card = page.locator('.person[data-name="Alex Lacamoire"]')
    await card.locator(".delete-person").click()
    await expect(card).to_have_count(0)
    assert (await api.get(f"/v1/people/{person['id']}")).status_code == 404


async def test_an_unknown_face_is_promoted_to_a_new_person_from_its_job_page(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    job = (
        await api.post(
            "/v1/images?wait=30",
            files={"image": ("obama.jpg", (TEST / "obama1.jpg").read_bytes())},
            data={"tasks": "faces,identify"},
        )
    ).json()
    assert job["status"] == "done", job
    await page.goto(f"/#/jobs/{job['id']}")
    row = page.locator("#faces tbody tr")
    await expect(row.locator(".identity")).to_have_text("unknown")

    await row.get_by_role("button", name="Promote…").click()
    await row.get_by_label("New person’s name").fill("Barack Obama")
    await row.get_by_role("button", name="Promote", exact=True).click()
    await expect(row).to_contain_text("Promoted to Barack Obama")

    found = (await api.get("/v1/people", params={"name": "Barack Obama"})).json()["items"]
    assert [p["face_count"] for p in found] == [1]
    person = (await api.get(f"/v1/people/{found[0]['id']}")).json()
    assert person["faces"][0]["source_job_id"] == job["id"]
    # The job's record follows: its face is Barack Obama's, by hand (no similarity).
    await page.reload()
    await expect(row.locator(".identity")).to_have_text("Barack Obama")
    await expect(row).to_contain_text("placed by hand")


async def node_token(http: httpx.AsyncClient, node_id: str, secret: str) -> str:
    """Issue 5: a node trades its id and secret for a JWT. Align with the merged route."""
    response = await http.post("/v1/nodes/token", json={"node_id": node_id, "secret": secret})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def send_heartbeat(
    http: httpx.AsyncClient, token: str, *, fps: float, dark_scene: bool = False
) -> None:
    response = await http.post(
        "/v1/nodes/me/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "fps": fps,
            "latency_ms_p50": 42.0,
            "state": "active",
            "dark_scene": dark_scene,
            "version": "t",
        },
    )
    assert response.status_code == 200, response.text


async def test_a_nodes_heartbeat_shows_live_on_the_nodes_page(signed_in: Page, lookout_server: str):
    page = signed_in
    await page.clock.install()  # before the Nodes page starts its poll timer
    await page.click('.tabs a[data-page="nodes"]')
    await page.fill("#node-name", "door-cam")
    await page.click('#register-node button[type="submit"]')
    secret = (await page.locator("#node-secret").inner_text()).strip()
    node_id = (await page.locator("#registered .node-id").inner_text()).strip()
    assert secret and node_id
    row = page.locator('#nodes tr[data-name="door-cam"]')
    await expect(row).to_have_attribute("data-status", "offline")

    # From here the page's clock stands still: its 5 s poll never fires, so only the firehose's
    # node event can refresh the row.
    await page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    async with httpx.AsyncClient(base_url=lookout_server, timeout=30) as http:
        token = await node_token(http, node_id, secret)
        await send_heartbeat(http, token, fps=12.5)
        await expect(row).to_have_attribute("data-status", "online")
        await expect(row.locator(".node-fps")).to_have_text("12.5")
        await expect(row.locator(".node-latency")).to_have_text("42 ms")
        await expect(row.locator(".node-last-seen time")).to_be_visible()
        await expect(row.locator(".node-dark")).to_have_count(0)
        # A dark scene is flagged beside the status, which stays online.
        await send_heartbeat(http, token, fps=12.5, dark_scene=True)
        await expect(row.locator(".node-dark")).to_have_text("dark scene")
        await expect(row).to_have_attribute("data-status", "online")
    await screenshots(page, "nodes-heartbeat")

    # The secret is shown once: a reload does not show it again; revoke removes the node.
    await page.reload()
    await expect(page.locator("#node-secret")).to_have_count(0)
    await page.locator('#nodes tr[data-name="door-cam"] .revoke').click()
    await expect(page.locator('#nodes tr[data-name="door-cam"]')).to_have_count(0)


async def test_a_node_s_frame_shows_under_the_node_s_name(
    signed_in: Page, api: httpx.AsyncClient, lookout_server: str
):
    page = signed_in
    node = (await api.post("/v1/nodes", json={"name": "porch-cam"})).json()
    async with httpx.AsyncClient(base_url=lookout_server, timeout=30) as http:
        token = await node_token(http, node["id"], node["secret"])
        sent = await http.post(
            "/v1/nodes/me/frames",
            content=(TEST / "obama1.jpg").read_bytes(),
            headers={"Authorization": f"Bearer {token}", "content-type": "image/jpeg"},
        )
    assert sent.status_code == 202, sent.text

    job_id = sent.json()["id"]
    card = page.locator(f'#feed [data-job-id="{job_id}"]')
    await expect(card.locator(".source")).to_have_text("porch-cam")
    await expect(page.locator('#node-filter option[value="porch-cam"]')).to_be_attached()
    await card.locator("a.thumb").click()
    await expect(page.locator("#timings dt:text-is('Source') + dd")).to_have_text("porch-cam")
