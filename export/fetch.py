"""Find a dataset on disk, or download a known one and verify it against pinned sha256 sums.

Resolution order: an existing path → `NLU_DATA_DIR/<name>` → `<project>/../shared/data/<name>`
→ download from the public source into `NLU_DATA_DIR` (or `<project>/data`). ATIS and SNIPS come
as BIO folders from monologg/JointBERT at a pinned commit; CLINC150 as one JSON file from
clinc/oos-eval at a pinned commit, converted to span JSONL (intent only; out-of-scope utterances
keep the dataset's label `oos`). `NLU_DATA_URL` points every download at a mirror holding
`<name>/<file>` (the tests serve one from 127.0.0.1).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from export.data import DataError
from service.contract.bundle import sha256_file
from service.contract.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

JOINTBERT_COMMIT = "00324f60dda4a491b2913bc3065ae93966caea3f"
JOINTBERT_URL = f"https://raw.githubusercontent.com/monologg/JointBERT/{JOINTBERT_COMMIT}/data"
OOS_EVAL_COMMIT = "828f8093932c8fe6ca7936c3d2e52903b1c523de"
OOS_EVAL_URL = f"https://raw.githubusercontent.com/clinc/oos-eval/{OOS_EVAL_COMMIT}/data"
CLINC_SOURCE = "data_full.json"
CLINC_SPLITS = {
    "train": ("train", "oos_train"),
    "dev": ("val", "oos_val"),
    "test": ("test", "oos_test"),
}
"""Our split → the keys of data_full.json it joins (in-scope first, then out-of-scope)."""


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: file (relative to the dataset folder) → sha256, the
    public base URL they sit under, and an optional conversion run after every file verified."""

    url: str
    sha256: dict[str, str]
    convert: Callable[[Path], None] | None = field(default=None)


def convert_clinc(folder: Path) -> None:
    """data_full.json → {train,dev,test}.jsonl, each line `{"text", "intent", "entities": []}`.
    A malformed item is an error naming the file, the key and the index."""
    source = folder / CLINC_SOURCE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(source, e.lineno, f"not JSON: {e.msg}") from None
    for split, keys in CLINC_SPLITS.items():
        lines = []
        for key in keys:
            items = data.get(key) if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise DataError(source, None, f"no list under key {key!r}")
            for i, item in enumerate(items):
                if not (
                    isinstance(item, list)
                    and len(item) == 2
                    and all(isinstance(x, str) for x in item)
                ):
                    raise DataError(
                        source, None, f"{key}[{i}]: expected [text, intent], got {item!r}"
                    )
                lines.append(json.dumps({"text": item[0], "intent": item[1], "entities": []}))
        partial = folder / f"{split}.jsonl.part"
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(folder / f"{split}.jsonl")


