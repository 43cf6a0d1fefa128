"""Settings groups added for the model runtime, and the task list the API accepts."""

from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.jobs.service import parse_tasks
from app.jobs.tasks import DEFAULT_TASKS
from app.settings import Settings


def test_model_settings_come_from_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("LOOKOUT_MODELS_DIR", "/srv/models")
    monkeypatch.setenv("LOOKOUT_MODELS__FACE_PACK", "buffalo_l")
    monkeypatch.setenv("LOOKOUT_MODELS__OBJECT_PACK", "yolox_s")
    monkeypatch.setenv(
        "LOOKOUT_MODELS__PROVIDERS", '["CUDAExecutionProvider","CPUExecutionProvider"]'
    )
    monkeypatch.setenv("LOOKOUT_WORKER__BATCH_WAIT_MS", "20")
    monkeypatch.setenv("LOOKOUT_OBJECTS__CLASSES", '["person","car"]')
    settings = Settings(_env_file=None)
    assert settings.models_dir == Path("/srv/models")
    assert (settings.models.face_pack, settings.models.object_pack) == ("buffalo_l", "yolox_s")
    assert settings.models.providers[0] == "CUDAExecutionProvider"
    assert settings.worker.batch_wait_ms == 20
    assert settings.objects.classes == ["person", "car"]
    assert settings.models_cache_dir == settings.data_dir / "models"


def test_tasks_are_faces_objects_qr_text_and_plates():
    assert parse_tasks("qr, faces,objects,qr") == ("qr", "faces", "objects")
    assert parse_tasks("text,plates") == ("text", "plates")
    # identify labels faces: it brings `faces` along, unless the image is a face crop already.
    assert parse_tasks("identify") == ("faces", "identify")
    assert parse_tasks("face_crop,identify") == ("face_crop", "identify")
    assert parse_tasks(None) == parse_tasks(" ") == DEFAULT_TASKS == ("faces",)
    with pytest.raises(InvalidInput, match=r"unknown task.*choose from .*text, plates"):
        parse_tasks("faces,ocr")
