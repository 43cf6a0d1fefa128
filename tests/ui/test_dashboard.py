"""The dashboard in real headless Chromium against a real API + worker (the parts in this branch:
sign-in, Live, Upload, Job). Screenshots land in tests/ui/output/."""

import asyncio
import base64
import re
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import skimage
from playwright.async_api import Page, expect

from app.ui import STATIC_DIR
from tests.conftest import SHARED_IMAGES, shared_image
from tests.images import PLATE_READ, dog_with_plate_jpeg
from tests.ui.browser import screenshots

T1 = SHARED_IMAGES / "scenes" / "t1.jpg"
DOG = SHARED_IMAGES / "scenes" / "dog.jpg"
PAGE = Path(skimage.__file__).parent / "data" / "page.png"


def test_the_ui_is_served_at_root_and_the_api_docs_still_are(lookout_server):
    root = httpx.get(f"{lookout_server}/", timeout=10)
    assert root.status_code == 200
    assert root.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/main.js">' in root.text
    assert httpx.get(f"{lookout_server}/js/api.js", timeout=10).status_code == 200
    assert httpx.get(f"{lookout_server}/docs", timeout=10).status_code == 200
    assert "/v1/images" in httpx.get(f"{lookout_server}/openapi.json", timeout=10).text
    # API errors keep the API's error model; the UI's catch-all does not swallow them.
    missing = httpx.get(f"{lookout_server}/v1/jobs/not-a-uuid", timeout=10)
    assert missing.status_code in (401, 422) and "error" in missing.json()


def test_the_ui_ships_no_reference_to_another_host():
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            # An XML namespace names, it does not fetch.
            text = path.read_text().replace("http://www.w3.org/2000/svg", "")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path


async def test_sign_in_refuses_a_wrong_key_then_keeps_a_good_one(page: Page, ui_key):
    await page.goto("/")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#login-key", "lk_wrong_key")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_contain_text("Refused (401)")

    await page.fill("#login-key", ui_key)
    await page.click("#login-submit")
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator('#stream-state[data-state="open"]')).to_be_attached()
    assert await page.evaluate("localStorage.getItem('lookout.apiKey')") == ui_key

    await page.reload()  # the stored key is used without asking again
    await expect(page.locator('#stream-state[data-state="open"]')).to_be_attached()
    await expect(page.locator("#login")).to_be_hidden()


