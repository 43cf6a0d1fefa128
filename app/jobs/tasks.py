"""The tasks a job may ask for: the one list the service checks against and the schemas document.

Its own module, free of the service's imports: the schemas of jobs, nodes and outbound events
document the names as an enum, and the service imports those schemas.
"""

import re
from typing import Annotated

from pydantic import WithJsonSchema

# The detectors behind each live in workers/detectors/registry.py; `identify` has none: it labels
# the faces task's detections from the gallery (workers/gallery.py) and so always comes with
# `faces` (or `face_crop`). `text`: text regions and the full text (OCR); `plates`: licence plates
# read inside the vehicles the object detector finds. `face_crop`: the image is one face, already
# cropped: no detection, the whole image embedded (CompreFace's `detect_faces=false`).
TASKS = ("faces", "objects", "qr", "text", "plates", "identify", "face_crop")
# The tasks whose detections are faces: identify needs one of them (faces, when none is asked).
FACE_SOURCES = ("faces", "face_crop")
DEFAULT_TASKS = ("faces",)

# A task name, documented as an enum of TASKS (the service answers an unknown name with the list
# to choose from, so the type itself stays a plain string).
TaskName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(TASKS)})]


def tasks_pattern() -> str:
    """A regex for a comma-separated list of TASKS (OpenAPI documents the names from it)."""
    name = "(?:" + "|".join(re.escape(task) for task in TASKS) + ")"
    return rf"^\s*{name}\s*(?:,\s*{name}\s*)*$"
