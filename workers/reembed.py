"""`lookout gallery reembed --model NEW`: move the gallery to another embedding model from the
enrolled faces' stored crops, no photos needed. The database side, and what each step means
for identify, is app/gallery/reembed.py; this runs the new model on the crops.

    lookout gallery reembed --model w600k_r50     # embed; drop the old vectors once the
                                                   # workers run the new model (run it again)
"""

import asyncio
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tqdm import tqdm

from app import streams
from app.commits import commit
from app.gallery import reembed
from app.settings import Settings
from workers.detectors.face import Embedder
from workers.detectors.onnx import OnnxModel, RuntimeOptions
from workers.models import PACKS, FacePack, ModelError, resolve_files


def face_pack_of(model: str) -> FacePack:
    """The face pack whose embedder makes `model` vectors."""
    for pack in PACKS.values():
        if isinstance(pack, FacePack) and pack.embedder_spec.model == model:
            return pack
    known = sorted(p.embedder_spec.model for p in PACKS.values() if isinstance(p, FacePack))
    raise ModelError(f"no face pack has an embedder named {model!r} (known: {', '.join(known)})")


def load_embedder(settings: Settings, model: str) -> Embedder:
    """The new model's embedder alone (its pack's files found, fetched and verified as the
    workers' are)."""
    pack = face_pack_of(model)
    paths = resolve_files(settings, [pack.embedder])
    options = RuntimeOptions.from_settings(settings)
    return Embedder(pack.embedder_spec, OnnxModel(paths[pack.embedder.name], options))


def embed_crops(
    embedder: Embedder, jpegs: list[bytes]
) -> tuple[list[int], npt.NDArray[np.float32]]:
    """(indexes of the crops that decoded, their unit vectors). A crop is the aligned face at
    the old embedder's input size (112 px for every model here); another size is resized:
    the ArcFace alignment template scales with the crop."""
    size = embedder.spec.input_size_px
    decoded: list[npt.NDArray[np.uint8]] = []
    kept: list[int] = []
    for index, jpeg in enumerate(jpegs):
        crop = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if crop is None:
            continue
        if crop.shape[:2] != (size, size):
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        decoded.append(np.asarray(crop, dtype=np.uint8))
        kept.append(index)
    return kept, embedder.embed(decoded)


@dataclass(frozen=True)
class Outcome:
    embedded: int  # twins added by this run
    undecodable: int  # crops that would not decode (left as they are)
    dropped: int  # old faces deleted (0 until the switch)
    switched: bool


async def embed_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    embedder: Embedder,
    *,
    batch: int,
    show_progress: bool = True,
) -> tuple[int, int]:
    """Step 1 until no face is left: (twins added, crops that would not decode). Resumable:
    each batch commits on its own and a face with a twin is never embedded again."""
    model = embedder.spec.model
    async with sessionmaker() as session:
        done = await reembed.progress(session, model)
    added = bad = 0
    skip: set[object] = set()  # undecodable crops, not retried within this run
    with tqdm(
        total=done.old_faces - done.without_crop,
        initial=done.embedded,
        unit="face",
        desc=f"embedding with {model}",
        disable=not show_progress,
    ) as bar:
        while True:
            async with sessionmaker() as session:
                crops = [
                    c
                    for c in await reembed.faces_to_embed(session, model, batch + len(skip))
                    if c.face_id not in skip
                ][:batch]
                if not crops:
                    return added, bad
                kept, vectors = await asyncio.to_thread(
                    embed_crops, embedder, [c.jpeg for c in crops]
                )
                decoded = set(kept)
                for index, crop in enumerate(crops):
                    if index not in decoded:
                        skip.add(crop.face_id)
                        bad += 1
                added += await reembed.add_twins(
                    session, model, [crops[i].face_id for i in kept], vectors
                )
                await commit(session)
            bar.update(len(kept))


async def run_reembed(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    embedder: Embedder,
    *,
    drop_old: bool,
    batch: int,
    show_progress: bool = True,
) -> Outcome:
    """Steps 1-3 (app/gallery/reembed.py). The old vectors are dropped only once every live
    worker embeds with the new model (their heartbeats say which), or when `drop_old` says so
    (workers stopped for the upgrade): until then identify keeps using them."""
    model = embedder.spec.model
    added, bad = await embed_all(sessionmaker, embedder, batch=batch, show_progress=show_progress)
    workers = await streams.live_worker_models(redis)
    switched = bool(workers) and all(m == model for m in workers.values())
    if not (switched or drop_old):
        return Outcome(added, bad, 0, switched=False)
    # Faces enrolled by old-model workers since the first pass: embedded before the drop.
    more, worse = await embed_all(sessionmaker, embedder, batch=batch, show_progress=False)
    async with sessionmaker() as session:
        dropped = await reembed.drop_old_faces(session, model)
        await commit(session)
    return Outcome(added + more, bad + worse, dropped, switched=True)
