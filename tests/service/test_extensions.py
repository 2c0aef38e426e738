from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.extensions import ExtensionError, main, parse_extensions
from service.runtime import Engine
from service.settings import EngineSettings, OpenWorldSettings

GOOD = """\
intents:
  - name: book_spa
    description: book a spa or massage appointment
    examples:
      - book me a massage for tomorrow
      - i want a spa appointment
      - schedule a facial at the spa
"""


def parse(text: str, reserved: frozenset[str] = frozenset()) -> list:
    return parse_extensions(Path("ext.yaml"), text, set(reserved))


def test_yaml_and_json_give_the_same_intents():
    (intent,) = parse(GOOD)
    assert intent.name == "book_spa" and len(intent.examples) == 3
    as_json = json.dumps(
        {
            "intents": [
                {
                    "name": "book_spa",
                    "description": intent.description,
                    "examples": list(intent.examples),
                }
            ]
        }
    )
    assert parse(as_json) == [intent]
    assert parse("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("intents: [\n  {name: x\n", r"ext.yaml:\d+: not valid YAML/JSON"),
        ("other: []\n", r"ext.yaml:1: expected one top-level key, 'intents'"),
        (
            GOOD.replace("    description: book a spa or massage appointment\n", ""),
            r"ext.yaml:2: intent has no 'description'",
        ),
        (
            GOOD.replace("      - schedule a facial at the spa\n", ""),
            r"ext.yaml:5: book_spa: 2 examples \(between 3 and 10\)",
        ),
        (GOOD.replace("book_spa", "book spa!"), r"ext.yaml:2: name must match"),
        (
            GOOD.replace("      - i want a spa appointment", "      - ''"),
            r"ext.yaml:6: an example must be a non-empty utterance",
        ),
        (GOOD + GOOD.removeprefix("intents:\n"), r"ext.yaml:8: 'book_spa' is already an intent"),
        (
            GOOD.replace("    examples:", "    slots: []\n    examples:"),
            r"ext.yaml:2: unknown field\(s\): slots",
        ),
        (
            GOOD.replace("i want a spa appointment", "note: book a spa"),
            r"ext.yaml:6: this example parsed as a mapping .*put it in quotes",
        ),
    ],
)
def test_problems_name_the_line(text, message):
    with pytest.raises(ExtensionError, match=message):
        parse(text)


def test_names_the_bundle_has_are_refused():
    with pytest.raises(ExtensionError, match=r"ext\.yaml:2: 'book_spa' is already an intent"):
        parse(GOOD, frozenset({"book_spa"}))


def test_validate_cli(tmp_path, tiny_clinc_bundle, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["validate", str(good), "--bundle", str(tiny_clinc_bundle)]) == 0
    assert "1 intents, 3 examples: ok" in capsys.readouterr().out
    clash = tmp_path / "clash.yaml"
    clash.write_text(GOOD.replace("book_spa", "translate"))
    assert main(["validate", str(clash), "--bundle", str(tiny_clinc_bundle)]) == 1
    assert f"{clash}:2: 'translate' is already an intent" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("oos", ["--bundle", "BUNDLE"]),  # the bundle's trained out-of-scope class
        ("out_of_scope", []),  # the default out-of-scope intent, bundle or not
        ("nlu_fallback", ["--out-of-scope-intent", "nlu_fallback"]),
    ],
)
def test_validate_refuses_what_the_server_refuses(
    tmp_path, tiny_clinc_bundle, capsys, name, options
):
    """The same names and the same message as the server's loader (`Engine.build_extensions`)."""
    path = tmp_path / "ext.yaml"
    path.write_text(GOOD.replace("book_spa", name))
    options = [str(tiny_clinc_bundle) if o == "BUNDLE" else o for o in options]
    assert main(["validate", str(path), *options]) == 1
    cli_message = capsys.readouterr().err.strip().removeprefix("error: ")
    fallback = options[-1] if "--out-of-scope-intent" in options else "out_of_scope"
    engine = Engine(
        tiny_clinc_bundle,
        settings=EngineSettings(intra_op_threads=1),
        open_world=OpenWorldSettings(out_of_scope_intent=fallback),
    )
    with pytest.raises(ExtensionError) as server:
        engine.build_extensions(path, path.read_text())
    assert str(server.value) == cli_message
    assert f"'{name}' is already an intent" in cli_message


