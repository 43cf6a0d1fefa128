"""/docs and /redoc work offline: Chromium with every host but Lookout's blocked still renders
the API's routes (the Swagger UI and Redoc assets are served by the API itself)."""

from urllib.parse import urlsplit

from playwright.async_api import Browser, Route, expect

from tests.ui.browser import EXPECT_TIMEOUT_MS


async def test_docs_and_redoc_render_the_routes_with_every_other_host_blocked(
    browser: Browser, lookout_server: str
):
    own = urlsplit(lookout_server).netloc
    context = await browser.new_context(base_url=lookout_server)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    blocked: list[str] = []

    async def only_lookout(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_lookout)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto("/docs")
        images = page.locator(".opblock-summary-path", has_text="/v1/images").first
        await expect(images).to_be_visible()
        await expect(page.locator(".opblock-summary-path", has_text="/v1/identify")).to_be_visible()
        await expect(page.locator(".errors-wrapper")).to_have_count(0)

        await page.goto("/redoc")
        await expect(page.get_by_text("/v1/images").first).to_be_attached()
    finally:
        await context.close()
    assert blocked == [], f"the docs asked other hosts: {blocked}"
    assert errors == []
