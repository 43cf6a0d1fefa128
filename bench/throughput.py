"""End-to-end vs the raw-model ceiling vs the loop a user would write; worker and size scaling.

All on t1.jpg (6 faces), task `faces` (SCRFD-500M + the embedder), same CPU count, one run:
1. ceiling    decode + detect + embed in-process, the worker's own batching (run_batch),
              one single-threaded process per core — no HTTP, Postgres, Redis or WebSocket
2. end-to-end a client POSTs the images over HTTP and collects every result on the firehose
              WebSocket; the real API and `lookout worker` processes (one per core)
3. naive      what a user writes by hand: insightface's SCRFD, then the embedder one face at
              a time, one process, onnxruntime's default threads
Scaling: end-to-end with 1 vs N worker processes, and the ceiling and end-to-end side by side
on t1 resized to 0.3 / 2 / 12 MP.

`python -m bench.throughput [--images N] [--processes N] [--providers P,Q]`. On a GPU machine
(onnxruntime-gpu) `--providers CUDAExecutionProvider,CPUExecutionProvider` (or
LOOKOUT_BENCH_PROVIDERS, which `make bench` passes through) runs all three on CUDA.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bench.harness import (
    CORES,
    SHARED,
    Target,
    bench_providers,
    effective_providers,
    load_average,
    machine,
    save_plot,
    stack,
    upload_and_collect,
    wait_for_workers,
    write_section,
)

T1 = (SHARED / "images" / "scenes" / "t1.jpg").read_bytes()
MODELS_DIR = Path(os.environ.get("LOOKOUT_MODELS_DIR", SHARED / "models"))
SIZES_MP = (0.3, 2.0, 12.0)
OF_CEILING = Target("≥ 0.9, aim 1.0", 0.9, at_least=True)  # (2)/(1)
OVER_NAIVE = Target("≥ 1.3", 1.3, at_least=True)  # (2)/(3)


def bench_env(providers: list[str]) -> dict[str, str]:
    """The worker settings every measurement here shares (ceiling and end-to-end alike)."""
    return {
        "LOOKOUT_MODELS_DIR": str(MODELS_DIR),
        "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
        "LOOKOUT_MODELS__DOWNLOAD": "false",
        "LOOKOUT_MODELS__PROVIDERS": json.dumps(providers),
        "LOOKOUT_WORKER__THREADS": "1",
    }


def resized_jpeg(megapixels: float) -> bytes:
    image = cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR)
    scale = (megapixels * 1e6 / (image.shape[0] * image.shape[1])) ** 0.5
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def size_label(megapixels: float) -> str:
    return f"{megapixels:g} MP"


# ---------------------------------------------------------------- 1. ceiling (in-process)


def _ceiling_process(
    data: bytes,
    images: int,
    env: dict[str, str],
    start: "multiprocessing.Event",  # type: ignore[valid-type]
    out: "multiprocessing.Queue[tuple[str, float]]",
) -> None:
    """Reports ("ready", 0) after warm-up, ("batch", n) per batch, ("elapsed", s) at the end."""
    os.environ.update(env)
    from app.pixels import decode_image
    from app.settings import Settings
    from workers.detectors.registry import build_detectors
    from workers.pipeline import run_batch

    settings = Settings()
    detectors = build_detectors(settings)
    batch_size = settings.worker.batch_size

    def one_batch(count: int) -> None:
        decoded = [
            decode_image(
                data,
                max_pixels=settings.api.max_image_pixels,
                target_side_px=settings.decode.target_side_px,
            )
            for _ in range(count)
        ]
        results = run_batch(decoded, [("faces",)] * count, detectors)
        assert all(not isinstance(r, Exception) for r in results)

    one_batch(batch_size)  # warm-up
    out.put(("ready", 0))
    start.wait()
    began = time.perf_counter()
    done = 0
    while done < images:
        count = min(batch_size, images - done)
        one_batch(count)
        done += count
        out.put(("batch", count))
    out.put(("elapsed", time.perf_counter() - began))


def ceiling(data: bytes, images: int, *, processes: int, env: dict[str, str], desc: str) -> float:
    """Images/s of the worker's pipeline alone, `processes` single-threaded processes."""
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    share = max(1, images // processes)
    workers = [
        context.Process(target=_ceiling_process, args=(data, share, env, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    elapsed: list[float] = []
    with tqdm(total=share * processes, desc=desc, unit="img") as progress:
        ready = 0
        while len(elapsed) < processes:
            kind, value = out.get(timeout=600)
            if kind == "ready":
                ready += 1
                if ready == processes:  # every process loaded and warmed its models
                    progress.reset()  # the rate shown counts from here
                    start.set()
            elif kind == "batch":
                progress.update(int(value))
            else:
                elapsed.append(value)
    for worker in workers:
        worker.join()
    return share * processes / max(elapsed)


# ---------------------------------------------------------------- 3. naive loop


def naive(data: bytes, images: int, providers: list[str]) -> float:
    """Per image: decode, SCRFD, then each face aligned and embedded on its own."""
    import onnxruntime
    from insightface.model_zoo import get_model
    from insightface.utils import face_align

    chosen = effective_providers(providers)
    detector = get_model(str(MODELS_DIR / "det_500m.onnx"), providers=chosen)
    # ctx_id -1 would reset insightface's session to CPU; 0 keeps the providers it was given.
    detector.prepare(ctx_id=0 if chosen[0] != "CPUExecutionProvider" else -1, input_size=(640, 640))
    embedder = onnxruntime.InferenceSession(
        str(MODELS_DIR / "mobilefacenet.onnx"), providers=chosen
    )
    name = embedder.get_inputs()[0].name

    def one(encoded: bytes) -> int:
        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
        _, keypoints = detector.detect(image)
        for points in keypoints:
            crop = face_align.norm_crop(image, landmark=points, image_size=112)
            blob = ((crop[..., ::-1].astype(np.float32) - 127.5) / 128.0)[None]
            embedder.run(None, {name: blob})
        return len(keypoints)

    assert one(data) == 6  # warm-up, and the loop finds what the service finds
    began = time.perf_counter()
    for _ in tqdm(range(images), desc="naive loop", unit="img"):
        one(data)
    return images / (time.perf_counter() - began)


# ---------------------------------------------------------------- 2. end-to-end


def end_to_end(
    workloads: list[tuple[str, bytes, int]],
    *,
    workers: int,
    env: dict[str, str],
    concurrency: int = 16,
) -> dict[str, float]:
    """Images/s per workload (label, JPEG, jobs), one after another on one running stack."""
    with stack(
        worker_command=["-m", "app.cli", "worker", "--processes", "1"],
        workers=workers,
        extra_env=env,
    ) as running:
        wait_for_workers(running, workers)  # models loaded and warmed up in every worker

        def measure(data: bytes, jobs: int, in_flight: int, desc: str) -> float:
            return asyncio.run(
                upload_and_collect(
                    running.base_url,
                    running.ws_url,
                    image=data,
                    content_type="image/jpeg",
                    jobs=jobs,
                    concurrency=in_flight,
                    desc=desc,
                )
            )

        results = {}
        for label, data, jobs in workloads:
            measure(data, 2 * workers, 2 * workers, f"end-to-end warm-up, {label}")
            results[label] = measure(
                data, jobs, concurrency, f"end-to-end, {label}, {workers} worker(s)"
            )
        return results


# ---------------------------------------------------------------- report


@dataclass
class Results:
    processes: int
    providers: list[str]
    images: int
    ceiling: float
    end_to_end: float
    naive: float
    e2e_one_worker: float
    sizes_ceiling: dict[str, float]
    sizes_end_to_end: dict[str, float]


def run(images: int = 160, *, processes: int = CORES, providers: list[str]) -> Results:
    started_load = load_average()
    env = bench_env(providers)
    c = ceiling(T1, images, processes=processes, env=env, desc="ceiling, t1")
    # Fewer images the larger they are, a multiple of the process count.
    size_images = {
        mp: max(processes, int(images / (1 + mp)) // processes * processes) for mp in SIZES_MP
    }
    resized = {mp: resized_jpeg(mp) for mp in SIZES_MP}
    sizes_ceiling = {
        size_label(mp): ceiling(
            resized[mp],
            size_images[mp],
            processes=processes,
            env=env,
            desc=f"ceiling, {size_label(mp)}",
        )
        for mp in SIZES_MP
    }
    e2e = end_to_end(
        [
            ("t1", T1, images),
            *((size_label(mp), resized[mp], size_images[mp]) for mp in SIZES_MP),
        ],
        workers=processes,
        env=env,
    )
    n = naive(T1, images // 2, providers)
    e1 = end_to_end([("t1", T1, images // 2)], workers=1, env=env)["t1"]
    results = Results(
        processes=processes,
        providers=providers,
        images=images,
        ceiling=c,
        end_to_end=e2e.pop("t1"),
        naive=n,
        e2e_one_worker=e1,
        sizes_ceiling=sizes_ceiling,
        sizes_end_to_end=e2e,
    )
    report(results, started_load)
    return results


def report(r: Results, load_before: str) -> None:
    of_ceiling = r.end_to_end / r.ceiling
    over_naive = r.end_to_end / r.naive
    ran_on = effective_providers(r.providers)
    on_gpu = ran_on[0] != "CPUExecutionProvider"
    plot = save_plot("throughput", "End-to-end vs ceiling vs naive loop", lambda f: _draw(f, r))
    lines = [
        "## End-to-end vs ceiling vs naive (bench/throughput.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}. t1.jpg (1280×886, 6 faces), task `faces`",
        "(SCRFD-500M + the 192-d MobileFaceNet stand-in embedder), "
        f"{r.processes} worker processes × 1 thread unless stated, on {', '.join(ran_on)}.",
        "",
        *machine(r.providers),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| measurement | images/s | ratio | target |",
        "|---|---:|---:|---|",
        f"| (1) ceiling: pipeline in-process, same batching | {r.ceiling:.1f} | 1.00 | |",
        "| (2) end-to-end: HTTP → Postgres → Redis → workers → WebSocket | "
        f"{r.end_to_end:.1f} | {of_ceiling:.2f} of (1) | {OF_CEILING.cell(of_ceiling)} |",
        "| (3) naive loop a user writes (per face embed, default threads) | "
        f"{r.naive:.1f} | (2)/(3) = {over_naive:.2f} | {OVER_NAIVE.cell(over_naive)} |",
        f"| end-to-end with 1 worker process | {r.e2e_one_worker:.1f} | "
        f"{r.processes} workers / 1 = {r.end_to_end / r.e2e_one_worker:.2f} | |",
        "",
        "By image size: t1 resized, ceiling and end-to-end side by side (large JPEGs decode at",
        "reduced scale; fewer images the larger they are):",
        "",
        "| image | ceiling images/s | end-to-end images/s | end-to-end / ceiling |",
        "|---|---:|---:|---:|",
        *[
            f"| {size} | {r.sizes_ceiling[size]:.1f} | {r.sizes_end_to_end[size]:.1f} | "
            f"{r.sizes_end_to_end[size] / r.sizes_ceiling[size]:.2f} |"
            for size in r.sizes_ceiling
        ],
        "",
        plot,
    ]
    if not OF_CEILING.met(of_ceiling):
        lines += [
            "",
            f"What limits (2): on {CORES} cores the API, Postgres, Redis and the benchmark client",
            f"share the CPUs with the {r.processes} worker processes in (2) but not in (1); the",
            "plumbing section's profile note says where that CPU goes.",
        ]
    if not on_gpu:
        lines += [
            "",
            "These figures are CPU only. The CUDA figures for (1) and (2) need a GPU machine with",
            "onnxruntime-gpu: `LOOKOUT_BENCH_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider"
            " make bench` (or `python -m bench.throughput --providers …`).",
        ]
    write_section("throughput", "\n".join(lines))


def _draw(figure, r: Results) -> None:  # type: ignore[no-untyped-def]
    left, right = figure.subplots(1, 2)
    names = ["ceiling", "end-to-end", "naive loop", "e2e 1 worker"]
    values = [r.ceiling, r.end_to_end, r.naive, r.e2e_one_worker]
    left.barh(names, values, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    left.set_xlabel("images/s (t1.jpg, faces)")
    left.invert_yaxis()
    sizes = list(r.sizes_ceiling)
    positions = np.arange(len(sizes))
    right.bar(positions - 0.2, [r.sizes_ceiling[s] for s in sizes], 0.4, label="ceiling")
    right.bar(positions + 0.2, [r.sizes_end_to_end[s] for s in sizes], 0.4, label="end-to-end")
    right.set_xticks(positions, sizes)
    right.set_ylabel("images/s")
    right.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--images", type=int, default=160, help="images for (1) and (2)")
    parser.add_argument("--processes", type=int, default=CORES, help="worker processes")
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated")
    args = parser.parse_args(argv)
    print(run(args.images, processes=args.processes, providers=bench_providers(args.providers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
