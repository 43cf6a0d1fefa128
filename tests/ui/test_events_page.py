"""Events page (issue 17) in real Chromium: add a webhook, see its deliveries and MQTT status,
against a real API, worker, `lookout events`, mosquitto and HTTP receiver."""

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.app.events_out.broker import Mosquitto
from tests.app.events_out.receiver import Receiver
from tests.conftest import SHARED_IMAGES
from tests.e2e.processes import lookout_env, spawn, start_api, start_worker, stopping
from tests.ui.browser import screenshots

OBAMA = SHARED_IMAGES / "faces" / "train" / "obama" / "obama.jpg"


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def lookout_server(servers, models_dir, tmp_path_factory, mosquitto):
    """As tests/ui/browser.py's, plus `lookout events` (webhooks to loopback allowed, MQTT)."""
    data_dir = tmp_path_factory.mktemp("ui-events-data")
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=data_dir,
        models_dir=models_dir,
        LOOKOUT_MAINTENANCE__ENABLED="false",
        LOOKOUT_EVENTS__ALLOWED_NETWORKS='["127.0.0.1/32"]',
        LOOKOUT_EVENTS__RETRY_BASE_S="0.2",
        LOOKOUT_EVENTS__RETRY_MAX_BACKOFF_S="0.5",
        LOOKOUT_EVENTS__RETRY_WINDOW_S="2",
        LOOKOUT_EVENTS__POLL_INTERVAL_S="0.2",
        LOOKOUT_MQTT__URL=mosquitto.url,
    )
    log_dir = data_dir / "logs"
    api, base_url = start_api(env, log_dir)
    worker = start_worker(env, log_dir, "worker")
    events = spawn("events", ["events"], env, log_dir)
    with stopping(events, worker, api):
        yield base_url


async def test_add_a_webhook_then_see_its_deliveries_and_the_mqtt_status(
    signed_in: Page, api: httpx.AsyncClient
):
    receiver = Receiver(status=500)  # answers 500: retried, then dead-lettered
    receiver.start()
    try:
        page = signed_in
        await page.click('.tabs a[data-page="events"]')
        await expect(page.locator('#mqtt-state[data-state="connected"]')).to_be_visible()
        # Connected, no error: the section has its lines and nothing where the error would be.
        await expect(page.locator("#mqtt-status .error")).to_have_count(0)
        await expect(page.locator("#mqtt-status")).not_to_contain_text("null")

        # A private address is refused with the API's reason.
        await page.fill("#webhook-url", "http://10.0.0.7/hook")
        await page.check('#webhook-types input[value="job.done"]')
        await page.click('#add-webhook button[type="submit"]')
        await expect(page.locator("#webhook-error")).to_contain_text("private")

        await page.fill("#webhook-url", receiver.url)
        await page.click('#add-webhook button[type="submit"]')
        await expect(page.locator("#webhook-secret")).to_contain_text("whsec_")
        row = page.locator("#webhooks tr[data-webhook-id]")
        await expect(row).to_have_count(1)

        job = await api.post(
            "/v1/images?wait=30", files={"image": ("obama.jpg", OBAMA.read_bytes())}
        )
        assert job.status_code == 200, job.text
        await row.locator(".show-deliveries").click()
        dead = page.locator('#delivery-list tr.delivery[data-event-type="job.done"]')
        await expect(dead).to_have_attribute("data-status", "dead")
        await expect(dead.locator(".delivery-code")).to_have_text("500")
        assert int(await dead.locator(".delivery-attempts").inner_text()) >= 2
        await screenshots(page, "events")

        receiver.status = 204  # the receiver is fixed: redeliver from the page
        await dead.locator(".redeliver").click()
        await expect(dead).to_have_attribute("data-status", "delivered")
        assert any(e["type"] == "job.done" for e in receiver.events())
    finally:
        receiver.stop()
