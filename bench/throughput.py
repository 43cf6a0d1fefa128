"""End-to-end vs the raw-model ceiling vs the loop a user would write; worker and size scaling.

All on t1.jpg (6 faces), task `faces` (SCRFD-500M + the embedder), same CPU count, one run:
1. ceiling    decode + detect + embed in-process, the worker's own batching (run_batch) and
              decode-ahead (a thread), one single-threaded process per core, started once
              for the run as the workers are — no HTTP, Postgres, Redis or WebSocket
2. end-to-end a client POSTs the images over HTTP and collects every result on the firehose
              WebSocket; the real API and `lookout worker` processes (one per core); unknown-
              face clustering off (work the ceiling does not do, measured on its own)
3. naive      what a user writes by hand: insightface's SCRFD, then the embedder one face at
              a time, one process, onnxruntime's default threads; in every round, after t1's
              end-to-end
Scaling: end-to-end with 1 vs N worker processes, and the ceiling and end-to-end side by side
on t1 resized to 0.3 / 2 / 12 MP, in rounds (the spread of the ratio is reported).

`python -m bench.throughput [--images N] [--processes N] [--providers P,Q] [--rounds N]`. On a GPU machine
(onnxruntime-gpu) `--providers CUDAExecutionProvider,CPUExecutionProvider` (or
LOOKOUT_BENCH_PROVIDERS, which `make bench` passes through) runs all three on CUDA.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from bench.profiling import CpuMeter

T1 = (SHARED / "images" / "scenes" / "t1.jpg").read_bytes()
MODELS_DIR = Path(os.environ.get("LOOKOUT_MODELS_DIR", SHARED / "models"))
SIZES_MP = (0.3, 2.0, 12.0)
# By size: rounds of (ceiling, end-to-end), and the fewest images a measurement takes (12 MP
# got 12 images before, and its ratio moved from 0.61 to 1.24 between two runs).
SIZE_ROUNDS = 5
MIN_SIZE_IMAGES = 64
# Targets of the hot-path issue (issue 20): end-to-end ÷ ceiling on t1 and at 12 MP, ÷ naive.
OF_CEILING = Target("≥ 0.95", 0.95, at_least=True)  # (2)/(1)
OVER_NAIVE = Target("≥ 1.3", 1.3, at_least=True)  # (2)/(3)
SIZE_TARGETS = {"12 MP": Target("≥ 0.85", 0.85, at_least=True)}
# CPU by process: the processes that run the models ((1)'s, or (2)'s workers), and the bench's
# own process (the client in (2), the coordinator of (1)).
MODEL_PROCESSES = "models' processes"
CLIENT = "this bench"


@dataclass
class Measured:
    rate: float  # images/s
    cpu_ms: dict[str, float]  # CPU an image, ms, by process (user + system)


def bench_env(providers: list[str]) -> dict[str, str]:
    """The worker settings every measurement here shares (ceiling and end-to-end alike)."""
    return {
        "LOOKOUT_MODELS_DIR": str(MODELS_DIR),
        "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
        "LOOKOUT_MODELS__DOWNLOAD": "false",
        "LOOKOUT_MODELS__PROVIDERS": json.dumps(providers),
        "LOOKOUT_WORKER__THREADS": "1",
        # Unknown-face clustering places each result's faces in the API, beside the jobs: work
        # the ceiling does not do (~8 ms of CPU an image on this workload's six faces, seen
        # again and again). Off here; its cost is measured on its own (bench/RESULTS.md, beside
        # this section; bench/clusters.py).
        "LOOKOUT_CLUSTERS__ENABLED": "false",
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
    orders: "multiprocessing.Queue[bytes | None]",
    left: Any,  # multiprocessing.Value("i"): images of this measurement not yet taken
    env: dict[str, str],
    start: Any,  # multiprocessing.Barrier: every process warmed up, and the parent
    out: "multiprocessing.Queue[tuple[str, float]]",
) -> None:
    """One process of the ceiling, alive for the whole run as a worker is: models loaded once.

    Per image it is sent (an order): one warm-up batch of it, the barrier, then batches taken
    from a count shared by the processes (as workers take entries from one consumer group: a
    process that runs faster takes more; an even split made the ceiling wait for the slowest).
    Reports ("batch", n) per batch, then ("cpu", s) and ("elapsed", s) at the end of each
    measurement: this process's CPU (its decode thread's too) and time from the barrier."""
    os.environ.update(env)
    from app.pixels import decode_image
    from app.settings import Settings
    from workers.detectors.registry import build_detectors
    from workers.pipeline import run_batch

    settings = Settings()
    detectors = build_detectors(settings)
    batch_size = settings.worker.batch_size

    def take() -> int:
        with left.get_lock():
            count = min(batch_size, left.value)
            left.value -= count
            return int(count)

    def decode(data: bytes, count: int) -> list[Any]:
        return [
            decode_image(
                data,
                max_pixels=settings.api.max_image_pixels,
                target_side_px=settings.decode.target_side_px,
            )
            for _ in range(count)
        ]

    def infer(decoded: list[Any]) -> None:
        results = run_batch(decoded, [("faces",)] * len(decoded), detectors)
        assert all(not isinstance(r, Exception) for r in results)

    while (data := orders.get()) is not None:
        infer(decode(data, batch_size))  # warm-up: this image's sizes
        start.wait()
        began, cpu_began = time.perf_counter(), time.process_time()
        # As the worker does: the next batch decodes in a thread while this one is in
        # inference (a ceiling without that overlap was beaten by end-to-end at 2 and 12 MP).
        with ThreadPoolExecutor(max_workers=1) as decoder:
            count = take()
            ahead = decoder.submit(decode, data, count)
            while count:
                decoded = ahead.result()
                following = take()
                if following:
                    ahead = decoder.submit(decode, data, following)
                infer(decoded)
                out.put(("batch", count))
                count = following
        out.put(("cpu", time.process_time() - cpu_began))
        out.put(("elapsed", time.perf_counter() - began))


@contextlib.contextmanager
def running_ceiling(
    *, processes: int, env: dict[str, str]
) -> Iterator[Callable[[bytes, int, str], Measured]]:
    """`processes` single-threaded processes running the worker's pipeline, started once as
    the stack's workers are (spawned for each measurement, they were measured from their cold
    first seconds and ran slower than the workers they should bound); yields measure(jpeg,
    images, progress label) → images/s and CPU an image (the processes', and this one's)."""
    context = multiprocessing.get_context("spawn")
    orders = [context.Queue() for _ in range(processes)]
    out = context.Queue()
    left = context.Value("i", 0)
    start = context.Barrier(processes + 1)
    children = [
        context.Process(target=_ceiling_process, args=(queue, left, env, start, out))
        for queue in orders
    ]
    for child in children:
        child.start()

    def measure(data: bytes, images: int, desc: str) -> Measured:
        total = max(1, images // processes) * processes
        left.value = total
        for queue in orders:
            queue.put(data)
        start.wait(timeout=600)  # every process loaded (the first time) and warmed up
        coordinator = time.process_time()
        elapsed: list[float] = []
        cpu = 0.0
        with tqdm(total=total, desc=desc, unit="img") as progress:
            while len(elapsed) < processes:
                kind, value = out.get(timeout=600)
                if kind == "batch":
                    progress.update(int(value))
                elif kind == "cpu":
                    cpu += value
                else:
                    elapsed.append(value)
        return Measured(
            total / max(elapsed),
            {
                MODEL_PROCESSES: 1000 * cpu / total,
                CLIENT: 1000 * (time.process_time() - coordinator) / total,
            },
        )

    try:
        yield measure
    finally:
        for queue in orders:
            queue.put(None)
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()


# ---------------------------------------------------------------- 3. naive loop


def naive_loop(providers: list[str]) -> Callable[[bytes, int, str], float]:
    """Loads what a user would (insightface's SCRFD, the embedder) once; returns
    loop(jpeg, images, progress label) → images/s. Per image: decode, SCRFD, then each face aligned and
    embedded on its own."""
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

    def loop(data: bytes, images: int, desc: str) -> float:
        assert one(data) == 6  # warm-up, and the loop finds what the service finds
        began = time.perf_counter()
        for _ in tqdm(range(images), desc=desc, unit="img"):
            one(data)
        return images / (time.perf_counter() - began)

    return loop


# ---------------------------------------------------------------- 2. end-to-end


@contextlib.contextmanager
def running_end_to_end(
    *, workers: int, env: dict[str, str], concurrency: int = 16
) -> Iterator[Callable[[str, bytes, int], Measured]]:
    """A running stack (API + `workers` worker processes, models warm); yields
    measure(label, jpeg, jobs) → images/s and CPU an image by process, each measurement after
    a short warm-up (not counted)."""
    with stack(
        worker_command=["-m", "app.cli", "worker", "--processes", "1"],
        workers=workers,
        extra_env=env,
    ) as running:
        wait_for_workers(running, workers)  # models loaded and warmed up in every worker

        def once(data: bytes, jobs: int, in_flight: int, desc: str) -> float:
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

        pids = {
            "API": running.processes[0].pid,
            **{f"worker {n}": p.pid for n, p in enumerate(running.processes[1:], 1)},
            "Redis": running.redis_pid,
            CLIENT: os.getpid(),  # alone: its children are the servers measured here
        }
        if running.postgres_pid is not None:
            pids["Postgres"] = running.postgres_pid

        def measure(label: str, data: bytes, jobs: int) -> Measured:
            once(data, 2 * workers, 2 * workers, f"end-to-end warm-up, {label}")
            meter = CpuMeter(pids, alone=frozenset({CLIENT}))
            meter.start()
            rate = once(data, jobs, concurrency, f"end-to-end, {label}, {workers} worker(s)")
            meter.stop()
            spent = meter.ms_per(jobs)
            by_process = {
                MODEL_PROCESSES: sum(v for k, v in spent.items() if k.startswith("worker"))
            }
            by_process.update({k: v for k, v in spent.items() if not k.startswith("worker")})
            return Measured(rate, by_process)

        # The first uploads at full concurrency open the API's and the workers' Postgres
        # connections (a new backend each, its caches cold): the first round's end-to-end ran
        # at 0.84 of its ceiling in two runs where the later rounds gave 0.92-1.04.
        once(T1, 4 * concurrency, concurrency, "end-to-end, warming the stack")
        yield measure


# ---------------------------------------------------------------- report


@dataclass
class Results:
    processes: int
    providers: list[str]
    images: int
    ceiling: float  # t1, the median of the rounds
    end_to_end: float  # t1, the median of the rounds
    t1_ratios: list[float]  # t1, end-to-end ÷ ceiling of each round
    naive: float  # t1, the median of the rounds
    naive_ratios: list[float]  # t1, end-to-end ÷ naive of each round
    # t1, CPU an image by process of each round: (ceiling, end-to-end)
    t1_cpu: list[tuple[dict[str, float], dict[str, float]]]
    t1_rates: list[tuple[float, float]]  # t1, images/s of each round: (ceiling, end-to-end)
    e2e_one_worker: float
    # By size: (ceiling, end-to-end) images/s of each round, the two measured back to back.
    sizes: dict[str, list[tuple[float, float]]]
    size_images: dict[str, int]

    def size_ratios(self, size: str) -> list[float]:
        return [e2e / ceiling for ceiling, e2e in self.sizes[size]]

    def worker_shares(self) -> list[float]:
        """t1, each round: the share of (2)'s CPU that its workers spent. With every core busy
        the rest is taken from the models, so (2) ÷ (1) can be at most this (less the workers'
        own plumbing). From (2)'s own figures: CPU an image moves ±5% from one measurement to
        the next on this kind of machine, more than the difference sought, and a share taken in
        one measurement cancels it."""
        return [e2e[MODEL_PROCESSES] / sum(e2e.values()) for _, e2e in self.t1_cpu]


def run(
    images: int = 160, *, processes: int = CORES, providers: list[str], rounds: int = SIZE_ROUNDS
) -> Results:
    started_load = load_average()
    env = bench_env(providers)
    # t1 itself, then t1 resized: fewer images the larger they are (at least MIN_SIZE_IMAGES),
    # a multiple of the process count.
    workloads = [("t1", T1, images // processes * processes)] + [
        (
            size_label(mp),
            resized_jpeg(mp),
            max(MIN_SIZE_IMAGES, int(images / (1 + mp))) // processes * processes,
        )
        for mp in SIZES_MP
    ]
    sizes: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in workloads}
    t1_cpu: list[tuple[dict[str, float], dict[str, float]]] = []
    naive_rates: list[float] = []
    naive = naive_loop(providers)
    with (
        running_ceiling(processes=processes, env=env) as ceiling,
        running_end_to_end(workers=processes, env=env) as measure,
    ):
        # Rounds, and in each the ceiling and end-to-end of one workload back to back (t1's
        # naive loop right after them): a ratio compares measurements seconds apart, and the
        # rounds give its spread (the stack's idle processes stay up during the other turns).
        for round_number in range(1, rounds + 1):
            for label, data, count in workloads:
                bound = ceiling(data, count, f"ceiling, {label}, round {round_number}")
                served = measure(f"{label}, round {round_number}", data, count)
                sizes[label].append((bound.rate, served.rate))
                if label == "t1":
                    t1_cpu.append((bound.cpu_ms, served.cpu_ms))
                    # One naive run a bench moved 1.5× between runs (7.6 and 11.1 images/s):
                    # onnxruntime's default threads spin, at the mercy of the machine's load.
                    naive_rates.append(naive(data, count // 2, f"naive loop, round {round_number}"))
    with running_end_to_end(workers=1, env=env) as measure_one:
        e1 = measure_one("t1", T1, images // 2).rate
    t1 = sizes.pop("t1")
    results = Results(
        processes=processes,
        providers=providers,
        images=images,
        ceiling=float(np.median([c for c, _ in t1])),
        end_to_end=float(np.median([e for _, e in t1])),
        t1_ratios=[e / c for c, e in t1],
        naive=float(np.median(naive_rates)),
        naive_ratios=[e / n for (_, e), n in zip(t1, naive_rates, strict=True)],
        t1_cpu=t1_cpu,
        t1_rates=t1,
        e2e_one_worker=e1,
        sizes=sizes,
        size_images={label: count for label, _, count in workloads[1:]},
    )
    report(results, started_load)
    return results


def report(r: Results, load_before: str) -> None:
    of_ceiling = float(np.median(r.t1_ratios))
    over_naive = float(np.median(r.naive_ratios))
    ran_on = effective_providers(r.providers)
    on_gpu = ran_on[0] != "CPUExecutionProvider"
    rounds = len(next(iter(r.sizes.values())))
    plot = save_plot("throughput", "End-to-end vs ceiling vs naive loop", lambda f: _draw(f, r))
    lines = [
        "## End-to-end vs ceiling vs naive (bench/throughput.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}. t1.jpg (1280×886, 6 faces), task `faces`",
        "(SCRFD-500M + the 192-d MobileFaceNet stand-in embedder), "
        f"{r.processes} worker processes × 1 thread unless stated, on {', '.join(ran_on)}; "
        "unknown-face clustering off (work the ceiling does not do; bench/clusters.py measures it).",
        "",
        *machine(r.providers),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        f"(1) and (2): {rounds} rounds of {r.images // r.processes * r.processes} images, each "
        "round's ceiling and end-to-end back to back; medians, and (2) ÷ (1) of every round: "
        f"{', '.join(f'{x:.2f}' for x in r.t1_ratios)} (spread "
        f"{max(r.t1_ratios) - min(r.t1_ratios):.2f}). (3) right after them in each round, "
        f"{r.images // r.processes * r.processes // 2} images; (2) ÷ (3) of every round: "
        f"{', '.join(f'{x:.2f}' for x in r.naive_ratios)} (spread "
        f"{max(r.naive_ratios) - min(r.naive_ratios):.2f}).",
        "",
        "| measurement | images/s | ratio | target |",
        "|---|---:|---:|---|",
        f"| (1) ceiling: pipeline in-process, same batching | {r.ceiling:.1f} | 1.00 | |",
        "| (2) end-to-end: HTTP → Postgres → Redis → workers → WebSocket | "
        f"{r.end_to_end:.1f} | {of_ceiling:.3f} of (1) (median of rounds) | "
        f"{OF_CEILING.cell(of_ceiling)} |",
        "| (3) naive loop a user writes (per face embed, default threads) | "
        f"{r.naive:.1f} | (2)/(3) = {over_naive:.2f} (median of rounds) | "
        f"{OVER_NAIVE.cell(over_naive)} |",
        f"| end-to-end with 1 worker process | {r.e2e_one_worker:.1f} | "
        f"{r.processes} workers / 1 = {r.end_to_end / r.e2e_one_worker:.2f} | |",
        "",
        "By image size: t1 resized (large JPEGs decode at reduced scale), in the same rounds.",
        "Medians of the rounds, and the end-to-end ÷ ceiling ratio of every round (its spread:",
        "how far one run of this bench can be trusted):",
        "",
        "| image | images a round | ceiling images/s | end-to-end images/s | end-to-end ÷ ceiling "
        "(median) | each round | spread | target |",
        "|---|---:|---:|---:|---:|---|---:|---|",
        *[_size_row(r, size) for size in r.sizes],
        "",
        plot,
        "",
        *_cpu_lines(r, of_ceiling, on_gpu),
    ]
    if not on_gpu:
        lines += [
            "",
            "These figures are CPU only. The CUDA figures for (1) and (2) need a GPU machine with",
            "onnxruntime-gpu: `LOOKOUT_BENCH_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider"
            " make bench` (or `python -m bench.throughput --providers …`).",
        ]
    write_section("throughput", "\n".join(lines))


def _cpu_lines(r: Results, of_ceiling: float, on_gpu: bool) -> list[str]:
    """t1's CPU an image by process, (1) against (2), and (2) ÷ (1) taken apart by it."""
    servers = {name for _, e2e in r.t1_cpu for name in e2e} - {MODEL_PROCESSES, CLIENT}
    names = [MODEL_PROCESSES, *sorted(servers), CLIENT]
    labels = {
        MODEL_PROCESSES: f"the models' processes: (1)'s, (2)'s {r.processes} workers",
        CLIENT: "this bench: (1)'s coordinator, (2)'s client",
    }

    def cell(side: int, name: str) -> str:
        values = [both[side][name] for both in r.t1_cpu if name in both[side]]
        return f"{np.median(values):.2f}" if values else "—"

    totals = [(sum(c.values()), sum(e.values())) for c, e in r.t1_cpu]
    lines = [
        "CPU an image on t1 by process (user + system, psutil; Postgres with its backends),",
        "medians of the rounds:",
        "",
        "| process | (1) ceiling, ms an image | (2) end-to-end, ms an image |",
        "|---|---:|---:|",
        *[f"| {labels.get(n, n)} | {cell(0, n)} | {cell(1, n)} |" for n in names],
        f"| **all** | **{np.median([c for c, _ in totals]):.2f}** | "
        f"**{np.median([e for _, e in totals]):.2f}** |",
    ]
    if on_gpu:
        return lines  # the models' work is not on these CPUs: the split below is about CPUs
    # Images/s = cores × (share of them busy) ÷ (CPU an image), in (1) as in (2); so each
    # round's (2) ÷ (1) is exactly the product of the three factors below.
    rows = []
    for (ceiling_rate, e2e_rate), (_, e2e_cpu), (ceiling_all, e2e_all) in zip(
        r.t1_rates, r.t1_cpu, totals, strict=True
    ):
        busy = (e2e_rate * e2e_all) / (ceiling_rate * ceiling_all)
        share = e2e_cpu[MODEL_PROCESSES] / e2e_all
        models = ceiling_all / e2e_cpu[MODEL_PROCESSES]
        rows.append((e2e_rate / ceiling_rate, busy, share, models, ceiling_rate * ceiling_all))
    lines += [
        "",
        "(2) ÷ (1) of each t1 round, taken apart: images/s is the CPU the processes get over the",
        "CPU an image, so the ratio is (a) how busy (2) kept the cores against (1) (the measured",
        "processes' CPU a second: idle cores, or CPU taken by the kernel and the rest of the",
        "machine, lower it), times (b) the share of (2)'s CPU its workers got (the API, Postgres,",
        "Redis and the client take the rest), times (c) (1)'s CPU an image over (2)'s workers' (the",
        "workers' own plumbing, and the models' CPU an image moving from one measurement to the",
        "next: ±5% on this machine).",
        "",
        "| round | (2) ÷ (1) | (a) cores busy, (2) ÷ (1) | (b) workers' share of (2)'s CPU | "
        "(c) (1)'s CPU an image ÷ (2)'s workers' | (1) busy, of the cores |",
        "|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {n} | {ratio:.3f} | {busy:.3f} | {share:.3f} | {models:.3f} | "
            f"{used / 1000 / CORES:.2f} |"
            for n, (ratio, busy, share, models, used) in enumerate(rows, 1)
        ],
    ]
    busy = float(np.median([row[1] for row in rows]))
    share = float(np.median([row[2] for row in rows]))
    models = [row[3] for row in rows]
    lines += [
        "",
        f"What limits (2): (a) × (b), medians, is {busy * share:.3f}: what (2) ÷ (1) would be "
        "with the workers' own plumbing free and the models costing the same CPU an image in "
        f"both. (b), {share:.3f}, is what the API, Postgres, Redis and the client leave the "
        f"workers of the {CORES} cores they share in (2) and not in (1): steady from round to "
        "round. "
        "(c) is the rest: the workers' own plumbing (their CPU outside inference and decode, "
        "measured in a probe: see below) and the models' CPU an image moving between two "
        f"measurements ({min(models):.3f} to {max(models):.3f} in this run; above 1, the same "
        "models spent more CPU an image in (1): the machine, not the stack). So what the "
        f"design gives is (a) × (b) less the workers' plumbing, whatever the median of five "
        f"rounds; {OF_CEILING.text} needs (b) ≥ {OF_CEILING.threshold / busy:.3f} with "
        "nothing left to the workers' plumbing. The plumbing section's CPU table and profile "
        "say where that CPU goes on each job.",
    ]
    return lines


