"""Model runtime throughput on this machine: raw model runs, packs on real photos, batching.

Run with `make bench` (all benches) or `python -m bench.models [--providers P,Q]`. Prints each
figure as it is measured and writes bench/RESULTS.md (a table and a plot, with the machine
described). Needs LOOKOUT_MODELS_DIR pointing at the verified models (../shared/models) and
../shared/images.

What is measured:
- raw: onnxruntime session.run on a fixed, preprocessed input (no decode, no pre/post-processing),
  1 and 2 intra-op threads;
- embedder batch 1 vs 8: per-face throughput of one call per face against one call per 8 faces;
- packs: each detector end to end on real photos (letterbox, run, decode/NMS, alignment);
- text: the `text` task (PP-OCR det + angle cls + rec, pack ppocr_v4 from the rapidocr wheel)
  on skimage's page.png and on t1.jpg, the same through Tesseract where it is installed, and the
  `plates` task (YOLOX vehicles, then PP-OCR in each) on dog.jpg with a composited plate;
- pipeline: decode + faces + objects + QR + render, batch of 1 vs run_batch of 8 images;
- processes × threads: the full faces+objects pipeline in 1 process × 2 threads against
  2 processes × 1 thread (what the worker defaults to), on all cores at once;
- embedding margin: the embedder's cosine similarity on every (train, test) pair of faces in
  ../shared/images/faces: the lowest same-person score against the highest different-person one.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage
from tqdm import tqdm

from app.embedders import MOBILEFACENET_SPEC
from app.pixels import decode_image
from app.settings import ModelSettings, Settings, WorkerSettings
from bench.harness import (
    bench_providers,
    load_average,
    machine,
    save_plot,
    write_section,
)
from tests.images import dog_with_plate
from tests.labelled_faces import PairScores, labelled_faces, pair_scores
from workers.detectors.base import Detector
from workers.detectors.face import Embedder, FaceDetector
from workers.detectors.onnx import OnnxModel, RuntimeOptions
from workers.detectors.registry import build_detectors
from workers.detectors.text import TesseractConfig, TesseractEngine, TextDetector
from workers.pipeline import run_batch

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO.parent / "shared" / "images"
MAX_PIXELS = 50_000_000
# Each figure: runs for at least this long after warm-up (and at least MIN_RUNS runs).
MEASURE_S = 2.0
MIN_RUNS = 5
# onnxruntime providers for every model here: main sets them from --providers or
# LOOKOUT_BENCH_PROVIDERS (bench/harness.py).
PROVIDERS: list[str] = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Timing:
    best_ms: float  # fastest run: the least disturbed by other load on the machine
    median_ms: float


@dataclass(frozen=True)
class Row:
    what: str
    setting: str
    timing: Timing
    items_per_call: int
    unit: str  # what one item is: image, face, run

    @property
    def ms_per_call(self) -> float:
        return self.timing.best_ms

    @property
    def items_per_s(self) -> float:
        return self.items_per_call * 1000 / self.timing.best_ms


def measure(call: Callable[[], object]) -> Timing:
    """Best and median wall-clock ms of one call, after two warm-up calls."""
    call()
    call()
    timings = []
    started = time.perf_counter()
    while len(timings) < MIN_RUNS or time.perf_counter() - started < MEASURE_S:
        begin = time.perf_counter()
        call()
        timings.append((time.perf_counter() - begin) * 1000)
    return Timing(min(timings), statistics.median(timings))


def settings_for(threads: int) -> Settings:
    models_dir = Path(os.environ.get("LOOKOUT_MODELS_DIR", REPO.parent / "shared" / "models"))
    return Settings(
        models_dir=models_dir,
        data_dir=REPO / ".lookout" / "bench",
        worker=WorkerSettings(threads=threads),
        models=ModelSettings(
            face_pack="scrfd_mobilefacenet", object_pack="yolox_nano", providers=PROVIDERS
        ),
    )


def image(relative: str) -> np.ndarray:
    return decode_image(
        (IMAGES / relative).read_bytes(), max_pixels=MAX_PIXELS, target_side_px=2048
    ).pixels


def t1_with_qr() -> np.ndarray:
    picture = image("scenes/t1.jpg").copy()
    code = cv2.QRCodeEncoder.create().encode("https://lookout.example/bench")
    code = cv2.resize(code, None, fx=6, fy=6, interpolation=cv2.INTER_NEAREST)
    code = cv2.copyMakeBorder(code, 24, 24, 24, 24, cv2.BORDER_CONSTANT, value=255)
    picture[40 : 40 + code.shape[0], 480 : 480 + code.shape[1]] = code[..., None]
    return picture


def report(rows: list[Row], row: Row) -> None:
    rows.append(row)
    tqdm.write(
        f"{row.what:<44} {row.setting:<20} best {row.timing.best_ms:8.2f} ms "
        f"(median {row.timing.median_ms:8.2f})  {row.items_per_s:7.1f} {row.unit}/s"
    )


def raw_models(rows: list[Row], models_dir: Path) -> None:
    shapes = {
        "det_500m.onnx": (1, 3, 640, 640),
        "det_2.5g.onnx": (1, 3, 640, 640),
        "yolox_nano.onnx": (1, 3, 416, 416),
    }
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(8)]
    for threads in (1, 2):
        options = RuntimeOptions(intra_op_threads=threads, providers=tuple(PROVIDERS))
        for name, shape in shapes.items():
            path = models_dir / name
            if not path.is_file():
                tqdm.write(f"skip {name}: not in {models_dir}")
                continue
            model = OnnxModel(path, options)
            blob = rng.uniform(-1, 1, shape).astype(np.float32)
            ms = measure(lambda m=model, b=blob: m.run(b))
            report(rows, Row(f"raw {name} {shape[2]}px", f"{threads} thread(s)", ms, 1, "run"))
        embedder = Embedder(
            MOBILEFACENET_SPEC, OnnxModel(models_dir / "mobilefacenet.onnx", options)
        )
        ms_single = measure(lambda e=embedder: [e.embed([c]) for c in crops])
        ms_batched = measure(lambda e=embedder: e.embed(crops))
        setting = f"{threads} thread(s)"
        report(rows, Row("embedder (stand-in) 8 faces, batch 1", setting, ms_single, 8, "face"))
        report(rows, Row("embedder (stand-in) 8 faces, batch 8", setting, ms_batched, 8, "face"))


def packs(rows: list[Row], detectors: dict[str, Detector], setting: str) -> None:
    t1, dog, qr = image("scenes/t1.jpg"), image("scenes/dog.jpg"), t1_with_qr()
    faces = detectors["faces"]
    assert isinstance(faces, FaceDetector)
    report(
        rows,
        Row(
            "pack scrfd_mobilefacenet on t1 (6 faces)",
            setting,
            measure(lambda: faces.detect([t1])),
            1,
            "image",
        ),
    )
    report(
        rows,
        Row(
            "  SCRFD det_500m alone on t1",
            setting,
            measure(lambda: faces.find_faces(t1)),
            1,
            "image",
        ),
    )
    eight = [t1] * 8
    report(
        rows,
        Row(
            "pack scrfd_mobilefacenet 8×t1, 8 calls",
            setting,
            measure(lambda: [faces.detect([i]) for i in eight]),
            8,
            "image",
        ),
    )
    report(
        rows,
        Row(
            "pack scrfd_mobilefacenet 8×t1, one call",
            setting,
            measure(lambda: faces.detect(eight)),
            8,
            "image",
        ),
    )
    # The same one call, its 48 faces embedded in chunks of 8 and of 1
    # (LOOKOUT_FACES__MAX_EMBED_BATCH), against the default single embedder call.
    default_chunk = faces.config.max_embed_batch
    for chunk in (8, 1):
        faces.config = faces.config.model_copy(update={"max_embed_batch": chunk})
        report(
            rows,
            Row(
                f"pack scrfd_mobilefacenet 8×t1, one call, embed chunks of {chunk}",
                setting,
                measure(lambda: faces.detect(eight)),
                8,
                "image",
            ),
        )
    faces.config = faces.config.model_copy(update={"max_embed_batch": default_chunk})
    objects = detectors["objects"]
    report(
        rows,
        Row("pack yolox_nano on t1", setting, measure(lambda: objects.detect([t1])), 1, "image"),
    )
    report(
        rows,
        Row("pack yolox_nano on dog", setting, measure(lambda: objects.detect([dog])), 1, "image"),
    )
    qr_detector = detectors["qr"]
    report(
        rows,
        Row(
            "qr (OpenCV ArUco-based) on t1 + code",
            setting,
            measure(lambda: qr_detector.detect([qr])),
            1,
            "image",
        ),
    )


def text(rows: list[Row], detectors: dict[str, Detector], setting: str, threads: int) -> None:
    page = decode_image(
        (Path(skimage.__file__).parent / "data" / "page.png").read_bytes(),
        max_pixels=MAX_PIXELS,
        target_side_px=2048,
    ).pixels
    t1 = image("scenes/t1.jpg")
    reader = detectors["text"]
    regions = len(reader.detect([page])[0])
    for name, picture, what in (
        ("page.png 384×191", page, f"{regions} lines"),
        ("t1.jpg 1280×886", t1, "no text"),
    ):
        report(
            rows,
            Row(
                f"text ppocr_v4 (det+cls+rec) on {name}, {what}",
                setting,
                measure(lambda p=picture: reader.detect([p])),
                1,
                "image",
            ),
        )
    try:
        tesseract = TextDetector(TesseractEngine(TesseractConfig(threads=threads)))
    except RuntimeError as exc:
        tqdm.write(f"skip tesseract: {exc}")
    else:
        report(
            rows,
            Row(
                "text tesseract (eng) on page.png 384×191",
                setting,
                measure(lambda: tesseract.detect([page])),
                1,
                "image",
            ),
        )
    plates = detectors["plates"]
    scene = dog_with_plate(IMAGES)
    report(
        rows,
        Row(
            "plates (yolox_nano + ppocr_v4) on dog + a plate",
            setting,
            measure(lambda: plates.detect([scene])),
            1,
            "image",
        ),
    )


def pipelines(rows: list[Row], detectors: dict[str, Detector], setting: str) -> None:
    data = (IMAGES / "scenes" / "t1.jpg").read_bytes()
    tasks = ("faces", "objects", "qr")

    def one_by_one() -> None:
        for _ in range(8):
            decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
            run_batch([decoded], [tasks], detectors)

    def batched() -> None:
        decoded = [decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048) for _ in range(8)]
        run_batch(decoded, [tasks] * 8, detectors)

    report(
        rows, Row("pipeline t1 all tasks, 8 × batch of 1", setting, measure(one_by_one), 8, "image")
    )
    report(
        rows, Row("pipeline t1 all tasks, 1 × batch of 8", setting, measure(batched), 8, "image")
    )


def decoding(rows: list[Row]) -> None:
    data = (IMAGES / "scenes" / "t1.jpg").read_bytes()
    report(
        rows,
        Row(
            "decode t1.jpg 1280×886",
            "-",
            measure(lambda: decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)),
            1,
            "image",
        ),
    )
    big = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (5120, 3544))
    big_jpeg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    report(
        rows,
        Row(
            "decode 5120×3544 JPEG, full size",
            "target 8192 px",
            measure(lambda: decode_image(big_jpeg, max_pixels=MAX_PIXELS, target_side_px=8192)),
            1,
            "image",
        ),
    )
    report(
        rows,
        Row(
            "decode 5120×3544 JPEG, at 1/2 scale",
            "target 2048 px",
            measure(lambda: decode_image(big_jpeg, max_pixels=MAX_PIXELS, target_side_px=2048)),
            1,
            "image",
        ),
    )


def _process_worker(
    threads: int, images: int, providers: list[str], ready: "multiprocessing.Queue[float]"
) -> None:
    PROVIDERS[:] = providers  # a spawned process starts from the module's defaults
    detectors = build_detectors(settings_for(threads))
    data = (IMAGES / "scenes" / "t1.jpg").read_bytes()
    decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
    run_batch([decoded] * 4, [("faces", "objects")] * 4, detectors)  # warm
    started = time.perf_counter()
    for _ in range(images // 4):
        decoded = decode_image(data, max_pixels=MAX_PIXELS, target_side_px=2048)
        run_batch([decoded] * 4, [("faces", "objects")] * 4, detectors)
    ready.put(time.perf_counter() - started)


def processes_by_threads(rows: list[Row]) -> None:
    """Aggregate images/s with every core busy: 1 process × 2 threads vs 2 processes × 1."""
    context = multiprocessing.get_context("spawn")
    images_per_process = 48
    for processes, threads in ((1, 2), (2, 1)):
        queue: multiprocessing.Queue[float] = context.Queue()
        children = [
            context.Process(
                target=_process_worker, args=(threads, images_per_process, PROVIDERS, queue)
            )
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        elapsed_s = max(queue.get() for _ in children)
        for child in children:
            child.join()
        total = processes * images_per_process
        # One timing per configuration: the slowest process's wall time for all its images.
        elapsed = Timing(elapsed_s * 1000, elapsed_s * 1000)
        what = "pipeline faces+objects t1, batches of 4"
        report(rows, Row(what, f"{processes} proc × {threads} thread", elapsed, total, "image"))


def embedding_margin(detectors: dict[str, Detector]) -> tuple[str, PairScores]:
    """The embedder's name and its scores on every (train, test) pair of labelled faces."""
    faces = detectors["faces"]
    assert isinstance(faces, FaceDetector)
    return faces.embedder.spec.model, pair_scores(labelled_faces(faces))