SOURCES: dict[str, Source] = {
    "atis": Source(
        JOINTBERT_URL + "/atis",
        {
            "dev/label": "06957cfe6fdffac84f8280bc3a1f8ca85c85631b363817aa4543aac611f8addf",
            "dev/seq.in": "c7435b96e7948393608c34819628e863c5338f11ca68e8f896d2cc041d8e17f8",
            "dev/seq.out": "83ccff3e36f83a993f8e5b5b82adf3256076f234abda4d784051381d7ac76922",
            "test/label": "ce4bfe6590d9498e1078f30b4137d3e8b3e94277b444b26360c0bf2e9e282761",
            "test/seq.in": "4b2119fc59c37f9398c6605db435d4f467505009e6ee3e5af04fed09f39dc397",
            "test/seq.out": "a4690d6bceadc06876d1ff99bc401744aa981cb321e598ae12a3859d7be53254",
            "train/label": "d0a771547665eecbdf9f96ea015ef07d1f6ee9f063e861020dafabb3c2a04377",
            "train/seq.in": "3a670980841b21ab39088b2595efc17d487cdc45769c075a3e5f9458bba28c7f",
            "train/seq.out": "14c7131bd66562f797dbd7189bc7358f0cf354c6afb0785a9ab973c35b58f34c",
        },
    ),
    "snips": Source(
        JOINTBERT_URL + "/snips",
        {
            "dev/label": "9c1dd041216f647bcfca838aaf1a48eb5781e4404256d31ff07cd38a5436c52f",
            "dev/seq.in": "64e0f6d8ad8aab3a3828164d7d53731a0993d3ca1aed437ceaca6d3d568d410e",
            "dev/seq.out": "712e6d34feb8d52d208b820a5f8bae6e6ff990f08374507dfde22de389088319",
            "test/label": "37a26da3ad079bb41c42c85a3a8f827eb47efec4c5917ce5d08f4b2736e4f830",
            "test/seq.in": "c1e341173fcea2951a8ca371956a6f81c76de87b9583c62eb87edd6158fa3a7c",
            "test/seq.out": "58c07c9097d5e1f78889765c2a535a160f6455b90b3142055c8051847afcca47",
            "train/label": "bfd7df6cf9dd76c5da5d8b61bc85f90386197bdd3d7510c1d324c051537b962f",
            "train/seq.in": "04ad1e3f2121d83c6478f9a4b17d2dbdc21d06d6127f73cb7af835ed733f9855",
            "train/seq.out": "fd5f2121d8055827e5d6b3d3bac30f3d7e94e82a5d437751960cbdd9e1b4f6d3",
        },
    ),
    "clinc150": Source(
        OOS_EVAL_URL,
        {CLINC_SOURCE: "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"},
        convert_clinc,
    ),
}
KNOWN = sorted(SOURCES)


class DatasetNotFound(FileNotFoundError):
    pass


class ChecksumMismatch(ValueError):
    pass


INPUT_ERRORS = (DataError, ChecksumMismatch, FileNotFoundError, httpx.HTTPError)
"""Problems with what the user pointed a command at: reported in one line, no traceback."""


def download_dataset(name: str, target_root: Path, mirror: str | None = None) -> Path:
    """Download every file of a known dataset (from `mirror/<name>/` when given), verifying each
    before it is moved into place, then convert it when its source needs converting."""
    if name not in SOURCES:
        raise DatasetNotFound(
            f"no local copy of dataset {name!r} and no download source for it "
            f"(known: {', '.join(KNOWN)})"
        )
    source, folder = SOURCES[name], target_root / name
    base_url = f"{mirror.rstrip('/')}/{name}" if mirror else source.url
    with httpx.Client(timeout=60.0, follow_redirects=True) as client:
        for rel, expected in sorted(source.sha256.items()):
            dest = folder / rel
            if dest.is_file() and sha256_file(dest) == expected:
                continue
            url = f"{base_url}/{rel}"
            log.info("downloading %s", url)
            response = client.get(url)
            response.raise_for_status()
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(dest.name + ".part")
            partial.write_bytes(response.content)
            actual = sha256_file(partial)
            if actual != expected:
                partial.unlink()
                raise ChecksumMismatch(
                    f"{name}/{rel}: sha256 {actual} does not match the pinned "
                    f"{expected} (downloaded from {url})"
                )
            partial.replace(dest)
    if source.convert is not None:
        source.convert(folder)
    return folder


def resolve_dataset(spec: str | Path) -> Path:
    """Return the folder holding dataset `spec` (a path or a name), downloading if needed."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name = str(spec)
    if "/" in name or os.sep in name:
        raise DatasetNotFound(f"dataset path {path} does not exist")
    data_dir = os.environ.get("NLU_DATA_DIR")
    candidates = [Path(data_dir) / name] if data_dir else []
    candidates.append(PROJECT_ROOT.parent / "shared" / "data" / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    target = Path(data_dir) if data_dir else PROJECT_ROOT / "data"
    mirror = os.environ.get("NLU_DATA_URL")
    log.warning(
        "dataset %r not found in %s; downloading to %s",
        name,
        ", ".join(map(str, candidates)),
        target,
    )
    return download_dataset(name, target, mirror)
