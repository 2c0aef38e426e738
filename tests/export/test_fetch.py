from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from export import fetch
from export.data import DataError, read_dataset
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
    for rel, digest in fetch.SOURCES["atis"].sha256.items():
        assert fetch.sha256_file(path / rel) == digest


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


def clinc_source(splits: dict[str, list[tuple[str, str]]]) -> bytes:
    """A data_full.json in the published shape: {key: [[text, intent], ...]}."""
    return json.dumps({k: [list(item) for item in v] for k, v in splits.items()}).encode()


SMALL_CLINC = {
    "train": [("how do you say hi in french", "translate"), ("what is my balance", "balance")],
    "oos_train": [("how old is the moon", "oos")],
    "val": [("say cheese in german", "translate")],
    "oos_val": [("who won the match", "oos")],
    "test": [("check my balance", "balance")],
    "oos_test": [("tell me about volcanoes", "oos")],
}


@pytest.fixture
def clinc_mirror(tmp_path: Path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """A local mirror serving a small synthetic clinc150/data_full.json, pinned by its sha256."""
    root = tmp_path / "mirror"
    (root / "clinc150").mkdir(parents=True)
    body = clinc_source(SMALL_CLINC)
    (root / "clinc150" / fetch.CLINC_SOURCE).write_bytes(body)
    pinned = fetch.Source(
        fetch.SOURCES["clinc150"].url,
        {fetch.CLINC_SOURCE: hashlib.sha256(body).hexdigest()},
        fetch.convert_clinc,
    )
    monkeypatch.setitem(fetch.SOURCES, "clinc150", pinned)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_clinc150_downloads_and_converts_to_intent_only_jsonl(clinc_mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.setenv("NLU_DATA_DIR", str(tmp_path / "downloads"))
    monkeypatch.setenv("NLU_DATA_URL", clinc_mirror[0])
    folder = resolve_dataset("clinc150")
    assert folder == tmp_path / "downloads" / "clinc150"
    dataset = read_dataset(folder)
    train = dataset.splits["train"]
    assert [(ex.text, ex.intent) for ex in train] == SMALL_CLINC["train"] + SMALL_CLINC["oos_train"]
    assert [ex.intent for ex in dataset.splits["dev"]] == ["translate", "oos"]
    assert all(set(ex.tags) == {"O"} for split in dataset.splits.values() for ex in split)


def test_clinc150_conversion_reproduces_the_shared_copy(tmp_path):
    """The shared files rebuilt into data_full.json's shape convert back byte for byte."""
    shared = SHARED_DATA / "clinc150"
    parts: dict[str, list[tuple[str, str]]] = {}
    for split, (in_scope, out_of_scope) in fetch.CLINC_SPLITS.items():
        rows = [json.loads(line) for line in (shared / f"{split}.jsonl").read_text().splitlines()]
        parts[in_scope] = [(r["text"], r["intent"]) for r in rows if r["intent"] != "oos"]
        parts[out_of_scope] = [(r["text"], r["intent"]) for r in rows if r["intent"] == "oos"]
    (tmp_path / fetch.CLINC_SOURCE).write_bytes(clinc_source(parts))
    fetch.convert_clinc(tmp_path)
    for split in fetch.CLINC_SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (
            shared / f"{split}.jsonl"
        ).read_bytes()


def test_clinc150_checksum_mismatch_keeps_nothing(clinc_mirror, tmp_path):
    url, root = clinc_mirror
    source = root / "clinc150" / fetch.CLINC_SOURCE
    source.write_bytes(source.read_bytes().replace(b"moon", b"sun!"))
    with pytest.raises(ChecksumMismatch, match=r"clinc150/data_full\.json: sha256"):
        download_dataset("clinc150", tmp_path / "cache", url)
    assert not (tmp_path / "cache" / "clinc150" / "train.jsonl").exists()


def test_malformed_clinc_item_is_named(tmp_path):
    bad = dict(SMALL_CLINC, oos_val=[["who won the match"]])
    (tmp_path / fetch.CLINC_SOURCE).write_bytes(clinc_source(bad))
    with pytest.raises(DataError, match=r"data_full.json: oos_val\[0\]: expected \[text, intent\]"):
        fetch.convert_clinc(tmp_path)
    (tmp_path / fetch.CLINC_SOURCE).write_text("{not json")
    with pytest.raises(DataError, match=r"data_full.json:1: not JSON"):
        fetch.convert_clinc(tmp_path)