def test_engine_answers_close_utterances_with_the_extension(tiny_clinc_bundle):
    engine = Engine(tiny_clinc_bundle, settings=EngineSettings(intra_op_threads=1))
    examples = ["book me a massage for tomorrow", "i want a spa appointment", "facial at the spa"]
    text = GOOD.replace("      - schedule a facial at the spa", "      - facial at the spa")
    engine.open_world.extensions = engine.build_extensions(Path("ext.yaml"), text)
    assert engine.open_world.extension_threshold is not None
    for frame in engine.parse(examples):  # each is its own nearest example (similarity 1)
        assert frame.extension and frame.intent == "book_spa" and not frame.out_of_scope
        assert frame.confidence == pytest.approx(1.0, abs=1e-3)
    engine.open_world.extensions = None
    assert not any(f.extension for f in engine.parse(examples))


def test_a_negative_margin_lets_extensions_win_when_less_similar(tiny_clinc_bundle):
    settings = OpenWorldSettings(extension_similarity_threshold=-1.0, extension_margin=-2.0)
    engine = Engine(
        tiny_clinc_bundle, settings=EngineSettings(intra_op_threads=1), open_world=settings
    )
    engine.open_world.extensions = engine.build_extensions(Path("ext.yaml"), GOOD)
    frames = engine.parse(["what is the weather in paris", "set an alarm for six"])
    assert all(f.extension and f.intent == "book_spa" for f in frames)


def test_every_extension_intent_past_the_threshold_is_a_candidate(tiny_clinc_bundle):
    two = GOOD + (
        "  - name: pet_grooming\n"
        "    description: Book a grooming session for a pet.\n"
        "    examples: [wash my dog tomorrow, trim my cat's claws, groom the poodle on friday]\n"
    )
    settings = OpenWorldSettings(extension_similarity_threshold=-1.0)
    engine = Engine(
        tiny_clinc_bundle, settings=EngineSettings(intra_op_threads=1), open_world=settings
    )
    engine.open_world.extensions = engine.build_extensions(Path("ext.yaml"), two)
    (frame,) = engine.parse(["wash my dog tomorrow"])
    names = [m.intent.name for m in frame.extension_candidates]
    assert names[0] == "pet_grooming" and set(names) == {"pet_grooming", "book_spa"}
    assert frame.extension_candidates[0].similarity == pytest.approx(1.0, abs=1e-3)
    assert frame.extension_candidates[0].intent.description.startswith("Book a grooming")
    strict = Engine(
        tiny_clinc_bundle,
        settings=EngineSettings(intra_op_threads=1),
        open_world=OpenWorldSettings(extension_similarity_threshold=0.999),
    )
    strict.open_world.extensions = strict.build_extensions(Path("ext.yaml"), two)
    (frame,) = strict.parse(["wash my dog tomorrow"])
    assert [m.intent.name for m in frame.extension_candidates] == ["pet_grooming"]


def test_extension_similarity_is_each_intents_nearest_example():
    from service.contract.types import ExtensionIntent
    from service.extensions import ExtensionSet

    intents = tuple(ExtensionIntent(n, "", ("a", "b")) for n in ("x", "y"))
    examples = np.eye(4, dtype=np.float32)  # (M=4, H=4): x owns rows 0-1, y rows 2-3
    extensions = ExtensionSet("f", "", intents, examples, np.array([0, 0, 1, 1]))
    query = np.array([[0.1, 0.9, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    assert extensions.similarity(query) == pytest.approx(np.array([[0.9, 0.3], [0.0, 1.0]]))
