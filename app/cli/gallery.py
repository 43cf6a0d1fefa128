"""`lookout gallery reindex`: rebuild the gallery's index from the database directly.

(`lookout gallery reembed` needs an embedding model, so it lives in workers/cli.py.)
"""

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from app.cli.common import require
from app.db import create_engine
from app.embedders import embedder_dims
from app.gallery.index import Rebuild, gallery_models, rebuild_index
from app.settings import Settings


def run_gallery(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(reindex(settings, args.model or []))


async def reindex(settings: Settings, models: list[str]) -> int:
    """Rebuild each model's index (or the named ones) with the parameters for its size."""
    require(settings.database.url, "LOOKOUT_DATABASE__URL")
    unknown = [m for m in models if m not in embedder_dims()]
    if unknown:
        print(
            f"lookout: no embedding model named {', '.join(unknown)} "
            f"(known: {', '.join(sorted(embedder_dims()))})",
            file=sys.stderr,
        )
        return 1
    engine = create_engine(settings.database)
    try:
        async with engine.connect() as connection, engine.connect() as watching:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            watcher = await watching.execution_options(isolation_level="AUTOCOMMIT")
            counts = await gallery_models(autocommit)
            for model in models or list(counts):
                rebuilt = await _with_progress(
                    watcher,
                    counts.get(model, 0),
                    rebuild_index(
                        autocommit,
                        model,
                        memory_mb=settings.gallery.index_build_memory_mb,
                        workers=settings.gallery.index_build_workers,
                        settings=settings.gallery,
                    ),
                )
                print(_describe(rebuilt, settings.gallery.index_build_memory_mb))
    finally:
        await engine.dispose()
    if not (models or counts):
        print("the gallery is empty: no index to rebuild")
    return 0


async def _with_progress(
    watcher: AsyncConnection, faces: int, rebuild: Coroutine[Any, Any, Rebuild]
) -> Rebuild:
    """Run the rebuild, drawing pgvector's own build progress (tuples done) as a bar."""
    task = asyncio.create_task(rebuild)
    with tqdm(total=faces, unit="face", desc="indexing", disable=faces == 0) as bar:
        while not task.done():
            done = await watcher.scalar(
                text("SELECT max(tuples_done) FROM pg_stat_progress_create_index")
            )
            if done:
                bar.update(max(min(int(done), faces) - bar.n, 0))
            await asyncio.wait([task], timeout=1.0)
        rebuilt = await task
        bar.update(faces - bar.n)
    return rebuilt


def _describe(rebuilt: Rebuild, memory_mb: int) -> str:
    memory = (
        "graph in memory"
        if rebuilt.in_memory
        else f"graph outgrew {memory_mb} MB and spilled to disk: raise "
        "LOOKOUT_GALLERY__INDEX_BUILD_MEMORY_MB (docs/deploy.md) and run it again"
    )
    return (
        f"{rebuilt.model}: {rebuilt.faces:,} faces indexed in {rebuilt.seconds:.1f} s "
        f"(m={rebuilt.parameters.m}, ef_construction={rebuilt.parameters.ef_construction}, "
        f"{rebuilt.index_bytes / 2**20:.1f} MB, {memory})"
    )
