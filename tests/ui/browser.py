"""Fixtures for the dashboard tests: a real API + worker on loopback (against the session's
Postgres and Redis), Debian's chromium driven by Playwright, a signed-in page, screenshots.

Imported by tests/ui/conftest.py.
"""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.e2e.processes import lookout_env, start_api, start_worker, stopping

CHROMIUM = Path(os.environ.get("LOOKOUT_TEST_CHROMIUM", "/usr/bin/chromium"))
# The closed network refuses Chromium's background connections: ask for none.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
OUTPUT_DIR = Path(__file__).resolve().parent / "output"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EXPECT_TIMEOUT_MS = 30_000  # the worker shares 2 cores with everything else
expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="module")
def lookout_server(servers, models_dir, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`lookout api` + one `lookout worker` as processes; keys are on, as in production."""
    data_dir = tmp_path_factory.mktemp("ui-data")
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=data_dir,
        models_dir=models_dir,
        LOOKOUT_MAINTENANCE__ENABLED="false",
        # No test here kills a worker, and reading a page of text takes seconds on a busy 2-core
        # machine: the fault tests' 3 s job timeout would fail such jobs.
        LOOKOUT_WORKER__JOB_TIMEOUT_S="60",
    )
    log_dir = data_dir / "logs"
    api, base_url = start_api(env, log_dir)
    worker = start_worker(env, log_dir, "worker")
    with stopping(worker, api):
        yield base_url


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (scripts/ensure-browser.sh)")
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def ui_key(make_key) -> str:  # type: ignore[no-untyped-def]
    return str(await make_key("ui-admin"))


@pytest.fixture
async def page(browser: Browser, lookout_server: str) -> AsyncIterator[Page]:
    """A fresh desktop-sized page (1280×800) in Tokyo time, en-GB. Every test that uses it
    fails on a JavaScript error or on a request to any host but Lookout's (no CDN, no fetch
    from elsewhere)."""
    context = await browser.new_context(
        viewport=DESKTOP, base_url=lookout_server, timezone_id="Asia/Tokyo", locale="en-GB"
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    new_page = await context.new_page()
    requested: list[str] = []
    new_page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    new_page.errors = errors  # type: ignore[attr-defined]
    csp_violations = collect_csp_violations(new_page)
    yield new_page
    await context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
    assert csp_violations == [], f"the page broke its Content-Security-Policy: {csp_violations}"
    own = urlsplit(lookout_server).netloc
    foreign = [url for url in requested if urlsplit(url).netloc not in (own, "")]
    assert foreign == [], f"the page fetched from elsewhere: {foreign}"


def collect_csp_violations(page: Page) -> list[str]:
    """Chromium reports every blocked script, style, image or connection on the console."""
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", on_console)
    return violations


async def sign_in(page: Page, key: str) -> None:
    await page.goto("/")
    await page.locator("#login").wait_for(state="visible")
    await page.fill("#login-key", key)
    await page.click("#login-submit")
    await page.locator("#login").wait_for(state="hidden")
    await page.locator('#stream-state[data-state="open"]').wait_for()


@pytest.fixture
async def signed_in(page: Page, ui_key: str) -> Page:
    await sign_in(page, ui_key)
    return page


@pytest.fixture
async def api(lookout_server: str, ui_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the same server and key, for what the test does outside the UI."""
    async with httpx.AsyncClient(
        base_url=lookout_server, headers={"X-API-Key": ui_key}, timeout=60
    ) as http:
        yield http


async def screenshots(page: Page, name: str) -> list[Path]:
    """Full-page PNGs at 1280×800 and 390×844 under tests/ui/output/; asserts the phone width
    needs no horizontal scrolling."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.wait_for_timeout(150)  # one layout pass after the resize
        if label == "phone":
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name}: the page is {overflow}px wider than a phone"
        path = OUTPUT_DIR / f"{name}-{label}.png"
        await page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    await page.set_viewport_size(DESKTOP)
    return saved
