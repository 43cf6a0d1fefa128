"""The Nodes page with a key that cannot manage nodes: no Register form it could not use."""

from playwright.async_api import Page, expect

from app.security import Scope
from tests.ui.browser import sign_in

# Records, from the first document on, whether a Register form was ever in the page, however
# briefly: a form shown until GET /v1/nodes answers 403 is a form the user saw.
WATCH_FOR_REGISTER_FORM = """
window.__registerFormSeen = false;
new MutationObserver(() => {
  if (document.getElementById('register-node')) window.__registerFormSeen = true;
}).observe(document, { childList: true, subtree: true });
"""


async def test_a_key_without_admin_never_sees_the_register_node_form(page: Page, make_key):  # type: ignore[no-untyped-def]
    await page.add_init_script(WATCH_FOR_REGISTER_FORM)
    await sign_in(page, await make_key("viewer", scopes=(Scope.read, Scope.write)))
    await page.goto("/#/nodes")
    await expect(page.locator("#nodes-error")).to_have_text("Managing nodes needs an admin key.")
    await page.reload()  # straight onto the page, with the stored key
    await expect(page.locator("#nodes-error")).to_have_text("Managing nodes needs an admin key.")
    await expect(page.locator("#register-node")).to_have_count(0)
    await expect(page.locator("table#nodes")).to_have_count(0)
    assert await page.evaluate("window.__registerFormSeen") is False


async def test_an_admin_key_sees_the_register_node_form(page: Page, make_key):  # type: ignore[no-untyped-def]
    await sign_in(page, await make_key("admin", scopes=(Scope.admin,)))
    await page.goto("/#/nodes")
    await expect(page.locator("#register-node")).to_be_visible()
    await expect(page.locator("table#nodes")).to_be_visible()
