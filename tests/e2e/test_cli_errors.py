"""The CLI against a real API: a refusal is final and said in one line, never a traceback."""

import subprocess
import sys
import time
import uuid

import pytest

from tests.e2e.processes import REPO, lookout_env, start_api, stopping
from tests.images import blank, write_video


@pytest.mark.timeout(120)
def test_node_run_with_a_wrong_secret_exits_non_zero_with_the_reason(servers, models_dir, tmp_path):
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=tmp_path / "data",
        models_dir=models_dir,
    )
    api, base_url = start_api(env, tmp_path / "logs")
    secret_file = tmp_path / "secret"
    secret_file.write_text("lkn_" + "x" * 40)
    import cv2
    import numpy as np

    frame = cv2.imdecode(np.frombuffer(blank(320, 240, ".jpg"), np.uint8), cv2.IMREAD_COLOR)
    video = write_video(tmp_path / "cam.avi", [frame] * 5, fps=5)
    with stopping(api):
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "node",
                "run",
                "--source",
                str(video),
                "--loop",
                "--server",
                base_url,
                "--node-id",
                str(uuid.uuid4()),
                "--secret-file",
                str(secret_file),
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30  # no reconnect loop until killed
    assert "refused this node's credentials (401)" in result.stderr
    assert "Traceback" not in result.stderr
