"""Bulk enrollment end to end: `lookout people import` (clients/gallery.py) against a real API and
worker processes, with the real models, on photos made from the shared faces.

`python -m bench.people_import [PHOTOS]` (default 600). The shared single-face photos
(../shared/images/faces: 9 train + 2 test) are varied (mirrored, scaled, brightened, turned a
few degrees) into PHOTOS different files, each in a folder of its own (so each is a person, and
none is refused as a near-duplicate), then imported through POST /v1/people/import by the same
client code `lookout people import DIR` runs: detection, embedding and quality checks in the
workers (one process per core), one transaction per batch in the API. Reports photos/s and
faces enrolled/s from the first request to the last import's end, and the target of issue 18
(≥ 20 faces/s on 2 cores). Writes the "Bulk enrollment" section of bench/RESULTS.md.
"""

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from bench.harness import (
    CORES,
    SHARED,
    Target,
    load_average,
    machine,
    stack,
    stack_dir,
    wait_for_workers,
    write_section,
)
from clients.gallery import ImportReport, import_people

DEFAULT_PHOTOS = 600
FACES = SHARED / "images" / "faces"
MODELS_DIR = SHARED / "models"
TARGET = Target("≥ 20 faces/s", 20.0, at_least=True)


def source_photos() -> list[Path]:
    """The shared photos that show exactly one face."""
    tests = [FACES / "test" / "obama1.jpg", FACES / "test" / "alex_lacamoire1.jpg"]
    return [*sorted(FACES.glob("train/*/*")), *tests]


def variants(count: int, folder: Path) -> dict[str, list[Path]]:
    """`count` photos, each a small variation of a shared one, each in its own person folder."""
    sources = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in source_photos()]
    rng = np.random.default_rng(0)
    people: dict[str, list[Path]] = {}
    for index in range(count):
        image = sources[index % len(sources)]
        if (index // len(sources)) % 2:
            image = cv2.flip(image, 1)
        height, width = image.shape[:2]
        angle, scale = rng.uniform(-6, 6), rng.uniform(0.75, 1.1)
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        image = cv2.warpAffine(image, turn, (width, height), borderMode=cv2.BORDER_REFLECT)
        image = cv2.convertScaleAbs(image, alpha=rng.uniform(0.85, 1.15), beta=rng.uniform(-15, 15))
        name = f"person {index:04d}"
        (folder / name).mkdir(parents=True)
        path = folder / name / "photo.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        people[name] = [path]
    return people


@dataclass(frozen=True)
class Result:
    photos: int
    seconds: float
    report: ImportReport
    processes: int

    @property
    def photos_s(self) -> float:
        return self.photos / self.seconds

    @property
    def faces_s(self) -> float:
        return self.report.enrolled / self.seconds


def measure(photos: int) -> Result:
    processes = CORES
    env = {
        "LOOKOUT_MODELS_DIR": str(MODELS_DIR),
        "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
        "LOOKOUT_MODELS__DOWNLOAD": "false",
        "LOOKOUT_MODELS__PROVIDERS": json.dumps(["CPUExecutionProvider"]),
        "LOOKOUT_WORKER__THREADS": "1",
    }
    with stack_dir("lookout-bench-import-") as tmp:  # its photos, removed at exit as a stack's
        people = variants(photos, Path(tmp) / "photos")
        with stack(
            worker_command=["-m", "app.cli", "worker", "--processes", str(processes)],
            extra_env=env,
        ) as running:
            wait_for_workers(running, processes)

            async def run() -> tuple[float, ImportReport]:
                async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as client:
                    started = time.perf_counter()
                    report = await import_people(client, people)
                    return time.perf_counter() - started, report

            seconds, report = asyncio.run(run())
    return Result(photos, seconds, report, processes)


def write_results(r: Result, measured: str, load_before: str) -> None:
    lines = [
        "## Bulk enrollment (bench/people_import.py)",
        "",
        f"Measured {measured}. `lookout people import`'s client code (clients/gallery.py) against "
        "a real API and",
        f"{r.processes} worker processes (one per core; the MobileFaceNet stand-in pack), "
        "embedded Postgres + Redis:",
        f"{r.photos} photos varied from the shared single-face photos, one person folder each, "
        "sent as imports of",
        "≤ 16 MiB (POST /v1/people/import), the next queued while one runs; timed from the first "
        "request to the last import's end.",
        "",
        *machine(["CPUExecutionProvider"]),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| photos | seconds | photos/s | faces enrolled | faces enrolled/s | refused | target |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {r.photos} | {r.seconds:.1f} | {r.photos_s:.1f} | {r.report.enrolled} | "
        f"{r.faces_s:.1f} | {r.report.refused} | {TARGET.cell(r.faces_s)} |",
    ]
    if r.report.problems:
        lines += ["", "Refused: " + "; ".join(r.report.problems[:5])]
    write_section("people_import", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    photos = int(args[0]) if args else DEFAULT_PHOTOS
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    result = measure(photos)
    print(result, flush=True)
    write_results(result, measured, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
