"""Intents added at runtime, without retraining: a declarative file of new intents, each with a
one-line description and 3-10 example utterances.

    intents:
      - name: book_spa
        description: book a spa or massage appointment
        examples:
          - book me a massage for tomorrow
          - i want a spa appointment

YAML or JSON (a JSON file is YAML too). The server embeds the examples with the bundle's
embedding output; an utterance whose nearest example belongs to an extension intent (closer than
any training utterance of the bundle) and is at least the similarity threshold away is answered
with it (`service.runtime`). The threshold is the bundle's kNN out-of-scope threshold, chosen on
dev at export: an extension example then counts as much as a training utterance does.

Every problem names the file and line; `python -m service.extensions validate FILE [--bundle B]`
runs the same checks before a file is deployed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from service.contract.types import ExtensionIntent
from service.settings import OpenWorldSettings

MIN_EXAMPLES, MAX_EXAMPLES = 3, 10
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
MAX_EXAMPLE_CHARS = 1000


class ExtensionError(ValueError):
    """A file that must not go live; the message names file, line and problem."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ExtensionSet:
    """The live extension intents and their example embeddings; replaced whole on reload."""

    source: str  # the file it was read from
    sha256: str
    intents: tuple[ExtensionIntent, ...]
    embeddings: np.ndarray  # (M, H) L2-normalised, one row per example
    owners: np.ndarray  # (M,) index into `intents` of each example

    @cached_property
    def example_counts(self) -> np.ndarray:
        """(E,) how many examples each intent has."""
        return np.bincount(self.owners, minlength=len(self.intents))

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """(B, E): each utterance's similarity to each intent's nearest example."""
        per_example = embeddings.astype(np.float32) @ self.embeddings.T  # (B, M)
        starts = np.flatnonzero(np.r_[True, np.diff(self.owners) != 0])  # owners run in order
        return np.maximum.reduceat(per_example, starts, axis=1)  # (B, E)


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def mapping_items(node: yaml.MappingNode) -> dict[str, yaml.Node]:
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def parse_intent(path: Path, node: yaml.Node, reserved: set[str]) -> ExtensionIntent:
    if not isinstance(node, yaml.MappingNode):
        raise ExtensionError(path, line_of(node), "an intent must be a mapping")
    fields = mapping_items(node)
    unknown = sorted(set(fields) - {"name", "description", "examples"})
    if unknown:
        raise ExtensionError(path, line_of(node), f"unknown field(s): {', '.join(unknown)}")
    for required in ("name", "description", "examples"):
        if required not in fields:
            raise ExtensionError(path, line_of(node), f"intent has no {required!r}")
    name, description, examples = fields["name"], fields["description"], fields["examples"]
    if not isinstance(name, yaml.ScalarNode) or not NAME.match(str(name.value)):
        raise ExtensionError(
            path, line_of(name), f"name must match {NAME.pattern} (got {name.value!r})"
        )
    if name.value in reserved:
        raise ExtensionError(
            path, line_of(name), f"{name.value!r} is already an intent of the bundle or the file"
        )
    if not isinstance(description, yaml.ScalarNode) or not str(description.value).strip():
        raise ExtensionError(path, line_of(description), "description must be a non-empty line")
    if not isinstance(examples, yaml.SequenceNode):
        raise ExtensionError(path, line_of(examples), "examples must be a list of utterances")
    if not MIN_EXAMPLES <= len(examples.value) <= MAX_EXAMPLES:
        raise ExtensionError(
            path,
            line_of(examples),
            f"{name.value}: {len(examples.value)} examples "
            f"(between {MIN_EXAMPLES} and {MAX_EXAMPLES})",
        )
    texts = []
    for example in examples.value:
        if isinstance(example, yaml.MappingNode):
            raise ExtensionError(
                path,
                line_of(example),
                "this example parsed as a mapping (YAML reads an unquoted 'key: value' so): "
                "put it in quotes",
            )
        text = example.value if isinstance(example, yaml.ScalarNode) else None
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_EXAMPLE_CHARS:
            raise ExtensionError(
                path,
                line_of(example),
                f"an example must be a non-empty utterance of at most {MAX_EXAMPLE_CHARS} chars",
            )
        texts.append(text.strip())
    return ExtensionIntent(str(name.value), str(description.value).strip(), tuple(texts))


def reserved_names(bundle_intents: Iterable[str], out_of_scope_intent: str) -> set[str]:
    """Names an extension intent may not take: the bundle's intents (its trained out-of-scope
    class included) and the intent out-of-scope answers carry. The server and `validate` refuse
    the same names."""
    return {*bundle_intents, out_of_scope_intent}


def parse_extensions(path: Path, text: str, bundle_intents: set[str]) -> list[ExtensionIntent]:
    """The intents of an extension file; ExtensionError on the first problem. `bundle_intents`:
    the reserved names (`reserved_names`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise ExtensionError(path, line, f"not valid YAML/JSON: {e.problem}") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode) or set(mapping_items(root)) != {"intents"}:
        raise ExtensionError(path, line_of(root), "expected one top-level key, 'intents'")
    items = mapping_items(root)["intents"]
    if not isinstance(items, yaml.SequenceNode):
        raise ExtensionError(path, line_of(items), "'intents' must be a list")
    intents: list[ExtensionIntent] = []
    for node in items.value:
        intents.append(parse_intent(path, node, bundle_intents | {i.name for i in intents}))
    return intents


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="check an extension-intents file before deploying it")
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="parse and check FILE; exit 1 naming the problem")
    check.add_argument("file", type=Path)
    check.add_argument("--bundle", type=Path, help="also refuse names the bundle already has")
    check.add_argument(
        "--out-of-scope-intent",
        default=OpenWorldSettings().out_of_scope_intent,
        help="the server's out_of_scope_intent setting, a name the file may not take "
        "(default: %(default)s)",
    )
    args = p.parse_args(argv)
    bundle_intents: tuple[str, ...] = ()
    if args.bundle is not None:
        from service.contract.bundle import BundleError, load_bundle

        try:
            bundle_intents = load_bundle(args.bundle).labels.intents
        except BundleError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    reserved = reserved_names(bundle_intents, args.out_of_scope_intent)
    try:
        intents = parse_extensions(args.file, args.file.read_text(encoding="utf-8"), reserved)
    except (ExtensionError, OSError, UnicodeDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    examples = sum(len(i.examples) for i in intents)
    print(f"{args.file}: {len(intents)} intents, {examples} examples: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
