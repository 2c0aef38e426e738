"""The label maps a model is trained with and served with: `labels.json` of a trained model and
of a bundle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from service.contract.text import OUTSIDE_TAG


class Labelled(Protocol):
    """A training example, as far as its labels go."""

    intent: str
    tags: tuple[str, ...]


def slot_types(slot_tags: Iterable[str]) -> set[str]:
    return {tag[2:] for tag in slot_tags if tag != OUTSIDE_TAG}


@dataclass(frozen=True)
class LabelSet:
    """Label maps fixed at training time: intents seen in train, BIO tags (O first)."""

    intents: tuple[str, ...]
    slot_tags: tuple[str, ...]

    @classmethod
    def from_examples(cls, examples: Iterable[Labelled]) -> LabelSet:
        intents = sorted({ex.intent for ex in examples})
        types = sorted({t[2:] for ex in examples for t in ex.tags if t != OUTSIDE_TAG})
        tags = [OUTSIDE_TAG] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        return cls(tuple(intents), tuple(tags))

    def intent_id(self, intent: str) -> int:
        """Index of a known intent, or -1 for one unseen in training (always an error)."""
        try:
            return self.intents.index(intent)
        except ValueError:
            return -1

    def tag_ids(self, tags: tuple[str, ...]) -> list[int]:
        """Tag indices; a tag unseen in training maps to O (the gold string is kept for scoring)."""
        index = {t: i for i, t in enumerate(self.slot_tags)}
        return [index.get(t, 0) for t in tags]

    def to_json(self) -> dict[str, list[str]]:
        return {"intents": list(self.intents), "slot_tags": list(self.slot_tags)}

    @property
    def slot_types(self) -> set[str]:
        """Slot type names (the tags without their B-/I- prefix)."""
        return slot_types(self.slot_tags)

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> LabelSet:
        return cls(tuple(data["intents"]), tuple(data["slot_tags"]))
