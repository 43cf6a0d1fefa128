"""The worker side of the `lookout` command: `lookout worker`, `lookout models`, and the model
check `lookout up` runs before it starts anything.

app/cli names these functions as "workers.cli:function" and loads them by that name when such
a command runs (as a console-script entry point would): no module of app/ imports workers/.
"""

import argparse
import sys
from collections.abc import Sequence

from app.settings import Settings
from workers import models


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: onnxruntime and the detectors load only in the process that runs them.
    from workers.pool import serve

    return serve(
        settings,
        processes=args.processes or settings.worker.processes,
        burst=args.burst,
        index=args.index,
    )


def run_models(settings: Settings, args: argparse.Namespace) -> int:
    return models_command(settings, args.action, args.packs)


def models_command(settings: Settings, action: str, pack_names: Sequence[str]) -> int:
    """`lookout models list|pull|verify [PACK …]`; exit 1 when a file is missing or wrong."""
    try:
        if action == "list":
            lines = models.list_packs(settings)
            good = True
        elif action == "pull":
            lines = models.pull_packs(settings, models.packs_named(settings, pack_names))
            good = True
        else:
            good, lines = models.verify_packs(settings, models.packs_named(settings, pack_names))
    except models.ModelError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0 if good else 1


def models_ready(settings: Settings) -> bool:
    """Every configured pack's files are there (or fetched); if not, one clear message."""
    try:
        for pack in models.configured_packs(settings):
            models.resolve_pack(settings, pack)
    except models.ModelError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return False
    return True
