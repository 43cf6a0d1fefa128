"""The Nodes page with a key that cannot manage nodes: no Register form it could not use."""

from playwright.async_api import Page, expect

from app.security import Scope
from tests.ui.browser import sign_in


async def test_a_key_without_admin_sees_no_register_node_form(page: Page, make_key):  # type: ignore[no-untyped-def]
    await sign_in(page, await make_key("viewer", scopes=(Scope.read, Scope.write)))
    await page.goto("/#/nodes")
    await expect(page.locator("#nodes-error")).to_have_text("Managing nodes needs an admin key.")
    await expect(page.locator("#register-node")).to_have_count(0)
    await expect(page.locator("table#nodes")).to_have_count(0)
