"""Clustering of unknown faces (app/gallery/clusters.py): quality on the shared faces, and the
time of a pass over many synthetic unknown faces.

`python -m bench.clusters [SIZE]` (default LOOKOUT_BENCH_CLUSTER_FACES, else 100,000). Starts an embedded Postgres with pgvector
in a temp dir and migrates it (the product's tables and HNSW indexes), then:

1. Quality: every face of ../shared/images/faces (train and test; SCRFD + the MobileFaceNet
   stand-in, labelled by person as in tests/labelled_faces.py) is stored as an unknown face of
   a finished job and one clustering pass runs, with the default settings and with
   core_faces=2. Reported: clusters formed, purity (share of clustered faces that belong to
   their cluster's majority person), people split over several clusters, faces left
   unclustered.
2. Scale: SIZE synthetic 192-d unknown faces (80 % in identities of 20 faces each, a face =
   its identity's unit centre + noise of norm 0.4-0.75, so same-person similarity ≈ 0.64-0.86;
   20 % strangers seen once) are stored the same way and one pass clusters them all, timed.
   Purity and recall (share of identity faces clustered) are reported too.
3. Over those faces: face search (app/gallery/matching.py nearest_past_faces, limit 10) for
   SEARCHES of them, against the exact answer (the 10 most similar faces by cosine at least
   the match threshold, as the API filters them): recall and time a query. And Postgres' CPU
   a face written as a worker writes a job's faces (one job of JOB_FACES faces a transaction:
   its row, detections and embeddings, indexed), measured on its backend; the faces are random,
   unlike any stored (in the probes, such faces cost the most to insert).

Writes the "Clustering" section of bench/RESULTS.md. Figures describe this run on this machine.
"""

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db import create_sessionmaker, migrate
from app.embedded import shared_buffers_mb, start_embedded
from app.gallery import matching
from app.gallery.clusters import cluster_pass
from app.settings import ClusterSettings, DatabaseSettings, ModelSettings, Settings
from app.vectors import calibrated_similarity
from bench.harness import load_average, machine, stack_dir, write_section

DIM = 192
MODEL = "mobilefacenet"
FACES_PER_JOB = 100
INSERT_CHUNK = 5000
IDENTITY_FACES = 20
DEFAULT_SIZE = 100_000
SEARCHES = 200
JOB_FACES = 6  # a job's faces in the write-cost measurement (t1.jpg has 6)
WRITTEN_JOBS = 300
REPO = Path(__file__).resolve().parent.parent


def literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in vector) + "]"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


