"""The registry loads one detector per API task, from the configured packs, or fails clearly."""

import onnxruntime as ort
import pytest

from app.jobs.service import TASKS
from workers.detectors.onnx import OnnxModel, RuntimeOptions
from workers.detectors.registry import build_detectors
from workers.models import ModelNotFound
from workers.pipeline import AFTER_INFERENCE_TASKS


def test_the_registry_has_exactly_the_tasks_the_api_accepts(detectors):
    assert (
        set(detectors)
        == set(TASKS) - AFTER_INFERENCE_TASKS
        == {"faces", "objects", "qr", "text", "plates", "face_crop"}
    )
    assert all(detector.task == task for task, detector in detectors.items())


def test_the_test_pack_is_selected_by_settings(detectors, settings):
    assert settings.models.face_pack == "scrfd_mobilefacenet"
    assert detectors["faces"].embedder.spec.model == "mobilefacenet"
    assert detectors["objects"].config.input_size_px == 416


def test_a_missing_model_stops_the_worker_at_start_naming_the_file(settings, tmp_path):
    offline = settings.model_copy(
        update={
            "models_dir": tmp_path / "empty",
            "data_dir": tmp_path,
            "models": settings.models.model_copy(update={"face_pack": "buffalo_sc"}),
        }
    )
    with pytest.raises(
        ModelNotFound, match=r"'det_500m\.onnx', 'w600k_mbf\.onnx' not found"
    ) as caught:
        build_detectors(offline)
    assert str(tmp_path / "empty") in str(caught.value)
    assert "LOOKOUT_MODELS_DIR" in str(caught.value)


def test_threads_and_providers_come_from_the_options(settings):
    path = settings.models_dir / "yolox_nano.onnx"
    model = OnnxModel(path, RuntimeOptions(intra_op_threads=2, inter_op_threads=1))
    session_options = model.session.get_session_options()
    assert session_options.intra_op_num_threads == 2
    assert session_options.inter_op_num_threads == 1
    assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # CUDA where present; on a machine without it the session falls back to CPU, not an error.
    cuda_first = OnnxModel(
        path, RuntimeOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    )
    expected = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in (ort.get_available_providers())
        else "CPUExecutionProvider"
    )
    assert cuda_first.session.get_providers()[0] == expected


def test_models_have_fixed_input_sizes(detectors):
    objects = detectors["objects"]
    assert objects.model.input_shape == (1, 3, 416, 416)
    assert objects.model.fixed_batch == 1
    assert detectors["faces"].embedder.model.fixed_batch is None  # dynamic: one call per batch
