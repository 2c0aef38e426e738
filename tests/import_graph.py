"""The project's import graph, read from the source with `ast` (nothing is imported).

    python -m tests.import_graph                 # counts of cross-package imports, by module
    python -m tests.import_graph --root DIR      # the same for another checkout (e.g. an old one)

`tests/test_layering.py` holds the rules; this module only reads the graph.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "export", "benchmarks")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "gen" not in p.parts)


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{importing module: project modules it imports}."""
    return {
        module_name(path, root): imports_of(path)
        for package in PACKAGES
        for path in source_modules(package, root)
    }


def cross_package(edges: dict[str, set[str]], source: str, target: str) -> Counter[str]:
    """How many modules of `source` import each module of `target`."""
    return Counter(
        imported
        for module, imported_set in edges.items()
        if module.split(".")[0] == source
        for imported in imported_set
        if imported.split(".")[0] == target
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.import_graph", description=__doc__)
    p.add_argument("--root", type=Path, default=ROOT, help="checkout to read (default: this one)")
    edges = graph(p.parse_args(argv).root.resolve())
    for source, target in (("export", "service"), ("benchmarks", "service")):
        counts = cross_package(edges, source, target)
        contract = sum(n for m, n in counts.items() if m.startswith("service.contract"))
        print(
            f"{source} -> {target}: {sum(counts.values())} imports of {len(counts)} modules "
            f"({contract} of them into service.contract)"
        )
        for imported, n in sorted(counts.items()):
            print(f"  {imported}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