async def store_faces(engine: AsyncEngine, vectors: np.ndarray, model: str = MODEL) -> list[int]:
    """Each vector as the face of a finished job with no identity: what a pass takes. Returns
    the detection ids, in the order of `vectors`."""
    ids = list(range(1, len(vectors) + 1))
    jobs = [uuid.uuid4() for _ in range(0, len(vectors), FACES_PER_JOB)]
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (id, status, tasks, content_type, width, height, counts, "
                "attempts, created_at, finished_at) SELECT j, 'done', ARRAY['faces'], "
                "'image/jpeg', 640, 480, '{}'::jsonb, 1, now(), now() "
                "FROM unnest(CAST(:jobs AS uuid[])) AS t(j)"
            ),
            {"jobs": jobs},
        )
        for start in range(0, len(vectors), INSERT_CHUNK):
            chunk = ids[start : start + INSERT_CHUNK]
            owners = [jobs[(i - 1) // FACES_PER_JOB] for i in chunk]
            await connection.execute(
                text(
                    "INSERT INTO detections (id, job_id, kind, label, score, box, attributes) "
                    "SELECT i, j, 'face', 'face', 0.9, ARRAY[0, 0, 100, 100]::float8[], "
                    "'{}'::jsonb FROM unnest(CAST(:ids AS int[]), CAST(:jobs AS uuid[])) "
                    "AS t(i, j)"
                ),
                {"ids": chunk, "jobs": owners},
            )
            await connection.execute(
                text(
                    "INSERT INTO face_embeddings (detection_id, job_id, model, dim, embedding) "
                    "SELECT i, j, :model, :dim, v::vector FROM unnest(CAST(:ids AS int[]), "
                    "CAST(:jobs AS uuid[]), CAST(:vectors AS text[])) AS t(i, j, v)"
                ),
                {
                    "ids": chunk,
                    "jobs": owners,
                    "model": model,
                    "dim": DIM,
                    "vectors": [literal(v) for v in vectors[start : start + len(chunk)]],
                },
            )
    # Statistics for the pass's first statement: planned before autovacuum saw the new rows,
    # it nested loops over "empty" tables (a first batch ran for minutes at 100k faces).
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE jobs, detections, face_embeddings"))
    return ids


async def clusters_of(engine: AsyncEngine) -> dict[int, str | None]:
    """detection id → its cluster (person id as text), None when unclustered."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT detection_id, person_id::text FROM unknown_faces")
        )
        return {int(d): p for d, p in rows}


def quality(labels: dict[int, str], placed: dict[int, str | None]) -> dict[str, float]:
    """Clusters formed, purity, people split, faces unclustered; `labels`: face → person."""
    members: dict[str, list[str]] = {}
    for face, cluster in placed.items():
        if cluster is not None:
            members.setdefault(cluster, []).append(labels[face])
    clustered = sum(len(m) for m in members.values())
    majority = sum(Counter(m).most_common(1)[0][1] for m in members.values())
    split = Counter(
        person for m in members.values() for person in set(m) if not person.startswith("~")
    )
    return {
        "clusters": len(members),
        "clustered": clustered,
        "purity": majority / clustered if clustered else 1.0,
        "split_people": sum(1 for n in split.values() if n > 1),
        "unclustered": sum(1 for c in placed.values() if c is None),
    }


async def reset(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE jobs, detections, people CASCADE"))


def shared_faces() -> tuple[np.ndarray, list[str]]:
    """The labelled faces of ../shared/images/faces, embedded by the stand-in."""
    sys.path.insert(0, str(REPO))
    from tests.labelled_faces import labelled_faces
    from workers.detectors.face import FaceDetector
    from workers.detectors.registry import build_detectors

    models_dir = Path(os.environ.get("LOOKOUT_MODELS_DIR", REPO.parent / "shared" / "models"))
    settings = Settings(
        models_dir=models_dir,
        data_dir=REPO / ".lookout" / "bench",
        models=ModelSettings(
            face_pack="scrfd_mobilefacenet", object_pack="yolox_nano", download=False
        ),
    )
    faces = build_detectors(settings)["faces"]
    assert isinstance(faces, FaceDetector)
    labelled = labelled_faces(faces)
    return np.stack([f.embedding for f in labelled]), [f.person for f in labelled]


def synthetic(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    identities = int(size * 0.8) // IDENTITY_FACES
    centres = unit(rng.standard_normal((identities, DIM)))
    owner = np.repeat(np.arange(identities), IDENTITY_FACES)
    noise = unit(rng.standard_normal((len(owner), DIM))) * rng.uniform(0.4, 0.75, (len(owner), 1))
    known = unit(centres[owner] + noise)
    strangers = unit(rng.standard_normal((size - len(owner), DIM)))
    vectors = np.concatenate([known, strangers])
    labels = [f"id{i}" for i in owner] + [f"~stranger{i}" for i in range(len(strangers))]
    order = rng.permutation(size)  # faces arrive mixed, not person by person
    return vectors[order], [labels[i] for i in order]


async def run(database_url: str, size: int) -> dict[str, object]:
    engine = create_async_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    base = Settings(database=DatabaseSettings(url=database_url))
    results: dict[str, object] = {}
    vectors, people = shared_faces()
    for core in (base.clusters.core_faces, 2):
        await reset(engine)
        ids = await store_faces(engine, vectors)
        settings = base.model_copy(
            update={"clusters": base.clusters.model_copy(update={"core_faces": core})}
        )
        await cluster_pass(settings, sessionmaker)
        results[f"shared_core{core}"] = quality(
            dict(zip(ids, people, strict=True)), await clusters_of(engine)
        )
    results["shared_faces"] = len(people)
    results["shared_people"] = len(set(people))

    await reset(engine)
    vectors, people = synthetic(size, np.random.default_rng(size))
    started = time.perf_counter()
    ids = await store_faces(engine, vectors)
    results["insert_s"] = time.perf_counter() - started
    report = await cluster_pass(base, sessionmaker)
    placed = await clusters_of(engine)
    # What the clustering loop costs once they are placed, nothing new arriving: a sweep reads
    # every face embedding; a batch for a job the firehose announced reads only its faces.
    async with engine.connect() as connection:
        job = (await connection.execute(text("SELECT job_id FROM face_embeddings LIMIT 1"))).one()[
            0
        ]
    for key, jobs in (("sweep_ms", None), ("announced_ms", [job])):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert (await cluster_pass(base, sessionmaker, jobs)).faces_seen == 0
            times.append((time.perf_counter() - started) * 1000)
        results[key] = float(np.median(times))
    results["search"] = await face_search(sessionmaker, vectors, base.gallery.match_threshold)
    results["write_ms"] = await write_cost_ms(engine, size, np.random.default_rng(size + 1))
    synthetic_quality = quality(dict(zip(ids, people, strict=True)), placed)
    identity_faces = sum(1 for p in people if not p.startswith("~"))
    clustered_identity = sum(
        1 for i, p in zip(ids, people, strict=True) if not p.startswith("~") and placed.get(i)
    )
    results["synthetic"] = {
        **synthetic_quality,
        "size": size,
        "pass_s": report.seconds,
        "faces_per_s": size / report.seconds,
        "recall": clustered_identity / identity_faces,
        "identities": identity_faces // IDENTITY_FACES,
        "strangers_clustered": sum(
            1 for i, p in zip(ids, people, strict=True) if p.startswith("~") and placed.get(i)
        ),
    }
    await engine.dispose()
    return results


async def face_search(
    sessionmaker: async_sessionmaker[AsyncSession], vectors: np.ndarray, threshold: float
) -> dict[str, float]:
    """nearest_past_faces for SEARCHES stored faces (ids 1..N, in the order of `vectors`):
    the share of the exact answer it found, and its time a query."""
    found_total = wanted_total = 0
    times = []
    for query in np.random.default_rng(0).choice(len(vectors), SEARCHES, replace=False):
        cosines = vectors @ vectors[query]
        exact = {
            int(i) + 1
            for i in np.argsort(-cosines)[:10]
            if calibrated_similarity(float(cosines[i]), MODEL) >= threshold
        }
        async with sessionmaker() as session:
            await matching.use_exact_hnsw_filtering(session)
            started = time.perf_counter()
            found = await matching.nearest_past_faces(
                session,
                vectors[query],
                model=MODEL,
                owner_id=None,
                every_owner=True,
                since=datetime.now(UTC) - timedelta(days=1),
                limit=10,
            )
            times.append((time.perf_counter() - started) * 1000)
        found_total += len(exact & {f.face_id for f in found})
        wanted_total += len(exact)
    return {
        "recall": found_total / wanted_total,
        "answers": wanted_total / SEARCHES,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
    }


async def write_cost_ms(engine: AsyncEngine, stored: int, rng: np.random.Generator) -> float:
    """Postgres CPU (its backend's, psutil) a face written, WRITTEN_JOBS jobs of JOB_FACES new
    faces each, one transaction a job, after the `stored` faces."""
    vectors = unit(rng.standard_normal((WRITTEN_JOBS * JOB_FACES, DIM)))
    async with engine.connect() as connection:
        backend = psutil.Process(
            (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        )
        await connection.commit()
        before = backend.cpu_times()
        for n in range(WRITTEN_JOBS):
            job = uuid.uuid4()
            first = stored + 1 + n * JOB_FACES
            ids = list(range(first, first + JOB_FACES))
            await connection.execute(
                text(
                    "INSERT INTO jobs (id, status, tasks, content_type, width, height, counts, "
                    "attempts, created_at, finished_at) VALUES (:job, 'done', ARRAY['faces'], "
                    "'image/jpeg', 640, 480, '{}'::jsonb, 1, now(), now())"
                ),
                {"job": job},
            )
            await connection.execute(
                text(
                    "INSERT INTO detections (id, job_id, kind, label, score, box, attributes) "
                    "SELECT i, :job, 'face', 'face', 0.9, ARRAY[0, 0, 100, 100]::float8[], "
                    "'{}'::jsonb FROM unnest(CAST(:ids AS int[])) AS t(i)"
                ),
                {"ids": ids, "job": job},
            )
            await connection.execute(
                text(
                    "INSERT INTO face_embeddings (detection_id, job_id, model, dim, embedding) "
                    "SELECT i, :job, :model, :dim, v::vector FROM unnest(CAST(:ids AS int[]), "
                    "CAST(:vectors AS text[])) AS t(i, v)"
                ),
                {
                    "ids": ids,
                    "job": job,
                    "model": MODEL,
                    "dim": DIM,
                    "vectors": [literal(v) for v in vectors[n * JOB_FACES : (n + 1) * JOB_FACES]],
                },
            )
            await connection.commit()
        after = backend.cpu_times()
    spent = (after.user + after.system) - (before.user + before.system)
    return 1000 * spent / (WRITTEN_JOBS * JOB_FACES)


def write_results(results: dict[str, object], measured: str, load_before: str) -> None:
    settings = ClusterSettings()
    rows = [
        "| run | faces | clusters | purity | people split | unclustered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for core in (settings.core_faces, 2):
        q = results[f"shared_core{core}"]
        assert isinstance(q, dict)
        rows.append(
            f"| shared faces, core_faces={core} | {results['shared_faces']} | {q['clusters']} | "
            f"{q['purity']:.3f} | {q['split_people']} | {q['unclustered']} |"
        )
    s, search = results["synthetic"], results["search"]
    assert isinstance(s, dict) and isinstance(search, dict)
    lines = [
        "## Clustering (bench/clusters.py)",
        "",
        f"Measured {measured}. Embedded Postgres + pgvector (shared_buffers "
        f"{shared_buffers_mb()} MB, app/embedded.py); one `cluster_pass` (the product's "
        f"code, default settings: min_similarity {settings.min_similarity}, core_faces "
        f"{settings.core_faces}, max_neighbours {settings.max_neighbours}, batch_size "
        f"{settings.batch_size}) over faces stored as unknown faces of finished jobs.",
        "",
        *machine(),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        f"Quality on ../shared/images/faces ({results['shared_faces']} faces of "
        f"{results['shared_people']} people; most have 2 or 3 faces, the child 1, so with "
        "core_faces=3 only people with 3 faces can form a cluster):",
        "",
        *rows,
        "",
        f"Scale: {s['size']:,} synthetic 192-d unknown faces ({s['identities']:,} identities × "
        f"{IDENTITY_FACES} faces, same-person similarity ≈ 0.64-0.86, plus "
        f"{s['size'] - s['identities'] * IDENTITY_FACES:,} strangers seen once), in random order:",
        "",
        "| faces | pass s | faces/s | clusters | purity | identity faces clustered | "
        "people split | strangers clustered | insert s (setup) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['size']:,} | {s['pass_s']:.1f} | {s['faces_per_s']:.0f} | {s['clusters']:,} | "
        f"{s['purity']:.3f} | {s['recall']:.3f} | {s['split_people']:,} | "
        f"{s['strangers_clustered']:,} | {results['insert_s']:.1f} |",
        "",
        f"Once they are placed, with nothing new (medians of 5): a sweep of every face takes "
        f"{results['sweep_ms']:.0f} ms, what the clustering loop runs for one job's result off "
        f"the firehose {results['announced_ms']:.1f} ms. The loop sweeps at its start and every "
        f"`sweep_interval_s` ({settings.sweep_interval_s:.0f} s); until 2026-12-05 it swept every "
        "10 s (a one-off probe that day, 512-d faces half of them identified: 0.15 s a sweep at "
        "200,000 faces, 1.1-1.3 s at 1,000,000).",
        "",
        f"Face search over them (`POST /v1/faces/search`'s query, limit 10; {SEARCHES} of the "
        "faces asked for): it found "
        f"{search['recall']:.4f} of the exact answer (the 10 most similar faces by cosine at "
        f"least the match threshold: {search['answers']:.1f} a query), in {search['p50_ms']:.1f} "
        f"ms a query (p50; p99 {search['p99_ms']:.1f} ms). Writing new faces after them (unlike "
        "any stored: the index's worst case), a job "
        f"of {JOB_FACES} a transaction as a worker writes them (row, detections, embeddings, "
        f"indexed): {results['write_ms']:.2f} ms of Postgres CPU a face (its backend, psutil). "
        "Both the search and the write go through face_embeddings' index of sign bits "
        "(app/vectors.py, migration 0016).",
    ]
    write_section("clusters", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    size = (
        int(args[0]) if args else int(os.environ.get("LOOKOUT_BENCH_CLUSTER_FACES") or DEFAULT_SIZE)
    )
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    with stack_dir("lookout-bench-clusters-") as tmp:
        services = start_embedded(Path(tmp) / "data")
        try:
            migrate(services.database_url)
            results = asyncio.run(run(services.database_url, size))
            print(results, flush=True)
        finally:
            services.stop()
    write_results(results, measured, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
