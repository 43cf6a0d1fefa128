"""Model files: resolved from LOOKOUT_MODELS_DIR, then the cache dir under data_dir.

A missing model is a startup error that names the file and where to put it.
"""

from pathlib import Path

from app.settings import Settings


class ModelNotFound(RuntimeError):
    pass


def model_search_dirs(settings: Settings) -> list[Path]:
    dirs = [settings.models_dir] if settings.models_dir is not None else []
    return [*dirs, settings.data_dir / "models"]


def resolve_model(settings: Settings, file_name: str) -> Path:
    searched = model_search_dirs(settings)
    for directory in searched:
        candidate = directory / file_name
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in searched)
    raise ModelNotFound(
        f"model file {file_name!r} not found (looked in {where}); "
        f"put it in one of those or set LOOKOUT_MODELS_DIR to the folder that has it"
    )
