"""Security headers on every HTTP response: the dashboard, the API, the docs and the images.

The dashboard loads only its own files (app/ui: ES modules and one stylesheet, no inline script
or style), draws job images from blob: URLs and talks to the API over fetch and WebSocket on
its own origin, so its policy allows exactly that. /docs and /redoc are FastAPI's pages, which
load Swagger UI / ReDoc from jsDelivr and start them with an inline script: they get a policy of
their own. No page may be framed (clickjacking), no response is MIME-sniffed (an uploaded PNG
with HTML appended stays an image), and no URL leaks through Referer.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DASHBOARD_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",  # CSP 3: 'self' covers ws(s):// of the same host
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        f"script-src 'self' 'unsafe-inline' {DOCS_CDN}",
        f"style-src 'self' 'unsafe-inline' {DOCS_CDN} https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        # The pages' assets are served here (app/docs_pages.py); Redoc's footer logo from its
        # CDN is not wanted offline, so images come from this server only.
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
DOCS_PATHS = ("/docs", "/redoc")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _raw(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), value.encode("latin-1")


_SECURITY_RAW = [_raw(name, value) for name, value in SECURITY_HEADERS.items()]
_DASHBOARD_CSP_RAW = _raw("Content-Security-Policy", DASHBOARD_CSP)
_DOCS_CSP_RAW = _raw("Content-Security-Policy", DOCS_CSP)


class SecurityHeaders:
    """Adds the headers above to every HTTP response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = _DOCS_CSP_RAW if path.startswith(DOCS_PATHS) else _DASHBOARD_CSP_RAW

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The raw list, its names read once: MutableHeaders scanned every header for
                # each name it looked up or set (8 µs of CPU a response against 3, alone).
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in (*_SECURITY_RAW, csp) if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
