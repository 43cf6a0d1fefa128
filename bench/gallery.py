"""Gallery search: identify latency and recall@1, HNSW against exact, on synthetic embeddings.

`python -m bench.gallery [SIZE ...]` (default: 1,000 and 100,000 vectors, and 1,000,000 only
when LOOKOUT_BENCH_GALLERY_MAX asks for it: the HNSW build alone took over 2 minutes at 100,000
on 2 cores, and 1M is ten times the rows, so it is not part of every `make bench`). Starts an embedded Postgres with
pgvector in a temp dir, fills a scratch table shaped like person_faces (unconstrained `vector`,
`model` column) with SIZE random 192-d unit vectors, builds the same partial expression HNSW
index the product uses (app/vectors.py), and runs the product's nearest query (app/vectors.py
expression, `WHERE model = …`, LIMIT 1) for queries that are stored vectors plus noise (a new
photo of an enrolled face: the true nearest is known and clear of the rest). Exact = the same
query with index scans off (a sequential scan computing every distance). recall@1 = the share
of queries whose top hit equals numpy's brute-force top hit. Writes the "Gallery" section of
bench/RESULTS.md (a table and a plot). Figures describe this run on this machine only.
"""

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tqdm import tqdm

from app.db import migrate
from app.embedded import start_embedded
from app.vectors import distance_expression, vector_expression
from bench.harness import load_average, machine, percentile_ms, save_plot, write_section

DIM = 192
MODEL = "mobilefacenet"
QUERIES = 200
NOISE = 0.35  # per-vector noise norm relative to the unit vector: similarity to source ≈ 0.94
INSERT_CHUNK = 5000
SIZES = (1_000, 100_000, 1_000_000)
BUILD_MEMORY = "3GB"
# The largest gallery `make bench` measures unless LOOKOUT_BENCH_GALLERY_MAX says otherwise.
DEFAULT_MAX = 100_000


def gallery_max() -> int:
    return int(os.environ.get("LOOKOUT_BENCH_GALLERY_MAX") or DEFAULT_MAX)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in vector) + "]"


async def fill(connection: AsyncConnection, vectors: np.ndarray) -> None:
    await connection.execute(text("DROP TABLE IF EXISTS bench_faces"))
    await connection.execute(
        text("CREATE TABLE bench_faces (id int PRIMARY KEY, model text, embedding vector)")
    )
    progress = tqdm(total=len(vectors), desc=f"insert {len(vectors):,}", unit="vec")
    for start in range(0, len(vectors), INSERT_CHUNK):
        chunk = vectors[start : start + INSERT_CHUNK]
        await connection.execute(
            text(
                "INSERT INTO bench_faces SELECT i, :model, v::vector "
                "FROM unnest(CAST(:ids AS int[]), CAST(:vectors AS text[])) AS t(i, v)"
            ),
            {
                "model": MODEL,
                "ids": list(range(start, start + len(chunk))),
                "vectors": [literal(v) for v in chunk],
            },
        )
        progress.update(len(chunk))
    progress.close()


async def build_index(engine: AsyncEngine, connection: AsyncConnection, size: int) -> None:
    """CREATE INDEX (the product's HNSW index), with a progress bar from pgvector's own build
    progress (pg_stat_progress_create_index.tuples_done), read on a second connection."""
    build = asyncio.create_task(
        connection.execute(
            text(
                "CREATE INDEX bench_faces_hnsw ON bench_faces USING hnsw "
                f"({vector_expression('embedding', DIM)} vector_cosine_ops) "
                f"WHERE model = '{MODEL}'"
            )
        )
    )
    with tqdm(total=size, desc=f"HNSW build {size:,}", unit="vec") as progress:
        async with engine.connect() as watching:
            # autocommit: in a transaction the progress view would stay at its first snapshot
            watcher = await watching.execution_options(isolation_level="AUTOCOMMIT")
            while not build.done():
                done = await watcher.scalar(
                    text("SELECT max(tuples_done) FROM pg_stat_progress_create_index")
                )
                if done:
                    progress.update(min(int(done), size) - progress.n)
                await asyncio.wait([build], timeout=0.5)
        await build  # its error, if it failed
        progress.update(size - progress.n)


async def timed_queries(
    connection: AsyncConnection, queries: np.ndarray, *, exact: bool
) -> tuple[list[float], list[int]]:
    await connection.execute(text(f"SET enable_indexscan = {'off' if exact else 'on'}"))
    distance = distance_expression("embedding", DIM)
    sql = text(f"SELECT id FROM bench_faces WHERE model = :model ORDER BY {distance} LIMIT 1")
    latencies, hits = [], []
    desc = f"{'exact' if exact else 'HNSW'} queries"
    for query in tqdm(queries, desc=desc, unit="query"):
        started = time.perf_counter()
        hit = await connection.scalar(sql, {"query": literal(query), "model": MODEL})
        latencies.append(time.perf_counter() - started)
        hits.append(int(hit))
    return latencies, hits


