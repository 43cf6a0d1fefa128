"""`lookout people enroll|import`: a client of a running API (enrollment needs the workers).

Reads people as {name: [photo paths]}; creates each person (or reuses one of that exact name)
and enrolls their photos one request per person, with a progress bar.
"""

from collections.abc import Mapping, Sequence
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
