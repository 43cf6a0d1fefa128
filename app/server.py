"""How the API process holds its connections: uvicorn with a request-header deadline.

uvicorn times out idle keep-alive connections but not a client that sends its request line and
headers a byte at a time (slowloris): such a connection is held for as long as the client
likes. Here every connection must deliver a complete request head within `header_timeout_s` of
connecting (or of its previous response), or it is closed. Request bodies have their own
deadline between reads (app/limits.BodyReadTimeout). `lookout api` runs uvicorn with this
protocol; gunicorn runs it through `LookoutUvicornWorker` (deploy/gunicorn.conf.py). nginx, when
in front, applies its own client_header_timeout / client_body_timeout (nginx/).

The protocol is uvicorn's httptools one (a C parser), not its pure-Python h11 one, whose parsing
showed in every upload's profile (bench/RESULTS.md, the hot path).

WebSocket messages go out uncompressed: permessage-deflate compresses each message once per
socket (every socket keeps its own zlib context), 40% of the API's CPU for each event delivered
to a firehose subscriber (37-42 µs with it, 22-25 without, 200 subscribers; bench/RESULTS.md).
Events are a few hundred bytes of JSON to clients on the same network; a client that offers the
extension is answered without it, which every WebSocket client accepts (RFC 6455 §9.1).
"""

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from app.settings import get_settings

log = structlog.get_logger()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a connection whose request head is late is closed.

    `cycle` is the protocol's current request: a new one is made once a request head is
    complete, so an unchanged cycle at the deadline means no head arrived in time."""

    header_timeout_s: float = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        waiting_after = self.cycle  # a new request head replaces it
        self._header_deadline = self.loop.call_later(
            self.header_timeout_s, self._header_deadline_passed, waiting_after
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self, waiting_after: Any) -> None:
        self._header_deadline = None
        if self.cycle is not waiting_after or self.transport.is_closing():
            return  # a request head arrived in time
        if self.transport.get_protocol() is not self:
            return  # upgraded to a WebSocket: no longer ours
        log.info("slow_client_closed", client=str(self.client), waited_s=self.header_timeout_s)
        self.transport.close()


def server_options(header_timeout_s: float) -> dict[str, Any]:
    """uvicorn's options for the API, the same under `lookout api` and under gunicorn."""
    return {"http": protocol_class(header_timeout_s), "ws_per_message_deflate": False}


def protocol_class(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    return type(
        "LookoutHttpProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )


class LookoutUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker with the header deadline from LOOKOUT_API__HEADER_TIMEOUT_S."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            **server_options(get_settings().api.header_timeout_s),
        }
        super().__init__(*args, **kwargs)
