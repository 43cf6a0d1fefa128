"""The Unknown page and the People page's faces (issue 16) in real Chromium, against a real
API + worker whose clustering pass runs every second."""

import asyncio

import httpx
from playwright.async_api import Page, expect

from tests.conftest import SHARED_IMAGES
from tests.ui.browser import screenshots

FACES = SHARED_IMAGES / "faces"
OBAMA = ["train/obama/obama.jpg", "train/obama/obama2.jpg"]
BIDEN = ["train/biden/biden.jpg", "train/biden/biden2.jpg"]
OTHERS = ["train/kit_harington/john1.jpeg", "train/rose_leslie/img1.jpg"]
BOTH = "test/obama_and_biden.jpg"


async def upload(api: httpx.AsyncClient, relative: str) -> list[dict]:  # type: ignore[type-arg]
    response = await api.post(
        "/v1/images?wait=30",
        files={"image": (relative.rsplit("/", 1)[-1], (FACES / relative).read_bytes())},
        data={"tasks": "faces"},
    )
    assert response.status_code in (200, 201), response.text
    return [d for d in response.json()["detections"] if d["kind"] == "face"]


def ids(faces: list[dict]) -> set[int]:  # type: ignore[type-arg]
    return {f["id"] for f in faces}


async def identify_on_people_page(page: Page, relative: str) -> None:
    await page.click('.tabs a[data-page="people"]')
    await page.set_input_files("#identify-input", str(FACES / relative))


async def test_unknown_faces_are_named_merged_and_moved_in_the_browser(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    obama = set().union(*[ids(await upload(api, p)) for p in OBAMA])
    biden = set().union(*[ids(await upload(api, p)) for p in BIDEN])
    both = sorted(await upload(api, BOTH), key=lambda f: f["box"][2] - f["box"][0])[-2:]
    left, right = sorted(both, key=lambda f: f["box"][0])
    obama.add(right["id"])
    biden.add(left["id"])
    for path in OTHERS:
        await upload(api, path)

    await page.click('.tabs a[data-page="unknown"]')
    clusters = page.locator(".cluster")
    for _ in range(30):  # the server groups them within a second or two; the page refreshes
        await page.click("#refresh-unknown")
        if await clusters.count() == 2:
            break
        await page.wait_for_timeout(1000)
    await expect(clusters).to_have_count(2)
    faces_of = {
        frozenset(int(i) for i in (await c.get_attribute("data-faces") or "").split(",")): c
        for c in await clusters.all()
    }
    assert set(faces_of) == {frozenset(obama), frozenset(biden)}  # one group per person
    obama_card = faces_of[frozenset(obama)]
    await expect(obama_card.locator(".cluster-size")).to_have_text("3 faces")
    await expect(obama_card.locator("img.thumb")).to_have_count(3)
    await expect(obama_card.locator(".last-seen")).to_contain_text("last seen")
    # Every thumbnail is a real picture (fetched with the key), none broken.
    # Polled with evaluate (CDP, not page eval): the page's CSP forbids wait_for_function's eval.
    for _ in range(100):
        if await page.evaluate(
            "[...document.querySelectorAll('.cluster img.thumb')]"
            ".every((i) => i.complete && i.naturalWidth === 112)"
        ):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a cluster thumbnail did not load as a 112 px picture")
    await screenshots(page, "unknown-clusters")

    # Name it: the group leaves the Unknown page, and a later photo is identified by that name.
    await obama_card.locator(".cluster-name").fill("Barack")
    await obama_card.locator('.name-form button[type="submit"]').click()
    await expect(clusters).to_have_count(1)
    await identify_on_people_page(page, "test/obama1.jpg")
    await expect(page.locator("#identify-result .identified-name")).to_have_text("Barack")
    card = page.locator('.person[data-name="Barack"]')
    await expect(card.locator(".face-tile img.thumb").first).to_be_visible()
    await screenshots(page, "people-faces")

    # Merge Biden's group into Barack (select): biden.jpg now identifies as Barack.
    await page.click('.tabs a[data-page="unknown"]')
    biden_card = page.locator(".cluster").first
    await biden_card.locator(".merge-into").select_option(label="Barack")
    await biden_card.locator(".merge-into-button").click()
    await expect(page.locator(".cluster")).to_have_count(0)
    await identify_on_people_page(page, BIDEN[0])
    await expect(page.locator("#identify-result .identified-name")).to_have_text("Barack")

    # Move Biden's faces out of Barack ("not this person"): biden.jpg is unknown again.
    tiles = page.locator('.person[data-name="Barack"] .face-tile')
    for face_id in sorted(biden):
        tile = tiles.locator(f'xpath=self::*[@data-source-face-id="{face_id}"]')
        if await tile.count():
            await tile.locator(".move-face").select_option("unknown")
            await expect(tile).to_have_count(0)
    await identify_on_people_page(page, BIDEN[0])
    await expect(page.locator("#identify-result .identified-name")).to_have_count(0)
    await expect(page.locator("#identify-result li")).to_contain_text("unknown")
    # Barack keeps his own faces, and deleting one (×) removes it.
    count = await tiles.count()
    assert count >= 2
    await tiles.first.locator(".delete-face").click()
    await expect(tiles).to_have_count(count - 1)
