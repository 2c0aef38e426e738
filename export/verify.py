"""Check a model bundle the way the server will before serving it.

python -m export.verify bundles/atis
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.contract.bundle import BundleError, verify


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle folder to check against its config.json")
    args = p.parse_args(argv)
    try:
        config, _ = verify(args.bundle)
    except BundleError as e:
        print(f"bundle verification failed: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.bundle}: OK ({len(config.files)} files verified; format "
        f"{config.format_version}, encoder {config.encoder}, dataset {config.dataset})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
