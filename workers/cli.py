"""The worker side of the `lookout` command: `lookout worker`, `lookout models`, and the model
check `lookout up` runs before it starts anything.

app/cli names these functions as "workers.cli:function" and loads them by that name when such
a command runs (as a console-script entry point would): no module of app/ imports workers/.
"""

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.settings import Settings
from workers import models

if TYPE_CHECKING:
    from workers.detectors.face import Embedder


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


def run_reembed(settings: Settings, args: argparse.Namespace) -> int:
    """`lookout gallery reembed --model NEW [--drop-old] [--batch N]`."""
    import asyncio

    from app.embedders import embedder_dims

    if args.model not in embedder_dims():
        print(
            f"lookout: no embedding model named {args.model!r} "
            f"(known: {', '.join(sorted(embedder_dims()))})",
            file=sys.stderr,
        )
        return 1
    if settings.database.url is None or settings.redis.url is None:
        print(
            "lookout: LOOKOUT_DATABASE__URL and LOOKOUT_REDIS__URL are not set and no `lookout "
            "up` is running on this data dir (LOOKOUT_DATA_DIR); start one, or set them",
            file=sys.stderr,
        )
        return 1
    from workers.reembed import load_embedder

    try:
        embedder = load_embedder(settings, args.model)
    except models.ModelError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(
        reembed_command(settings, embedder, drop_old=args.drop_old, batch=args.batch)
    )


async def reembed_command(
    settings: Settings, embedder: "Embedder", *, drop_old: bool, batch: int
) -> int:
    from app.db import close_redis, create_engine, create_redis, create_sessionmaker
    from workers.reembed import face_pack_of, run_reembed

    model = embedder.spec.model
    engine = create_engine(settings.database, "worker")
    redis = create_redis(settings.redis)
    try:
        outcome = await run_reembed(
            settings,
            create_sessionmaker(engine),
            redis,
            embedder,
            drop_old=drop_old,
            batch=max(1, batch),
        )
    finally:
        await close_redis(redis, redis)
        await engine.dispose()
    print(f"{outcome.embedded} face(s) embedded with {model} by this run")
    if outcome.undecodable:
        print(
            f"{outcome.undecodable} stored crop(s) would not decode; those faces keep their model"
        )
    if outcome.switched:
        print(
            f"dropped {outcome.dropped} face vector(s) of the old model(s): the gallery is on "
            f"{model} alone"
        )
    else:
        print(
            f"every enrolled face with a crop now has a {model} vector beside its old one; "
            "identify keeps using the old ones until the workers run the new model. Set "
            f"LOOKOUT_MODELS__FACE_PACK={face_pack_of(model).name} on the workers, restart them, "
            "then run this command again to drop the old vectors."
        )
    return 0
