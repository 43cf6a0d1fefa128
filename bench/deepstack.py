"""A detector loop on the DeepStack API: `/v1/vision/detection` driven the way Frigate drives it.

Frigate's `deepstack` detector (frigate/detectors/plugins/deepstack.py) posts each frame's
320×320 model input as a JPEG (PIL), `api_key` as a form field, with a 0.1 s timeout: every
frame that takes longer is a lost detection. This posts t1.jpg resized to 320×320 the same way,
one at a time (one camera) and 4 in flight (several cameras, or Frigate's detector threads),
against the real API and `lookout worker` processes, and reports p50/p99 against that 100 ms
budget next to the raw model time: YOLOX-Nano's detect() on the same frame in-process, one
thread (what the worker runs), and the inference time the worker recorded for those jobs.

`python -m bench.deepstack [--frames N] [--processes N] [--providers P,Q]`.
"""

import argparse
import io
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import requests
from PIL import Image
from tqdm import tqdm

from app.pixels import decode_image
from bench.harness import (
    CORES,
    SHARED,
    Target,
    bench_providers,
    effective_providers,
    load_average,
    machine,
    percentile_ms,
    save_plot,
    stack,
    wait_for_workers,
    write_section,
)
from bench.models import measure, settings_for
from workers.detectors.onnx import RuntimeOptions
from workers.detectors.registry import build_object_detector

MODELS_DIR = Path(os.environ.get("LOOKOUT_MODELS_DIR", SHARED / "models"))
BUDGET_MS = 100.0  # Frigate's default api_timeout, 0.1 s
P50 = Target("≤ 100 ms", BUDGET_MS, at_least=False)
P99 = Target("≤ 100 ms", BUDGET_MS, at_least=False)
IN_FLIGHT = 4


def frigate_frame() -> bytes:
    """t1.jpg as Frigate's detector sees a region: 320×320 RGB, saved by PIL as JPEG."""
    image = Image.open(SHARED / "images" / "scenes" / "t1.jpg").convert("RGB").resize((320, 320))
    with io.BytesIO() as output:
        image.save(output, format="JPEG")
        return output.getvalue()


@dataclass
class LoopResult:
    latency_s: list[float]
    persons: int  # persons in the last answer, to show the loop detects what it should

    @property
    def p50_ms(self) -> float:
        return percentile_ms(self.latency_s, 50)

    @property
    def p99_ms(self) -> float:
        return percentile_ms(self.latency_s, 99)

    @property
    def over_budget(self) -> float:
        return sum(s * 1000 > BUDGET_MS for s in self.latency_s) / len(self.latency_s)


@dataclass
class Results:
    frames: int
    processes: int
    providers: list[str]
    model_ms: float  # YOLOX-Nano detect() on the frame, in-process, median
    decode_ms: float  # the worker's decode of the JPEG, in-process, median
    worker_inference_ms: float  # the jobs' own inference_ms, median
    sequential: LoopResult
    in_flight: LoopResult


def post_frame(session: requests.Session, api_url: str, frame: bytes) -> tuple[float, int]:
    """Frigate's request (data={"api_key": …}, files={"image": …}); its 0.1 s timeout is not
    enforced here so that the slow frames are measured rather than lost."""
    started = time.perf_counter()
    response = session.post(api_url, data={"api_key": ""}, files={"image": frame}, timeout=30)
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or not body.get("success"):
        raise RuntimeError(f"a frame failed, the measurement is void: {body}")
    return elapsed, sum(p["label"] == "person" for p in body["predictions"])


def loop(api_url: str, frame: bytes, frames: int, in_flight: int) -> LoopResult:
    """`frames` frames, `in_flight` of them at a time (each thread one Frigate detector loop)."""
    samples: list[float] = []
    persons = 0
    progress = tqdm(total=frames, desc=f"deepstack detection, {in_flight} in flight", unit="frame")

    def camera(count: int) -> None:
        nonlocal persons
        with requests.Session() as session:
            for _ in range(count):
                elapsed, persons = post_frame(session, api_url, frame)
                samples.append(elapsed)
                progress.update()

    with ThreadPoolExecutor(in_flight) as pool:
        shares = [frames // in_flight + (i < frames % in_flight) for i in range(in_flight)]
        for done in [pool.submit(camera, share) for share in shares]:
            done.result()
    progress.close()
    return LoopResult(samples, persons)


def model_times(frame: bytes, providers: list[str]) -> tuple[float, float]:
    """Median ms of the worker's decode and of YOLOX-Nano's detect() on this frame, in-process,
    one thread: the floor under any request."""
    settings = settings_for(1)
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"providers": providers})}
    )
    detector = build_object_detector(settings, RuntimeOptions.from_settings(settings))
    decoded = decode_image(frame, max_pixels=50_000_000, target_side_px=2048)
    decode = measure(lambda: decode_image(frame, max_pixels=50_000_000, target_side_px=2048))
    model = measure(lambda: detector.detect([decoded.pixels]))
    return decode.median_ms, model.median_ms


