"""Model packs: the manifest, resolution order, and verified atomic downloads.

Downloads are exercised against a real HTTP server on 127.0.0.1 serving files from a temp dir
(no internet here), through `models.mirror_url`, the same code path as an upstream download.
"""

import functools
import hashlib
import http.server
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import ModelSettings, Settings
from workers.cli import models_command
from workers.models import (
    DET_500M,
    MOBILEFACENET,
    PACKS,
    YOLOX_NANO,
    ChecksumMismatch,
    FacePack,
    ModelFile,
    ModelNotFound,
    ObjectPack,
    TextPack,
    download_models,
    resolve_files,
    resolve_model,
    resolve_pack,
)

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class CountingHandler(QuietHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        CountingHandler.requests.append(self.path)
        super().do_GET()


class TruncatingHandler(QuietHandler):
    """Promises the whole file, sends half, hangs up: a connection lost mid-download."""

    def do_GET(self) -> None:
        body = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "mirror"
    root.mkdir()
    yield from _serve(root, QuietHandler)


def _serve(root: Path, handler: type) -> Iterator[tuple[str, Path]]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def offline_settings(settings: Settings, tmp_path: Path, **models: object) -> Settings:
    """Settings with an empty cache under tmp_path and no LOOKOUT_MODELS_DIR."""
    return settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "models_dir": None,
            "models": ModelSettings(**{"download": True, "download_timeout_s": 5, **models}),
        }
    )


def cache_files(settings: Settings) -> list[str]:
    cache = settings.models_cache_dir
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_every_pack_pins_sha256_license_and_upstream_source():
    assert {"buffalo_sc", "buffalo_l", "scrfd_mobilefacenet", "yolox_nano", "yolox_s"} <= set(PACKS)
    for pack in PACKS.values():
        for model in pack.files:
            assert SHA256.match(model.sha256), model.name
            assert model.license
            if model.wheel is not None:  # shipped in a wheel the install step puts in
                assert model.url is None and model.wheel[0] == "rapidocr-onnxruntime"
            elif model is not MOBILEFACENET:  # the stand-in has no public release (MODELS.md)
                assert model.url is not None and model.url.startswith("https://github.com/")
    buffalo_sc = PACKS["buffalo_sc"]
    assert isinstance(buffalo_sc, FacePack)
    assert [f.name for f in buffalo_sc.files] == ["det_500m.onnx", "w600k_mbf.onnx"]
    assert buffalo_sc.embedder_spec.dim == 512 and buffalo_sc.embedder_spec.layout == "NCHW"
    buffalo_l = PACKS["buffalo_l"]
    assert isinstance(buffalo_l, FacePack) and buffalo_l.genderage is not None
    assert {"det_10g.onnx", "genderage.onnx", "2d106det.onnx"} <= {f.name for f in buffalo_l.files}
    assert isinstance(PACKS["yolox_s"], ObjectPack) and PACKS["yolox_s"].input_size_px == 640


def test_the_text_pack_comes_verified_from_the_installed_wheel(settings, tmp_path):
    """No LOOKOUT_MODELS_DIR, an empty cache, downloads off: the wheel's own copies are used,
    each checked against its sha256."""
    local = offline_settings(settings, tmp_path, download=False, verify_on_start=True)
    pack = PACKS["ppocr_v4"]
    assert isinstance(pack, TextPack) and pack.classifier is not None
    resolved = resolve_pack(local, pack)
    assert set(resolved) == {
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    }
    for path in resolved.values():
        assert path.parent.name == "models" and path.parent.parent.name == "rapidocr_onnxruntime"
    assert [f.name for f in PACKS["ppocr_v4_upright"].files] == [
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
    ]
    assert cache_files(local) == []  # nothing copied or downloaded


def test_a_wheel_file_that_is_not_installed_says_which_wheel_to_install(settings, tmp_path):
    local = offline_settings(settings, tmp_path)
    absent = ModelFile(
        name="ch_PP-OCRv4_det_infer.onnx",
        sha256="0" * 64,
        license="Apache-2.0",
        url=None,
        wheel=("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/no_such_file.onnx"),
    )
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps rapidocr-onnxruntime==1\.4\.4"):
        resolve_model(local, absent)


def test_production_defaults_are_buffalo_sc_and_yolox_nano():
    defaults = ModelSettings()
    assert (defaults.face_pack, defaults.object_pack) == ("buffalo_sc", "yolox_nano")
    assert defaults.download is True


def test_the_verified_copies_match_the_manifest(settings):
    resolved = resolve_pack(settings, PACKS["scrfd_mobilefacenet"]) | resolve_pack(
        settings, PACKS["yolox_nano"]
    )
    assert set(resolved) == {"det_500m.onnx", "mobilefacenet.onnx", "yolox_nano.onnx"}
    assert all(path.parent == settings.models_dir for path in resolved.values())