def write_results(
    rows: list[Row], margin: tuple[str, PairScores], started: str, load_before: str
) -> None:
    model, scores = margin
    lines = [
        "## Model runtime (bench/models.py)",
        "",
        f"Measured {started} by `make bench` (bench/models.py). Each figure: calls repeated",
        f"for {MEASURE_S:g} s after two warm-up calls; throughput is computed from the best",
        "(fastest) call, the median is shown beside it. Not a timed test.",
        "",
        "Machine:",
        *machine(PROVIDERS),
        f"- Load average before the run {load_before}, after {load_average()}: other work on",
        "  the machine slows the median most; the best-of figures are the more repeatable.",
        "",
        "Models: the verified files in ../shared/models. The production ArcFace (w600k_mbf,",
        "512-d) and genderage weights are not on this machine, so the embedder rows use the",
        "192-d MobileFaceNet stand-in through the same Embedder code path (one configuration of",
        "it); ArcFace's own speed is not measured here. Text: PP-OCRv4 det + rec and the",
        "mobile angle classifier, the ONNX files of the rapidocr-onnxruntime 1.4.4 wheel (pack",
        "ppocr_v4), through the same onnxruntime sessions and thread settings.",
        "",
        "| what | setting | best ms per call | median ms | throughput (best) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {row.setting} | {row.timing.best_ms:.2f} | "
            f"{row.timing.median_ms:.2f} | {row.items_per_s:.1f} {row.unit}/s |"
        )
    by_name = {(r.what, r.setting): r for r in rows}
    notes = []
    for threads in (1, 2):
        single = by_name.get(("embedder (stand-in) 8 faces, batch 1", f"{threads} thread(s)"))
        batched = by_name.get(("embedder (stand-in) 8 faces, batch 8", f"{threads} thread(s)"))
        if single and batched:
            notes.append(
                f"- Embedder, {threads} thread(s): batch 8 is "
                f"{single.ms_per_call / batched.ms_per_call:.2f}× the per-face throughput of "
                "batch 1."
            )
    one = by_name.get(("pipeline t1 all tasks, 8 × batch of 1", "1 thread(s)"))
    eight = by_name.get(("pipeline t1 all tasks, 1 × batch of 8", "1 thread(s)"))
    if one and eight:
        notes.append(
            f"- Full pipeline on t1 (1 thread): a batch of 8 runs at "
            f"{one.ms_per_call / eight.ms_per_call:.2f}× the throughput of 8 batches of 1."
        )
    for threads in (1, 2):
        setting = f"{threads} thread(s)"
        whole = by_name.get(("pack scrfd_mobilefacenet 8×t1, one call", setting))
        chunked = by_name.get(
            ("pack scrfd_mobilefacenet 8×t1, one call, embed chunks of 1", setting)
        )
        if whole and chunked:
            notes.append(
                f"- Face pack on 8×t1 (48 faces), {setting}: embedding them one per call runs "
                f"at {whole.ms_per_call / chunked.ms_per_call:.2f}× the throughput of one "
                "48-face call."
            )
    for threads in (1, 2):
        setting = f"{threads} thread(s)"
        ppocr = next(
            (
                r
                for r in rows
                if r.what.startswith("text ppocr_v4")
                and "page.png" in r.what
                and r.setting == setting
            ),
            None,
        )
        tesseract = by_name.get(("text tesseract (eng) on page.png 384×191", setting))
        if ppocr and tesseract:
            notes.append(
                f"- Text on page.png, {setting}: PP-OCR takes {ppocr.ms_per_call:.0f} ms, "
                f"Tesseract {tesseract.ms_per_call:.0f} ms "
                f"({ppocr.ms_per_call / tesseract.ms_per_call:.2f}× Tesseract's time)."
            )
    procs = [r for r in rows if r.what.startswith("pipeline faces+objects")]
    if len(procs) == 2:
        notes.append(
            f"- All cores busy: {procs[1].setting} gives {procs[1].items_per_s:.1f} images/s, "
            f"{procs[0].setting} {procs[0].items_per_s:.1f} "
            f"({procs[1].items_per_s / procs[0].items_per_s:.2f}×)."
        )
    margin_lines = [
        "Embedding margin (issue 3): the embedder's cosine similarity for every pair of a train",
        "photo and a test face in ../shared/images/faces (same pairing as",
        "tests/workers/detectors/test_face.py, from tests/labelled_faces.py). A positive margin",
        "means one threshold separates every same-person pair from every different-person pair.",
        "",
        "| embedder | same-person pairs | lowest same-person | different-person pairs "
        "| highest different-person | margin |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {model} | {len(scores.same)} | {min(scores.same):.3f} | {len(scores.different)} "
        f"| {max(scores.different):.3f} | {scores.margin:.3f} |",
    ]
    plot = save_plot(
        "models",
        "Model runtime: throughput of each figure (best call)",
        lambda figure: _draw(figure, rows),
        size=(10.0, 1.5 + 0.22 * len(rows)),
    )
    write_section(
        "models", "\n".join([*lines, "", plot, "", "Ratios:", *notes, "", *margin_lines, ""])
    )


