"""The DeepStack / CodeProject.AI vision API (`/v1/vision/...`), multipart form posts.

envelope.py holds what any DeepStack-style route reuses (error envelope, form parsing, API key
from the form or the header, duration); service.py the logic; routes.py the HTTP surface.
"""