def test_models_dir_is_searched_before_the_cache(settings, tmp_path):
    local = offline_settings(settings, tmp_path, download=False)
    local = local.model_copy(update={"models_dir": settings.models_dir})
    cached = local.models_cache_dir / "yolox_nano.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((settings.models_dir / "yolox_nano.onnx").read_bytes())
    assert resolve_model(local, YOLOX_NANO) == settings.models_dir / "yolox_nano.onnx"
    without_dir = local.model_copy(update={"models_dir": None})
    assert resolve_model(without_dir, YOLOX_NANO) == cached


def test_a_missing_file_is_downloaded_verified_and_renamed_into_the_cache(
    settings, tmp_path, mirror
):
    url, root = mirror
    (root / "yolox_nano.onnx").write_bytes((settings.models_dir / "yolox_nano.onnx").read_bytes())
    local = offline_settings(settings, tmp_path, mirror_url=url)
    path = resolve_model(local, YOLOX_NANO)
    assert path == local.models_cache_dir / "yolox_nano.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == YOLOX_NANO.sha256
    assert cache_files(local) == ["yolox_nano.onnx"]  # no temp file left behind
    # Found in the cache the next time: no second download.
    (root / "yolox_nano.onnx").unlink()
    assert resolve_model(local, YOLOX_NANO) == path


def test_a_download_with_the_wrong_checksum_installs_nothing(settings, tmp_path, mirror):
    url, root = mirror
    (root / "yolox_nano.onnx").write_bytes(b"not the model you are looking for")
    local = offline_settings(settings, tmp_path, mirror_url=url)
    with pytest.raises(ChecksumMismatch, match=r"yolox_nano\.onnx has sha256"):
        download_models(local, [YOLOX_NANO])
    assert cache_files(local) == []
    with pytest.raises(ModelNotFound, match=r"yolox_nano\.onnx"):
        resolve_model(local, YOLOX_NANO)
    assert cache_files(local) == []


def test_a_connection_lost_mid_download_installs_nothing(settings, tmp_path):
    root = tmp_path / "truncating"
    root.mkdir()
    (root / "yolox_nano.onnx").write_bytes((settings.models_dir / "yolox_nano.onnx").read_bytes())
    for url, _ in _serve(root, TruncatingHandler):
        local = offline_settings(settings, tmp_path, mirror_url=url)
        with pytest.raises(ModelNotFound, match="downloading failed"):
            resolve_model(local, YOLOX_NANO)
        assert cache_files(local) == []


def test_zip_members_are_extracted_and_each_verified(settings, tmp_path, mirror):
    """buffalo_sc.zip upstream holds det_500m.onnx and w600k_mbf.onnx; here the second is wrong."""
    url, root = mirror
    with zipfile.ZipFile(root / "buffalo_sc.zip", "w") as bundle:
        bundle.write(settings.models_dir / "det_500m.onnx", "det_500m.onnx")
        bundle.writestr("w600k_mbf.onnx", b"a corrupted recognition model")
    local = offline_settings(settings, tmp_path, mirror_url=url)
    assert resolve_model(local, DET_500M) == local.models_cache_dir / "det_500m.onnx"
    with pytest.raises(ModelNotFound, match=r"w600k_mbf\.onnx"):
        resolve_pack(local, PACKS["buffalo_sc"])
    assert cache_files(local) == ["det_500m.onnx"]


def test_members_of_one_archive_cost_one_download(settings, tmp_path):
    root = tmp_path / "counting"
    root.mkdir()
    with zipfile.ZipFile(root / "pack.zip", "w") as bundle:
        bundle.writestr("alpha.onnx", b"alpha")
        bundle.writestr("beta.onnx", b"beta")
    files = [
        ModelFile(
            name=f"{name}.onnx",
            sha256=hashlib.sha256(name.encode()).hexdigest(),
            license="-",
            url="https://example.invalid/releases/pack.zip",
            archive_member=f"{name}.onnx",
        )
        for name in ("alpha", "beta")
    ]
    CountingHandler.requests = []
    for url, _ in _serve(root, CountingHandler):
        local = offline_settings(settings, tmp_path, mirror_url=url)
        paths = resolve_files(local, files)
    assert CountingHandler.requests == ["/pack.zip"]
    assert paths["beta.onnx"].read_bytes() == b"beta"
    assert cache_files(local) == ["alpha.onnx", "beta.onnx"]


