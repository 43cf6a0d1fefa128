"""The only module that imports onnxruntime: sessions with explicit threads and providers.

Thread counts come from settings: worker processes × intra-op threads should not exceed the
cores (docs/architecture.md: one single-threaded process per core measured fastest). Spinning
is off: idle onnxruntime threads would otherwise busy-wait and steal the other processes' cores.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import structlog

from app.settings import Settings

log = structlog.get_logger()

Tensor = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RuntimeOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RuntimeOptions":
        return cls(
            intra_op_threads=settings.worker.threads,
            inter_op_threads=settings.worker.inter_op_threads,
            providers=tuple(settings.models.providers),
        )


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def choose_providers(wanted: Sequence[str]) -> list[str]:
    """The wanted providers this onnxruntime build has, in order (CUDA where present, a
    provider the build lacks skipped); CPU is the floor."""
    available = set(available_providers())
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def create_session(model_path: Path, options: RuntimeOptions) -> ort.InferenceSession:
    """A session pinned to the configured threads and the first available providers."""
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    chosen = choose_providers(options.providers)
    session = ort.InferenceSession(str(model_path), sess_options=session_options, providers=chosen)
    log.debug("onnx_session", model=model_path.name, providers=session.get_providers())
    return session


class OnnxModel:
    """One single-input model: its input name and shape, and a typed `run`."""

    def __init__(self, model_path: Path, options: RuntimeOptions) -> None:
        self.path = model_path
        self.session = create_session(model_path, options)
        model_input = self.session.get_inputs()[0]
        self.input_name: str = model_input.name
        # Dimensions are ints when fixed, strings or None when dynamic.
        self.input_shape: tuple[int | str | None, ...] = tuple(model_input.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.output_shapes: list[tuple[int | str | None, ...]] = [
            tuple(o.shape) for o in self.session.get_outputs()
        ]

    @property
    def metadata(self) -> dict[str, str]:
        """The model's custom metadata (e.g. a PP-OCR recogniser's character dictionary)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the graph (1 for most exports), or None when dynamic."""
        batch = self.input_shape[0] if self.input_shape else None
        return batch if isinstance(batch, int) else None

    def run(self, batch: Tensor) -> list[Tensor]:
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def run_batched(self, batch: Tensor) -> Tensor:
        """First output for every row of `batch`: one call, or one per row if the graph's
        batch is fixed at 1."""
        if len(batch) == 0:
            raise ValueError("empty batch")
        if self.fixed_batch == 1 and len(batch) > 1:
            return np.concatenate([self.run(batch[i : i + 1])[0] for i in range(len(batch))])
        return self.run(batch)[0]

    def warm_up(self, shape: Sequence[int]) -> None:
        """One run on zeros, so that the first job does not pay for lazy allocations."""
        self.run(np.zeros(tuple(shape), dtype=np.float32))
