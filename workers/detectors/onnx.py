"""The only module that imports onnxruntime: sessions with explicit threads and providers."""

from pathlib import Path

import onnxruntime as ort


def create_session(
    model_path: Path, *, intra_op_threads: int, providers: list[str] | None = None
) -> ort.InferenceSession:
    """A session pinned to `intra_op_threads`; worker processes × threads should be ≤ cores.

    Spinning is off: idle worker threads would otherwise busy-wait and steal the other
    processes' cores between jobs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    available = ort.get_available_providers()
    # Default: CUDA where this onnxruntime build has it (onnxruntime-gpu, Dockerfile.worker's GPU
    # variant), else CPU. The CPU package never lists CUDA, so CPU machines are unaffected.
    wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    return ort.InferenceSession(
        str(model_path), sess_options=options, providers=chosen or ["CPUExecutionProvider"]
    )
