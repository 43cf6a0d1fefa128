"""SecurityHeaders on a plain Starlette app: added where missing, a response's own kept."""

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.headers import DASHBOARD_CSP, DOCS_CSP, SECURITY_HEADERS, SecurityHeaders


def _app() -> Starlette:
    async def plain(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hi")

    async def framable(request):  # type: ignore[no-untyped-def]
        own = {"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src *"}
        return PlainTextResponse("hi", headers=own)

    app = Starlette(routes=[Route("/plain", plain), Route("/own", framable), Route("/docs", plain)])
    app.add_middleware(SecurityHeaders)
    return app


async def test_missing_headers_are_added_and_a_response_keeps_its_own():
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://lookout") as client:
        plain, own, docs = [await client.get(path) for path in ("/plain", "/own", "/docs")]

    for name, value in SECURITY_HEADERS.items():
        assert plain.headers.get_list(name) == [value]
    assert plain.headers.get_list("content-security-policy") == [DASHBOARD_CSP]
    assert docs.headers["content-security-policy"] == DOCS_CSP

    assert own.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert own.headers.get_list("content-security-policy") == ["default-src *"]
    assert own.headers["x-content-type-options"] == "nosniff"
    assert own.text == "hi" and own.headers["content-length"] == "2"