def _size_row(r: Results, size: str) -> str:
    ratios = r.size_ratios(size)
    median = float(np.median(ratios))
    target = SIZE_TARGETS.get(size)
    return (
        f"| {size} | {r.size_images[size]} | {np.median([c for c, _ in r.sizes[size]]):.1f} | "
        f"{np.median([e for _, e in r.sizes[size]]):.1f} | {median:.2f} | "
        f"{', '.join(f'{x:.2f}' for x in ratios)} | {max(ratios) - min(ratios):.2f} | "
        f"{target.cell(median) if target else ''} |"
    )


def _draw(figure, r: Results) -> None:  # type: ignore[no-untyped-def]
    left, right = figure.subplots(1, 2)
    names = ["ceiling", "end-to-end", "naive loop", "e2e 1 worker"]
    values = [r.ceiling, r.end_to_end, r.naive, r.e2e_one_worker]
    left.barh(names, values, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    left.set_xlabel("images/s (t1.jpg, faces)")
    left.invert_yaxis()
    sizes = list(r.sizes)
    positions = np.arange(len(sizes))
    ceilings = [float(np.median([c for c, _ in r.sizes[s]])) for s in sizes]
    e2e = [float(np.median([e for _, e in r.sizes[s]])) for s in sizes]
    right.bar(positions - 0.2, ceilings, 0.4, label="ceiling (median)")
    right.bar(positions + 0.2, e2e, 0.4, label="end-to-end (median)")
    right.set_xticks(positions, sizes)
    right.set_ylabel("images/s")
    right.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--images", type=int, default=160, help="images for (1) and (2)")
    parser.add_argument("--processes", type=int, default=CORES, help="worker processes")
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated")
    parser.add_argument("--rounds", type=int, default=SIZE_ROUNDS, help="rounds of the sizes")
    args = parser.parse_args(argv)
    providers = bench_providers(args.providers)
    print(run(args.images, processes=args.processes, providers=providers, rounds=args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
