"""The Jobs page (#/jobs): jobs sent outside the dashboard (curl, nodes) are browsable,
filterable and paged, and each opens its Job page."""

import httpx
from playwright.async_api import Page, expect

from tests.conftest import SHARED_IMAGES
from tests.images import blank
from tests.ui.browser import screenshots

T1 = SHARED_IMAGES / "scenes" / "t1.jpg"
PAGE_SIZE = 20  # js/pages/jobs.js


async def send_frame(api: httpx.AsyncClient, lookout_server: str, node_name: str) -> str:
    node = (await api.post("/v1/nodes", json={"name": node_name})).json()
    async with httpx.AsyncClient(base_url=lookout_server, timeout=30) as http:
        token = await http.post(
            "/v1/nodes/token", json={"node_id": node["id"], "secret": node["secret"]}
        )
        sent = await http.post(
            "/v1/nodes/me/frames",
            content=blank(),
            headers={
                "Authorization": f"Bearer {token.json()['access_token']}",
                "content-type": "image/png",
            },
        )
    assert sent.status_code == 202, sent.text
    return str(sent.json()["id"])


async def test_jobs_sent_with_the_api_are_listed_filtered_and_paged(
    signed_in: Page, api: httpx.AsyncClient, lookout_server: str
):
    page = signed_in
    frame = await send_frame(api, lookout_server, "porch-cam")
    faces = (
        await api.post(
            "/v1/images?wait=30",
            files={"image": ("t1.jpg", T1.read_bytes())},
            data={"tasks": "faces"},
        )
    ).json()
    assert faces["status"] == "done", faces
    codes = []
    for _ in range(PAGE_SIZE + 1):
        sent = await api.post(
            "/v1/images", files={"image": ("b.png", blank(), "image/png")}, data={"tasks": "qr"}
        )
        codes.append(sent.json()["id"])
    total = PAGE_SIZE + 3

    # The list, newest first, one page at a time.
    await page.click('.tabs a[data-page="jobs"]')
    rows = page.locator("#jobs tbody tr")
    await expect(rows).to_have_count(PAGE_SIZE)
    await expect(rows.first).to_have_attribute("data-job-id", codes[-1])
    await page.click("#jobs-more")
    await expect(rows).to_have_count(total)
    await expect(page.locator("#jobs-more")).to_be_hidden()
    await expect(page.locator("#jobs-note")).to_have_text(f"{total} jobs, all shown")
    ids = await rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert ids == [*reversed(codes), faces["id"], frame]  # each once, newest first
    await expect(page.locator(f'#jobs tr[data-job-id="{frame}"] .job-source')).to_have_text(
        "porch-cam"
    )
    await screenshots(page, "jobs")  # and no sideways scrolling on a phone

    # Filters: task, then source, in the hash; the row opens its job, Back restores the list.
    await page.select_option("#job-task-filter", "faces")
    await expect(rows).to_have_count(2)
    await page.select_option("#job-source-filter", "upload")
    await expect(rows).to_have_count(1)
    assert page.url.endswith("#/jobs?task=faces&source=upload")
    row = page.locator(f'#jobs tr[data-job-id="{faces["id"]}"]')
    await expect(row.locator(".job-counts")).to_have_text("face × 6")
    await row.locator(".job-counts").click()  # anywhere on the row, not only its id's link
    await expect(page.locator("#job-status")).to_have_text("done")
    await page.go_back()
    await expect(rows).to_have_count(1)
    await expect(page.locator("#job-source-filter")).to_have_value("upload")

    # One node's frames, from the node named in the list.
    await page.select_option("#job-task-filter", "")
    await page.select_option("#job-source-filter", label="porch-cam")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-job-id", frame)

    await page.select_option("#job-source-filter", "")
    await page.select_option("#job-status-filter", "failed")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#jobs-note")).to_have_text("No job matches these filters.")