def test_offline_without_the_file_is_one_error_naming_it_and_where_to_put_it(settings, tmp_path):
    local = offline_settings(settings, tmp_path, download=False)
    with pytest.raises(ModelNotFound) as caught:
        resolve_pack(local, PACKS["buffalo_sc"])
    message = str(caught.value)
    assert "model files 'det_500m.onnx', 'w600k_mbf.onnx' not found" in message
    assert str(local.models_cache_dir) in message and "LOOKOUT_MODELS_DIR" in message
    assert "buffalo_sc.zip" in message  # where to get it
    # Which setting chose these files (a newcomer outside `make` gets the production pack).
    assert f"LOOKOUT_MODELS__FACE_PACK={local.models.face_pack}" in message
    assert "lookout models list" in message
    # The stand-in embedder has no public release; SCRFD beside it has one.
    stand_in = offline_settings(settings, tmp_path, download=False)
    with pytest.raises(ModelNotFound) as caught:
        resolve_pack(stand_in, PACKS["scrfd_mobilefacenet"])
    assert "mobilefacenet.onnx has no public download" in str(caught.value)
    assert "det_500m.onnx has no public" not in str(caught.value)


def test_an_unreachable_server_is_the_same_clear_error(settings, tmp_path):
    local = offline_settings(settings, tmp_path, mirror_url="http://127.0.0.1:9")  # discard port
    with pytest.raises(ModelNotFound, match=r"'yolox_nano\.onnx' not found.*downloading failed"):
        resolve_model(local, YOLOX_NANO)


def test_a_corrupt_cached_copy_is_replaced_but_a_bad_models_dir_copy_is_refused(
    settings, tmp_path, mirror
):
    url, root = mirror
    good = (settings.models_dir / "yolox_nano.onnx").read_bytes()
    (root / "yolox_nano.onnx").write_bytes(good)
    local = offline_settings(settings, tmp_path, mirror_url=url)
    cached = local.models_cache_dir / "yolox_nano.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good[:1000])
    assert resolve_model(local, YOLOX_NANO) == cached
    assert cached.read_bytes() == good

    users = tmp_path / "users-models"
    users.mkdir()
    (users / "yolox_nano.onnx").write_bytes(good[:1000])
    with_dir = local.model_copy(update={"models_dir": users})
    with pytest.raises(ChecksumMismatch, match="delete it"):
        resolve_model(with_dir, YOLOX_NANO)
    assert (users / "yolox_nano.onnx").read_bytes() == good[:1000]  # never touched


def test_only_http_urls_are_fetched(settings, tmp_path):
    sneaky = ModelFile(
        name="x.onnx", sha256="0" * 64, license="-", url=f"file://{settings.models_dir}/x.onnx"
    )
    local = offline_settings(settings, tmp_path)
    with pytest.raises(ModelNotFound, match="only http"):
        resolve_model(local, sneaky)


def test_cli_pull_and_verify(settings, tmp_path, mirror, capsys):
    url, root = mirror
    (root / "yolox_nano.onnx").write_bytes((settings.models_dir / "yolox_nano.onnx").read_bytes())
    local = offline_settings(settings, tmp_path, mirror_url=url, download=False)
    assert models_command(local, "verify", ["yolox_nano"]) == 1
    assert "MISSING   yolox_nano/yolox_nano.onnx" in capsys.readouterr().out
    assert models_command(local, "pull", ["yolox_nano"]) == 0  # pull downloads even so
    assert "ok  yolox_nano/yolox_nano.onnx" in capsys.readouterr().out
    assert models_command(local, "verify", ["yolox_nano"]) == 0
    (local.models_cache_dir / "yolox_nano.onnx").write_bytes(b"tampered")
    assert models_command(local, "verify", ["yolox_nano"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert models_command(local, "pull", ["no_such_pack"]) == 1
    assert "unknown model pack 'no_such_pack'" in capsys.readouterr().err


def test_lookout_models_command_line(settings, tmp_path):
    """The installed `lookout` entry point, configured from the environment."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LOOKOUT_MODELS_DIR": str(settings.models_dir),
        "LOOKOUT_DATA_DIR": str(tmp_path),
        "LOOKOUT_MODELS__FACE_PACK": "scrfd_mobilefacenet",
    }
    lookout = Path(sys.executable).parent / "lookout"
    listed = subprocess.run(
        [lookout, "models", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "* scrfd_mobilefacenet" in listed.stdout and "* yolox_nano" in listed.stdout
    verified = subprocess.run(
        [lookout, "models", "verify"], env=env, capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The face and object packs' 3 files, and the text pack's 3 from the rapidocr wheel.
    assert verified.stdout.count("ok ") == 6
    assert "* ppocr_v4" in listed.stdout
