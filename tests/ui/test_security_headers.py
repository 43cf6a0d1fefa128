"""The dashboard, the API and job images carry security headers, and the dashboard works under
its own Content-Security-Policy (every page test fails on a CSP violation: tests/ui/browser.py).
"""

import httpx
from playwright.async_api import Browser, Page, expect

from tests.conftest import shared_image
from tests.ui.browser import collect_csp_violations

# A PNG whose bytes go on with an HTML page: a browser that sniffed it would run the script.
POLYGLOT = shared_image("scenes/t1.jpg")


def test_every_answer_has_the_security_headers(lookout_server: str, ui_key: str):
    with httpx.Client(base_url=lookout_server, headers={"X-API-Key": ui_key}) as http:
        for path in ("/", "/index.html", "/js/main.js", "/v1/jobs", "/docs", "/nope"):
            response = http.get(path)
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["referrer-policy"] == "no-referrer", path
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
        dashboard_csp = http.get("/").headers["content-security-policy"]
        assert "script-src 'self'" in dashboard_csp and "unsafe-inline" not in dashboard_csp


def test_a_job_image_is_served_as_what_it_is_never_sniffed(lookout_server: str, ui_key: str):
    html = b"<html><script>alert(document.cookie)</script></html>"
    with httpx.Client(base_url=lookout_server, headers={"X-API-Key": ui_key}, timeout=60) as http:
        job = http.post(
            "/v1/images", files={"image": ("x.html", POLYGLOT + html, "text/html")}
        ).json()
        image = http.get(job["links"]["image"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"  # what the bytes are, not the claim
    assert image.headers["x-content-type-options"] == "nosniff"


async def test_the_policy_is_enforced_and_violations_are_seen(
    browser: Browser, lookout_server: str
):
    """The control for the page fixture's check: an inline script is refused and reported."""
    context = await browser.new_context(base_url=lookout_server)
    page: Page = await context.new_page()
    violations = collect_csp_violations(page)
    await page.goto("/")
    await page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.injected = true'; document.body.append(s); }"
    )
    await expect(page.locator("#login")).to_be_visible()  # the page itself runs
    assert await page.evaluate("window.injected === undefined")
    await context.close()
    assert any("script-src" in v for v in violations), violations
