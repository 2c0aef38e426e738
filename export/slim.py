"""Cut a slim bundle for an image: only the served variant's graph (the int8 graph is ~25 MB, the
fp32 one ~90 MB), the tokenizer, labels and out-of-scope reference data, and the retrieval index
only when asked for. Its config.json records the new checksums and the full bundle it came from,
so the server verifies it exactly as it verifies a full one.

    python -m export.slim --bundle bundles/atis --variant int8 --out build/image-bundle
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from service.contract.bundle import (
    LABELS,
    TOKENIZER,
    VARIANT_FILES,
    BundleConfig,
    BundleError,
    write_config,
)
from service.contract.bundle import verify as verify_bundle
from service.contract.oos import OOS_DIR
from service.contract.retrieval import INDEX_DIR


def slim_bundle(
    source: Path, out: Path, variants: list[str], with_index: bool = False
) -> BundleConfig:
    """Verify `source`, then write `out` holding only `variants` (and the index if asked)."""
    config, config_sha256 = verify_bundle(source)
    missing = [v for v in variants if v not in config.variants]
    if missing:
        raise BundleError(f"{source}: holds no {', '.join(missing)} graph")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in (TOKENIZER, LABELS, *(VARIANT_FILES[v] for v in variants)):
        shutil.copyfile(source / name, out / name)
    if with_index and (source / INDEX_DIR).is_dir():
        shutil.copytree(source / INDEX_DIR, out / INDEX_DIR)
    if (source / OOS_DIR).is_dir():
        shutil.copytree(source / OOS_DIR, out / OOS_DIR)
    slim = config.model_copy(
        update={
            "variants": {v: config.variants[v] for v in variants},
            "derived_from": config_sha256,
        }
    )
    return write_config(out, slim)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="full bundle to cut from")
    p.add_argument("--out", type=Path, required=True, help="slim bundle folder to (re)write")
    p.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANT_FILES),
        help="graph(s) to keep (default: the one the bundle serves)",
    )
    p.add_argument(
        "--with-index", action="store_true", help="keep the retrieval index (few-shot prompts)"
    )
    args = p.parse_args(argv)
    try:
        variants = args.variant or [verify_bundle(args.bundle)[0].served_variant]
        config = slim_bundle(args.bundle, args.out, variants, args.with_index)
    except BundleError as e:
        print(f"cannot cut a slim bundle: {e}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out}: {', '.join(config.variants)}, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
