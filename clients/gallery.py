"""`lookout people enroll|import`: a client of a running API (enrollment needs the workers).

Reads people as {name: [photo paths]}. `enroll` creates each person (or reuses one of that
exact name) and enrolls their photos one request per person, all or nothing. `import` hands
the photos to the bulk enrollment (POST /v1/people/import) in parts that each fit one request,
one part queued ahead of the one running so the workers never wait, and draws the server's
own progress (GET /v1/people/imports/{id}) as one bar.
"""

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def people_in(directory: Path) -> dict[str, list[Path]]:
    """One sub-folder per person, named after them, holding their photos."""
    return {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(directory.iterdir())
        if folder.is_dir()
    }


async def enroll_people(
    client: httpx.AsyncClient, people: Mapping[str, Sequence[Path]], *, show_progress: bool = True
) -> list[str]:
    """Enroll every person's photos; returns one report line per person (errors included)."""
    lines = []
    bar = tqdm(total=sum(len(p) for p in people.values()), unit="photo", disable=not show_progress)
    try:
        for name, photos in people.items():
            person_id, created = await _person_named(client, name)
            files = [("images", (p.name, p.read_bytes())) for p in photos]
            response = await client.post(f"/v1/people/{person_id}/faces", files=files)
            bar.update(len(photos))
            body: dict[str, Any] = response.json()
            if response.status_code != 200 and created:
                # A refused enrollment leaves no empty person behind.
                await client.delete(f"/v1/people/{person_id}")
            if response.status_code == 200:
                lines.append(
                    f"ok    {name}: {len(body['enrolled'])} enrolled, "
                    f"{len(body['duplicates'])} duplicate(s)"
                )
            else:
                lines.append(f"error {name}: {body.get('detail', response.text)}")
    finally:
        bar.close()
    return lines


async def _person_named(client: httpx.AsyncClient, name: str) -> tuple[str, bool]:
    """(the id of the person called `name`, whether it was created just now)."""
    found = await client.get("/v1/people", params={"name": name, "limit": 100})
    found.raise_for_status()
    for person in found.json()["items"]:
        if person["name"] == name:
            return str(person["id"]), False
    created = await client.post("/v1/people", json={"name": name})
    created.raise_for_status()
    return str(created.json()["id"]), True


# One import request carries at most this many photo bytes (the server's default upload limit
# is 20 MiB, LOOKOUT_API__MAX_UPLOAD_BYTES) and photos.
PART_BYTES = 16 * 1024 * 1024
PART_PHOTOS = 500
POLL_S = 0.5


@dataclass
class ImportReport:
    photos: int = 0
    enrolled: int = 0
    duplicates: int = 0
    refused: int = 0
    people_created: int = 0
    problems: list[str] = field(default_factory=list)  # "person/photo.jpg: why"
    failures: list[str] = field(default_factory=list)  # parts that stopped, and why


def import_parts(
    people: Mapping[str, Sequence[Path]],
    *,
    part_bytes: int = PART_BYTES,
    part_photos: int = PART_PHOTOS,
) -> list[list[tuple[str, Path]]]:
    """(person, photo) in parts of at most part_bytes and part_photos (a larger photo alone)."""
    parts: list[list[tuple[str, Path]]] = [[]]
    size = 0
    for name, photos in people.items():
        for photo in photos:
            length = photo.stat().st_size
            if parts[-1] and (size + length > part_bytes or len(parts[-1]) >= part_photos):
                parts.append([])
                size = 0
            parts[-1].append((name, photo))
            size += length
    return [part for part in parts if part]


async def import_people(
    client: httpx.AsyncClient,
    people: Mapping[str, Sequence[Path]],
    *,
    part_bytes: int = PART_BYTES,
    show_progress: bool = True,
    poll_s: float = POLL_S,
) -> ImportReport:
    """Import every photo (`people`: name → photos); the server's counts, summed over parts.

    Raises httpx.HTTPStatusError when the server refuses a part (the photos of earlier parts
    stay enrolled: importing again reports them as duplicates, it never stores them twice).
    """
    parts = import_parts(people, part_bytes=part_bytes)
    report = ImportReport(photos=sum(len(p) for p in parts))
    bar = tqdm(total=report.photos, unit="photo", disable=not show_progress)
    running: deque[str] = deque()  # status URLs, oldest first
    done_before = 0  # photos of the parts already finished
    try:
        for part in parts:
            running.append(await _send_part(client, part))
            while len(running) > 1:  # one part queued ahead of the one running
                done_before += await _follow(
                    client, running.popleft(), report, bar, done_before, poll_s
                )
        while running:
            done_before += await _follow(
                client, running.popleft(), report, bar, done_before, poll_s
            )
    finally:
        bar.close()
    return report


async def _send_part(client: httpx.AsyncClient, part: list[tuple[str, Path]]) -> str:
    files = [("images", (f"{name}/{photo.name}", photo.read_bytes())) for name, photo in part]
    response = await client.post("/v1/people/import", files=files)
    response.raise_for_status()
    return str(response.json()["status_url"])


async def _follow(
    client: httpx.AsyncClient,
    status_url: str,
    report: ImportReport,
    bar: Any,
    done_before: int,
    poll_s: float,
) -> int:
    """Poll one part to its end, moving the bar; add its counts to the report. Returns its
    photo count."""
    while True:
        response = await client.get(status_url)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        bar.update(done_before + body["processed"] - bar.n)
        if body["status"] in ("done", "failed"):
            break
        await asyncio.sleep(poll_s)
    report.enrolled += body["enrolled"]
    report.duplicates += body["duplicates"]
    report.refused += body["refused"]
    report.people_created += body["people_created"]
    report.problems += [f"{p['photo']}: {p['reason']}" for p in body["problems"]]
    if body["status"] == "failed":
        report.failures.append(str(body.get("error")))
    bar.update(done_before + body["total"] - bar.n)
    return int(body["total"])
