"""/docs (Swagger UI) and /redoc served from this server: no CDN, so they work offline.

The assets come from the `fastapi-offline` wheel (Swagger UI 5, Redoc 2, MIT/Apache-2.0); only
its static files are used, served under /docs-assets. FastAPI's own pages load them from
jsDelivr, which leaves /docs blank on a machine without internet.

The example bodies of app/openapi_examples.py (on the models and in the routes' `responses`)
are served as they are written there. Left to themselves, they lose on the way: pydantic sorts
the keys of every example it puts in a schema (a job's `detections` before its `id`), and
FastAPI drops every null member of the document, examples included (a queued job without its
`started_at`, an event without its required `node`).
"""

import copy
import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app import openapi_examples as examples

ASSETS_URL = "/docs-assets"


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def mount_docs(app: FastAPI) -> None:
    """Call on an app created with docs_url=None and redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    app.openapi = _with_authored_examples(app, app.openapi)  # type: ignore[method-assign]
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _with_authored_examples(
    app: FastAPI, generate: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """FastAPI's app.openapi (which caches the document in app.openapi_schema), with the
    examples of the document it makes put back as app/openapi_examples.py writes them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            restore_examples(generate(), examples.authored())
        return generate()

    return openapi


def restore_examples(document: dict[str, Any], authored: list[Any]) -> None:
    """Replace, in place, each example of the document that is one of `authored` less its nulls
    and key order by that authored example."""
    originals = {_form(example): example for example in authored}

    def restored(example: Any) -> Any:
        # A copy: the document must not share (and let a caller change) the module's values.
        return copy.deepcopy(originals.get(_form(example), example))

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        if isinstance(node.get("examples"), list):  # a schema's
            node["examples"] = [restored(e) for e in node["examples"]]
        if "example" in node:  # a media type's or a parameter's
            node["example"] = restored(node["example"])
        for key, value in node.items():
            if key not in ("example", "examples"):
                visit(value)

    visit(document)


def _form(value: Any) -> str:
    """What FastAPI leaves of an example (it drops null members and pydantic sorts keys)."""
    return json.dumps(_without_nulls(value), sort_keys=True, default=str)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value