async def measure(database_url: str, size: int) -> dict[str, float | str]:
    rng = np.random.default_rng(size)
    vectors = unit(rng.standard_normal((size, DIM)))
    sources = rng.integers(0, size, QUERIES)
    queries = unit(vectors[sources] + NOISE * unit(rng.standard_normal((QUERIES, DIM))))
    truth = np.argmax(queries @ vectors.T, axis=1)
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        started = time.perf_counter()
        await fill(autocommit, vectors)
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        await build_index(engine, autocommit, size)
        build_s = time.perf_counter() - started
        await autocommit.execute(text("ANALYZE bench_faces"))
        plan = "\n".join(
            row[0]
            for row in await autocommit.execute(
                text(
                    "EXPLAIN SELECT id FROM bench_faces WHERE model = :model "
                    f"ORDER BY {distance_expression('embedding', DIM)} LIMIT 1"
                ),
                {"query": literal(queries[0]), "model": MODEL},
            )
        )
        hnsw_lat, hnsw_hits = await timed_queries(autocommit, queries, exact=False)
        exact_lat, exact_hits = await timed_queries(autocommit, queries, exact=True)
        await autocommit.execute(text("DROP TABLE bench_faces"))
    await engine.dispose()
    return {
        "size": size,
        "insert_s": insert_s,
        "build_s": build_s,
        "uses_index": "bench_faces_hnsw" in plan,
        "hnsw_p50": percentile_ms(hnsw_lat, 50),
        "hnsw_p99": percentile_ms(hnsw_lat, 99),
        "hnsw_recall": float(np.mean(np.asarray(hnsw_hits) == truth)),
        "exact_p50": percentile_ms(exact_lat, 50),
        "exact_p99": percentile_ms(exact_lat, 99),
        "exact_recall": float(np.mean(np.asarray(exact_hits) == truth)),
    }


def write_results(rows: list[dict[str, float | str]], measured: str, load_before: str) -> None:
    lines = [
        "## Gallery (bench/gallery.py)",
        "",
        f"Measured {measured}. Embedded Postgres + pgvector, {DIM}-d random unit vectors,",
        f"{QUERIES} queries = stored vectors + noise (similarity to their source ≈ 0.94), top-1 by",
        "the product's query (partial expression HNSW index, defaults m=16, ef_construction=64,",
        "ef_search=40). Exact = index scans off.",
        "",
        *machine(),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| vectors | insert s | HNSW build s | plan uses HNSW | HNSW p50 ms | HNSW p99 ms | "
        "HNSW recall@1 | exact p50 ms | exact p99 ms | exact recall@1 |",
        "|---:|---:|---:|:-:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['insert_s']:.1f} | {r['build_s']:.1f} | "
            f"{'yes' if r['uses_index'] else 'no'} | {r['hnsw_p50']:.2f} | {r['hnsw_p99']:.2f} | "
            f"{r['hnsw_recall']:.3f} | {r['exact_p50']:.2f} | {r['exact_p99']:.2f} | "
            f"{r['exact_recall']:.3f} |"
        )
    if rows:
        lines += [
            "",
            save_plot("gallery", "Gallery: top-1 query latency", lambda f: _draw(f, rows)),
        ]
    measured_sizes = {int(r["size"]) for r in rows}
    missing = [s for s in SIZES if s not in measured_sizes]
    if missing:
        lines += [
            "",
            "Not measured in this run: "
            + ", ".join(f"{s:,}" for s in missing)
            + " vectors; nothing is extrapolated. `make bench` measures galleries of up to "
            f"LOOKOUT_BENCH_GALLERY_MAX vectors (now {gallery_max():,}; default "
            f"{DEFAULT_MAX:,}): set it to 1000000 for the 1M row, or run "
            "`python -m bench.gallery 1000000`.",
        ]
    write_section("gallery", "\n".join(lines))


def _draw(figure, rows: list[dict[str, float | str]]) -> None:  # type: ignore[no-untyped-def]
    axis = figure.add_subplot()
    sizes = [int(r["size"]) for r in rows]
    for key, label, style in (
        ("hnsw_p50", "HNSW p50", "-o"),
        ("hnsw_p99", "HNSW p99", "--o"),
        ("exact_p50", "exact p50", "-s"),
        ("exact_p99", "exact p99", "--s"),
    ):
        axis.plot(sizes, [float(r[key]) for r in rows], style, label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("vectors in the gallery (log)")
    axis.set_ylabel("top-1 query, ms (log)")
    axis.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    sizes = [int(s) for s in args] or [s for s in SIZES if s <= gallery_max()]
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lookout-bench-gallery-") as tmp:
        services = start_embedded(Path(tmp) / "data")
        try:
            migrate(services.database_url)
            for size in sizes:
                row = asyncio.run(measure(services.database_url, size))
                print(row, flush=True)
                rows.append(row)
        finally:
            services.stop()
    write_results(rows, measured, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
