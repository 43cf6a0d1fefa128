"""The gallery's index (app/gallery/index.py, `lookout gallery reindex`): parameters by gallery
size, a rebuild beside the live index that identify keeps using, and one that recovers from an
interrupted rebuild."""

import asyncio
import subprocess
import sys

from sqlalchemy import text

from app.gallery.index import IndexParameters, index_parameters, rebuild_index
from app.gallery.matching import nearest_people
from app.settings import GallerySettings
from app.vectors import gallery_index_name
from tests.app.gallery.test_matching import add_person, unit_vectors
from tests.processes import lookout_env

INDEX = gallery_index_name("mobilefacenet")


def test_larger_galleries_get_a_larger_graph_unless_the_settings_say():
    small, large = index_parameters(10_000), index_parameters(1_000_000)
    assert large.m > small.m and large.ef_construction > small.ef_construction
    assert index_parameters(0) == small
    fixed = GallerySettings(index_m=12, index_ef_construction=40)
    assert index_parameters(1_000_000, fixed) == IndexParameters(m=12, ef_construction=40)


async def index_definition(engine) -> str:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return str(
            await connection.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": INDEX}
            )
        )


async def test_a_rebuild_swaps_in_a_valid_index_with_the_parameters_for_the_size(
    engine, sessionmaker
):
    vectors = unit_vectors(30, 60, 192)
    async with sessionmaker.begin() as session:
        ada, _ = await add_person(session, "ada", "mobilefacenet", vectors)
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        # An earlier rebuild that died mid-way left its half-built index behind.
        await autocommit.execute(
            text(f"CREATE INDEX {INDEX}_rebuild ON person_faces (id) WHERE model = 'mobilefacenet'")
        )
        rebuilt = await rebuild_index(autocommit, "mobilefacenet", memory_mb=64, workers=0)
    parameters = index_parameters(60)
    assert (rebuilt.faces, rebuilt.parameters) == (60, parameters)
    assert rebuilt.in_memory and rebuilt.index_bytes > 0
    definition = await index_definition(engine)
    assert "hnsw" in definition and "bit_hamming_ops" in definition
    assert f"m='{parameters.m}'" in definition
    assert f"ef_construction='{parameters.ef_construction}'" in definition
    async with engine.connect() as connection:
        names = {
            row[0]
            for row in await connection.execute(
                text("SELECT indexname FROM pg_indexes WHERE indexname IN (:name, :rebuild)"),
                {"name": INDEX, "rebuild": f"{INDEX}_rebuild"},
            )
        }
        valid = await connection.scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = CAST(:name AS regclass)"),
            {"name": INDEX},
        )
    assert names == {INDEX} and valid
    async with sessionmaker() as session:
        found = await nearest_people(session, vectors[3], model="mobilefacenet", owner_id=None)
        assert [m.person_id for m in found] == [ada.id]


async def test_lookout_gallery_reindex_says_what_it_built(settings, sessionmaker, engine):
    async with sessionmaker.begin() as session:
        await add_person(session, "ada", "mobilefacenet", unit_vectors(31, 20, 192))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "gallery", "reindex"],
        env=lookout_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    parameters = index_parameters(20)
    assert (
        "mobilefacenet: 20 faces indexed in" in result.stdout
        and f"(m={parameters.m}, ef_construction={parameters.ef_construction}" in result.stdout
        and "graph in memory" in result.stdout
    ), result.stdout
    assert f"m='{parameters.m}'" in await index_definition(engine)
    unknown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "gallery", "reindex", "--model", "nope"],
        env=lookout_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1 and unknown.stderr.startswith("lookout: no embedding model")