async def test_live_shows_an_uploaded_t1_with_six_faces_in_the_browsers_time_zone(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    await expect(page.locator("#feed-empty")).to_be_visible()
    response = await api.post(
        "/v1/images", files={"image": ("t1.jpg", shared_image("scenes/t1.jpg"))}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    card = page.locator(f'#feed [data-job-id="{job_id}"]')
    await expect(card).to_be_visible()
    await expect(card).to_have_attribute("data-faces", "6")
    await expect(card.locator('.chip[data-label="face"]')).to_have_text("face × 6")
    await expect(card.locator(".source")).to_have_text("(uploads)")

    finished_at = (await api.get(f"/v1/jobs/{job_id}")).json()["finished_at"]
    tokyo = datetime.fromisoformat(finished_at).astimezone(ZoneInfo("Asia/Tokyo"))
    await expect(card.locator("time")).to_have_text(tokyo.strftime("%H:%M:%S"))
    # The thumbnail is the real image with boxes: not the dark placeholder frame.
    await expect(card.locator("canvas")).to_have_js_property("width", 480)
    await page.wait_for_function(
        """id => {
          const c = document.querySelector(`[data-job-id="${id}"] canvas`);
          const p = c.getContext('2d').getImageData(2, 2, 1, 1).data;
          return p[0] + p[1] + p[2] > 60;  // the dark frame is rgb(11, 18, 32)
        }""",
        arg=job_id,
    )
    await screenshots(page, "live")

    # Paused: a new result waits; resumed: it appears.
    await page.click("#pause")
    second = await api.post(
        "/v1/images", files={"image": ("t1.jpg", shared_image("scenes/t1.jpg"))}
    )
    second_id = second.json()["id"]
    await expect(page.locator("#held")).to_have_text("1 new while paused")
    await expect(page.locator(f'[data-job-id="{second_id}"]')).to_have_count(0)
    await page.click("#pause")
    await expect(page.locator(f'[data-job-id="{second_id}"]')).to_be_visible()
    await expect(page.locator("#feed .card").first).to_have_attribute("data-job-id", second_id)

    # The source filter lists what was seen; a source with nothing hides every card.
    await expect(page.locator("#node-filter option")).to_have_text(["All sources", "(uploads)"])
    await page.select_option("#node-filter", "(uploads)")
    await expect(page.locator("#feed .card:visible")).to_have_count(2)


async def test_upload_page_takes_dropped_and_picked_images_and_shows_each_result(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    await page.click('.tabs a[data-page="upload"]')
    await expect(page.locator("#dropzone")).to_be_visible()

    # Drag and drop: a DataTransfer holding t1.jpg and a file that is no image.
    t1_b64 = base64.b64encode(T1.read_bytes()).decode()
    drop = await page.evaluate_handle(
        """b64 => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], 't1.jpg', { type: 'image/jpeg' }));
          transfer.items.add(new File(['hello'], 'notes.txt', { type: 'text/plain' }));
          return transfer;
        }""",
        t1_b64,
    )
    await page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    # And the file picker, with dog.jpg (faces + objects are ticked by default).
    await page.set_input_files("#file-input", str(DOG))

    t1_row = page.locator('.upload[data-file="t1.jpg"]')
    dog_row = page.locator('.upload[data-file="dog.jpg"]')
    text_row = page.locator('.upload[data-file="notes.txt"]')
    await expect(text_row).to_have_attribute("data-state", "rejected")
    await expect(text_row.locator(".state")).to_have_text("rejected (415)")
    await expect(t1_row).to_have_attribute("data-state", "done")
    await expect(t1_row.locator(".summary")).to_contain_text("face × 6")
    await expect(dog_row).to_have_attribute("data-state", "done")
    await expect(dog_row.locator(".summary")).to_contain_text("dog")
    await expect(dog_row.locator("progress")).to_have_js_property("value", 1)

    job_id = await t1_row.get_attribute("data-job-id")
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["counts"]["face"] == 6
    await screenshots(page, "upload")


async def test_job_page_shows_the_annotated_image_faces_timings_and_deletes(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    response = await api.post(
        "/v1/images?wait=30",
        files={"image": ("t1.jpg", shared_image("scenes/t1.jpg"))},
        data={"tasks": "faces,objects"},
    )
    assert response.status_code == 200, response.text
    job = response.json()

    await page.goto(f"/#/jobs/{job['id']}")
    image = page.locator("img#annotated")
    await expect(image).to_be_visible()
    await page.wait_for_function("document.querySelector('img#annotated').complete")
    natural = await image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [job["image"]["width"], job["image"]["height"]]
    await expect(page.locator("#faces tbody tr")).to_have_count(6)
    await expect(page.locator("#faces tbody tr").first.locator(".identity")).to_have_text("unknown")
    await expect(page.locator("#faces-section")).to_be_visible()
    for section in ("#qr-section", "#text-section", "#plates-section"):  # not asked for
        await expect(page.locator(section)).to_have_count(0)
    objects = [d for d in job["detections"] if d["kind"] == "object"]
    if objects:
        await expect(page.locator("#objects tbody tr")).to_have_count(len(objects))
    await expect(page.locator("#job-status")).to_have_text("done")
    await expect(page.locator("#timings")).to_contain_text("Inference")
    await screenshots(page, "job")

    await page.click("#delete-job")
    await page.click("#confirm-delete")
    await expect(page.locator("#deleted")).to_be_visible()
    assert (await api.get(f"/v1/jobs/{job['id']}")).status_code == 404


async def test_people_and_nodes_pages_render_and_are_screenshotted(signed_in: Page):
    """Both pages render (and are screenshotted); tests/ui/test_people_and_nodes.py drives them."""
    page = signed_in
    await page.click('.tabs a[data-page="people"]')
    await expect(page.locator("#create-person")).to_be_visible()
    await screenshots(page, "people")
    await page.click('.tabs a[data-page="nodes"]')
    await expect(page.locator("#register-node")).to_be_visible()
    await screenshots(page, "nodes")


async def finished_job(api: httpx.AsyncClient, image: tuple[str, bytes, str], tasks: str) -> dict:  # type: ignore[type-arg]
    """Upload, then poll until the job ends: OCR on a busy 2-core machine can take longer
    than ?wait= allows (LOOKOUT_API__MAX_WAIT_S)."""
    response = await api.post("/v1/images", files={"image": image}, data={"tasks": tasks})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in 180 s")


async def test_job_page_lists_the_text_in_reading_order_and_the_plates(
    signed_in: Page, api: httpx.AsyncClient
):
    page = signed_in
    job = await finished_job(api, ("page.png", PAGE.read_bytes(), "image/png"), "text")
    assert job["text"].startswith("Region-based segmentation\n")
    await page.goto(f"/#/jobs/{job['id']}")
    await expect(page.locator("#full-text")).to_have_text(job["text"])
    await expect(page.locator("#text-regions tbody tr")).to_have_count(len(job["detections"]))
    await expect(page.locator("#text-regions tbody tr").first).to_contain_text(
        "Region-based segmentation"
    )
    # Only what the job asked for: no faces, objects or QR codes it never looked for.
    await expect(page.locator("#text-section")).to_be_visible()
    for section in ("#faces-section", "#objects-section", "#qr-section", "#plates-section"):
        await expect(page.locator(section)).to_have_count(0)
    await screenshots(page, "job-text")

    plate_job = await finished_job(
        api, ("dog.jpg", dog_with_plate_jpeg(SHARED_IMAGES), "image/jpeg"), "objects,plates"
    )
    await page.goto(f"/#/jobs/{plate_job['id']}")
    await expect(page.locator("#plates tbody tr")).to_have_count(1)
    await expect(page.locator("#plates tbody tr").first).to_contain_text(PLATE_READ)
    await expect(page.locator("#objects-section")).to_be_visible()
    for section in ("#faces-section", "#qr-section", "#text-section"):
        await expect(page.locator(section)).to_have_count(0)
    await screenshots(page, "job-plates")
