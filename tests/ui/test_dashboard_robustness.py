"""The dashboard where the happy path ends: a failed job on Live, a read-only key, a gallery
longer than one page. Real API, worker, Redis and Chromium (tests/ui/browser.py)."""

import re
import uuid

import httpx
from playwright.async_api import Page, expect

from app import streams
from app.jobs import events as job_events
from app.security import Scope
from tests.conftest import shared_image
from tests.ui.browser import sign_in


async def test_live_shows_a_failed_job_and_keeps_following_the_firehose(
    signed_in: Page, api: httpx.AsyncClient, redis
):  # type: ignore[no-untyped-def]
    """An `error` event's `at` is RFC 3339 text: read as epoch seconds it threw, the card never
    showed, and a return to Live (replaying the recent events) stopped the page for good. The
    page fixture fails the test on any JavaScript error."""
    page = signed_in
    await page.goto("/#/live")
    job_id = uuid.uuid4()
    reason = "the JPEG data is corrupt (premature end of data segment)"
    await streams.publish_job_events(
        redis,
        job_events.failed(job_id, None, reason, node_id=None, node_name=None, stored_image=True),
        ttl_s=60,
        firehose_maxlen=1000,
    )
    card = page.locator(f'article.card.failed[data-job-id="{job_id}"]')
    await expect(card.locator(".error")).to_have_text(reason)
    await expect(card.locator("time")).to_have_count(1)
    await page.goto("/#/jobs")
    await page.goto("/#/live")  # the recent events again, the failed one among them
    await expect(card).to_be_visible()
    uploaded = await api.post(
        "/v1/images",
        files={"image": ("dog.jpg", shared_image("scenes/dog.jpg"), "image/jpeg")},
        data={"tasks": "qr"},
    )
    assert uploaded.status_code == 202, uploaded.text
    await expect(
        page.locator(f'article.card[data-job-id="{uploaded.json()["id"]}"]')
    ).to_be_visible()


async def test_a_read_only_key_is_offered_no_control_that_would_change_anything(
    page: Page, make_key
):  # type: ignore[no-untyped-def]
    await sign_in(page, await make_key("viewer", scopes=(Scope.read,)))
    await page.goto("/#/upload")
    await expect(page.locator("#read-only-upload")).to_be_visible()
    await expect(page.locator("#dropzone")).to_be_hidden()
    await page.goto("/#/people")
    await expect(page.locator("#create-person")).to_be_hidden()
    await expect(page.locator("#identify-input")).to_be_hidden()
    await page.goto("/#/events")
    await expect(page.locator("#add-webhook")).to_be_hidden()


async def test_a_write_only_key_signs_in_and_uploads(page: Page, make_key):  # type: ignore[no-untyped-def]
    """Signing in proved a key with GET /v1/jobs, which needs `read`: an uploader's key was
    refused. It is proved with /v1/apikeys/me now, and does not follow the firehose."""
    await page.goto("/")
    await page.locator("#login").wait_for(state="visible")
    await page.fill("#login-key", await make_key("uploader", scopes=(Scope.write,)))
    await page.click("#login-submit")
    await page.locator("#login").wait_for(state="hidden")
    await page.goto("/#/upload")
    await expect(page.locator("#dropzone")).to_be_visible()
    await page.set_input_files(
        "#file-input",
        files=[
            {"name": "dog.jpg", "mimeType": "image/jpeg", "buffer": shared_image("scenes/dog.jpg")}
        ],
    )
    await expect(page.locator('.upload[data-file="dog.jpg"]')).to_have_attribute(
        "data-job-id", re.compile(r"^[0-9a-f-]{36}$")
    )
    await expect(page.locator("#login")).to_be_hidden()  # never asked for another key


async def test_the_people_page_lists_everyone_past_the_first_page(
    signed_in: Page, api: httpx.AsyncClient
):
    """GET /v1/people answers 20 a page; the page showed those 20 and no more."""
    names = [f"person {i:02d} {uuid.uuid4().hex[:6]}" for i in range(23)]
    for name in names:
        assert (await api.post("/v1/people", json={"name": name})).status_code == 201
    page = signed_in
    await page.goto("/#/people")
    for name in (names[0], names[-1]):
        await expect(page.locator(f'section.person[data-name="{name}"]')).to_have_count(1)
    assert await page.locator("section.person").count() >= len(names)
