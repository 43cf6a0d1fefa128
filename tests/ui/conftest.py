from tests.ui.browser import api, browser, chromium, lookout_server, page, signed_in, ui_key

__all__ = ["api", "browser", "chromium", "lookout_server", "page", "signed_in", "ui_key"]