def worker_inference_ms(base_url: str, jobs: int) -> float:
    """Median inference_ms the worker recorded for the last `jobs` jobs."""
    recorded: list[float] = []
    cursor = None
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while len(recorded) < jobs:
            params: dict[str, str | int] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/jobs", params=params).json()
            recorded += [j["timings"]["inference_ms"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    return statistics.median(v for v in recorded[:jobs] if v is not None)


def run(frames: int, *, processes: int, providers: list[str]) -> Results:
    frame = frigate_frame()
    decode_ms, model_ms = model_times(frame, providers)
    env = {
        "LOOKOUT_MODELS_DIR": str(MODELS_DIR),
        "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
        "LOOKOUT_MODELS__DOWNLOAD": "false",
        "LOOKOUT_MODELS__PROVIDERS": json.dumps(providers),
        "LOOKOUT_WORKER__THREADS": "1",
    }
    with stack(
        worker_command=["-m", "app.cli", "worker", "--processes", str(processes)],
        extra_env=env,
    ) as running:
        wait_for_workers(running, processes)
        api_url = f"{running.base_url}/v1/vision/detection"
        loop(api_url, frame, 10, 1)  # warm-up: connections, first jobs
        sequential = loop(api_url, frame, frames, 1)
        in_flight = loop(api_url, frame, frames, IN_FLIGHT)
        inference = worker_inference_ms(running.base_url, 2 * frames)
    return Results(
        frames, processes, providers, model_ms, decode_ms, inference, sequential, in_flight
    )


def report(r: Results, load_before: str, measured: str) -> None:
    plot = save_plot(
        "deepstack", "Frigate's detector loop on /v1/vision/detection", lambda f: _draw(f, r)
    )
    rows = []
    for name, result in (
        ("sequential (1 in flight)", r.sequential),
        (f"{IN_FLIGHT} in flight", r.in_flight),
    ):
        rows.append(
            f"| {name} | {result.p50_ms:.0f} ms | {P50.cell(result.p50_ms)} | "
            f"{result.p99_ms:.0f} ms | {P99.cell(result.p99_ms)} | {result.over_budget:.0%} |"
        )
    lines = [
        "## Frigate's detector loop on the DeepStack API (bench/deepstack.py)",
        "",
        f"Measured {measured}. `POST /v1/vision/detection` exactly as Frigate's `deepstack`",
        "detector sends it: a 320×320 JPEG of t1.jpg (PIL), `api_key` as a form field; each",
        "request is a job through the API, Postgres, Redis and a worker (task `objects`,",
        f"YOLOX-Nano), {r.processes} worker process(es) × 1 thread on "
        f"{', '.join(effective_providers(r.providers))}; {r.frames} frames per row.",
        "Frigate gives each frame 0.1 s (`api_timeout`); a slower answer is a lost detection.",
        "",
        *machine(r.providers),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| loop | p50 | p50 vs budget | p99 | p99 vs budget | frames over 100 ms |",
        "|---|---:|---|---:|---|---:|",
        *rows,
        "",
        "Beside it, the model alone on the same frame (medians):",
        "",
        "| | ms |",
        "|---|---:|",
        f"| YOLOX-Nano detect(), in-process, 1 thread (raw model) | {r.model_ms:.1f} |",
        f"| the worker's JPEG decode, in-process | {r.decode_ms:.1f} |",
        f"| inference_ms the worker recorded for these jobs | {r.worker_inference_ms:.1f} |",
        "",
        f"What Lookout adds to a frame (sequential p50 minus the worker's inference_ms): "
        f"{r.sequential.p50_ms - r.worker_inference_ms:.0f} ms; the rest is the model. "
        f"Persons in the last answer: {r.sequential.persons} (sequential), "
        f"{r.in_flight.persons} ({IN_FLIGHT} in flight).",
        *(
            [
                "",
                f"The load average was above the {CORES} cores (other work on this machine):",
                "the model alone ran slower than on a quiet machine, and every figure with it.",
            ]
            if os.getloadavg()[0] > CORES
            else []
        ),
        "",
        plot,
    ]
    write_section("deepstack", "\n".join(lines))


def _draw(figure, r: Results) -> None:  # type: ignore[no-untyped-def]
    axis = figure.add_subplot()
    for result, label in ((r.sequential, "sequential"), (r.in_flight, f"{IN_FLIGHT} in flight")):
        ms = np.sort(np.asarray(result.latency_s) * 1000)
        axis.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=label)
    axis.axvline(BUDGET_MS, color="red", linestyle=":", linewidth=1)
    axis.text(BUDGET_MS, 0.02, " Frigate's 0.1 s timeout", fontsize=7, color="red")
    axis.axvline(r.model_ms, color="grey", linestyle=":", linewidth=1)
    axis.text(r.model_ms, 0.9, " raw model", fontsize=7, color="grey")
    axis.set_xscale("log")
    axis.set_xlabel("request → answer, ms (log)")
    axis.set_ylabel("share of frames")
    axis.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deepstack", description=__doc__)
    parser.add_argument("--frames", type=int, default=200, help="frames per loop")
    parser.add_argument("--processes", type=int, default=CORES, help="worker processes")
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated")
    args = parser.parse_args(argv)
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    results = run(args.frames, processes=args.processes, providers=bench_providers(args.providers))
    report(results, load_before, measured)
    for name, result in (("sequential", results.sequential), ("in flight", results.in_flight)):
        print(f"{name}: p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms")
    print(f"raw model {results.model_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