def _draw(figure, rows: list[Row]) -> None:  # type: ignore[no-untyped-def]
    axis = figure.add_subplot()
    colours = {"run": "#8172b2", "face": "#c44e52", "image": "#4c72b0"}
    labels = [f"{r.what.strip()} · {r.setting}" for r in rows]
    axis.barh(labels, [r.items_per_s for r in rows], color=[colours[r.unit] for r in rows])
    axis.set_xscale("log")
    axis.set_xlabel("items/s, log scale (purple: raw runs, red: faces, blue: images)")
    axis.tick_params(axis="y", labelsize=7)
    axis.invert_yaxis()


def main(argv: list[str] | None = None) -> int:
    global MEASURE_S
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated")
    parser.add_argument("--measure-s", type=float, default=MEASURE_S, help="seconds per figure")
    args = parser.parse_args(argv)
    PROVIDERS[:] = bench_providers(args.providers)
    MEASURE_S = args.measure_s
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    rows: list[Row] = []
    settings = settings_for(1)
    assert settings.models_dir is not None
    models_dir = settings.models_dir
    print("\n".join(machine(PROVIDERS)))
    margins: list[tuple[str, PairScores]] = []

    def by_threads(threads: int) -> None:
        detectors = build_detectors(settings_for(threads))
        packs(rows, detectors, f"{threads} thread(s)")
        text(rows, detectors, f"{threads} thread(s)", threads)
        pipelines(rows, detectors, f"{threads} thread(s)")
        if threads == 1:
            margins.append(embedding_margin(detectors))

    phases: list[tuple[str, Callable[[], None]]] = [
        ("raw models", lambda: raw_models(rows, models_dir)),
        ("packs + pipelines + embedding margin, 1 thread", lambda: by_threads(1)),
        ("packs + pipelines, 2 threads", lambda: by_threads(2)),
        ("decoding", lambda: decoding(rows)),
        ("processes × threads", lambda: processes_by_threads(rows)),
    ]
    with tqdm(phases, desc="models", unit="phase") as progress:
        for name, phase in progress:
            progress.set_postfix_str(name)
            phase()
    write_results(rows, margins[0], started, load_before)
    model, scores = margins[0]
    print(f"embedding margin ({model}): {scores.margin:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
