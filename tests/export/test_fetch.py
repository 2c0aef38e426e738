from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from export import fetch
from export.fetch import ChecksumMismatch, DatasetNotFound, download_dataset, resolve_dataset
from service.contract.paths import PROJECT_ROOT

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local http.server on 127.0.0.1 serving a copy of the ATIS files."""
    root = tmp_path / "mirror"
    shutil.copytree(SHARED_DATA / "atis", root / "atis")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_download_verifies_every_file(mirror, tmp_path):
    url, _ = mirror
    path = download_dataset("atis", tmp_path / "cache", url)
    assert path == tmp_path / "cache" / "atis"
    for rel, digest in fetch.SHA256.items():
        if rel.startswith("atis/"):
            assert fetch.sha256_file(tmp_path / "cache" / rel) == digest


def test_checksum_mismatch_names_the_file(mirror, tmp_path):
    url, root = mirror
    label = root / "atis" / "test" / "label"
    label.write_text(label.read_text().replace("atis_flight", "atis_flights", 1))
    with pytest.raises(ChecksumMismatch, match="atis/test/label: sha256"):
        download_dataset("atis", tmp_path / "cache", url)
    assert not (tmp_path / "cache" / "atis" / "test" / "label").exists()


def test_unknown_dataset_cannot_be_downloaded(tmp_path):
    with pytest.raises(DatasetNotFound, match="'nope'"):
        download_dataset("nope", tmp_path, "http://127.0.0.1:9")


def test_resolution_order(tmp_path, monkeypatch, mirror):
    explicit = tmp_path / "mine"
    explicit.mkdir()
    assert resolve_dataset(explicit) == explicit

    env_dir = tmp_path / "env"
    (env_dir / "atis").mkdir(parents=True)
    monkeypatch.setenv("NLU_DATA_DIR", str(env_dir))
    assert resolve_dataset("atis") == env_dir / "atis"

    monkeypatch.delenv("NLU_DATA_DIR")
    assert resolve_dataset("snips") == PROJECT_ROOT.parent / "shared" / "data" / "snips"

    # Neither NLU_DATA_DIR nor ../shared/data holds it: download into NLU_DATA_DIR.
    monkeypatch.setattr(fetch, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.setenv("NLU_DATA_DIR", str(tmp_path / "downloads"))
    monkeypatch.setenv("NLU_DATA_URL", mirror[0])
    assert resolve_dataset("atis") == tmp_path / "downloads" / "atis"
    assert (tmp_path / "downloads" / "atis" / "train" / "seq.in").is_file()


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DatasetNotFound, match="does not exist"):
        resolve_dataset(str(tmp_path / "missing" / "x"))
