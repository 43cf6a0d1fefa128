"""`lookout worker` start-up: a missing model is one clear error and exit code 2."""

import subprocess
import sys
from pathlib import Path


def test_a_worker_without_its_models_exits_2_naming_the_files(tmp_path, settings):
    env = {
        "PATH": "/usr/bin:/bin",
        "LOOKOUT_ENV": "dev",  # no secrets to set up: the model check is what is tested
        "LOOKOUT_DATA_DIR": str(tmp_path),
        "LOOKOUT_MODELS__DOWNLOAD": "false",
        "LOOKOUT_REDIS__URL": settings.redis.url,
        "LOOKOUT_DATABASE__URL": settings.database.url,
    }
    lookout = Path(sys.executable).parent / "lookout"
    worker = subprocess.run(
        [lookout, "worker", "--processes", "1", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 2
    assert "lookout worker: model files 'det_500m.onnx', 'w600k_mbf.onnx' not found" in (
        worker.stderr
    )
    assert "Traceback" not in worker.stderr
