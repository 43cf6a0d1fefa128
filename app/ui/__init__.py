"""The operator dashboard: hand-written ES modules and CSS in static/, served at `/`.

No build step and no external fetches: the files here are exactly what the browser loads.
Mounted after every API route, so /v1, /health, /metrics, /docs and /openapi.json win.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_ui(app: FastAPI) -> None:
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
