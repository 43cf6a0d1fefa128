"""The DeepStack / CodeProject.AI vision API (`/v1/vision/...`), multipart form posts.

Like every surface in app/compat/, an HTTP adapter over Lookout's own services: images run as
ordinary jobs through the worker pool (listed in /v1/jobs, published on the firehose), faces
live in the people gallery, callers are Lookout API keys. Nothing here detects, matches or
stores anything on its own.

envelope.py holds what any DeepStack-style route reuses (error envelope, form parsing, API key
from the form or the header, duration); service.py the logic; routes.py the HTTP surface.
"""
