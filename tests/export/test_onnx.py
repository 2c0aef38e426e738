from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from export.onnx import build_bundle
from export.verify import main as bundle_main
from service.contract.bundle import BundleError, load_bundle, verify


def test_bundle_holds_every_file_with_checksums(tiny_bundle):
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert set(config["files"]) == {
        "model.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
        "tokenizer.json",
        "labels.json",
        "index/embeddings.npy",
        "index/examples.jsonl",
        "oos/knn_embeddings.npy",  # extension intents compare against it, whatever the method
        "oos/knn_intents.npy",
    }
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config["outputs"] == ["intent_logits", "slot_logits", "embedding"]
    assert config["opset"] >= 17
    for key in ("encoder", "max_seq_len", "temperature", "dataset", "created_at"):
        assert key in config
    assert set(config["metrics"]) == {"torch", "onnx_fp32", "onnx_int8", "onnx_fp16"}
    assert config["variants"]["fp32"]["graph"] in ("plain", "optimized")
    assert ".int8" in config["variants"]["int8"]["graph"]
    assert not (tiny_bundle / ".build").exists()


def test_fp32_parity_with_torch_is_recorded_for_every_fp32_candidate(tiny_bundle):
    config = json.loads((tiny_bundle / "config.json").read_text())
    for name in ("plain", "optimized"):
        parity = config["candidates"][name]["parity_dev_vs_torch"]
        assert parity["max_abs_logit_diff"] <= 1e-3
        assert parity["intent_argmax_agreement"] >= 99.9
        assert parity["tag_argmax_agreement"] >= 99.9
    assert config["metrics"]["onnx_fp32"] == config["metrics"]["torch"]


def test_the_fp16_graph_passes_its_parity_gate_and_answers_as_fp32(tiny_bundle, caplog):
    """fp16 weights and activations, fp32 logits out: within its gate against PyTorch on dev,
    batched like fp32, and on these utterances the same intents, slots and offsets (confidence
    to a tolerance); on the CPU provider the engine says it is no faster than fp32."""
    from service.runtime import Engine
    from service.settings import EngineSettings

    config = load_bundle(tiny_bundle).config
    fp16 = config.variants["fp16"]
    assert fp16.graph == "optimized.fp16" and fp16.file == "model.fp16.onnx"
    assert fp16.parity_dev_vs_torch["max_abs_logit_diff"] <= 0.05
    assert (
        min(
            fp16.parity_dev_vs_torch[k] for k in ("intent_argmax_agreement", "tag_argmax_agreement")
        )
        >= 99.5
    )
    assert set(fp16.dev_drop_vs_fp32) == set(fp16.dev) and config.served_variant == "int8"
    size = {v: (tiny_bundle / r.file).stat().st_size for v, r in config.variants.items()}
    assert size["fp16"] < 0.6 * size["fp32"]
    texts = ["list airlines", "flights from boston to denver tomorrow", "what is fare code h"]
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        half = Engine(tiny_bundle, settings=EngineSettings(variant="fp16", intra_op_threads=1))
    assert "fp16 graph on the CPU provider" in caplog.text and not half.per_row
    full = Engine(tiny_bundle, settings=EngineSettings(variant="fp32", intra_op_threads=1))
    for a, b in zip(half.parse(texts), full.parse(texts), strict=True):
        spans = [[(s.name, s.value, s.start, s.end) for s in f.slots] for f in (a, b)]
        assert a.intent == b.intent and spans[0] == spans[1]
        assert a.confidence == pytest.approx(b.confidence, abs=0.01)
        for x, y in zip(a.slots, b.slots, strict=True):
            assert x.confidence == pytest.approx(y.confidence, abs=0.01)


def test_an_fp16_graph_outside_its_parity_gate_is_left_out(caplog):
    from export.onnx import choose_variants
    from service.contract.bundle import CandidateReport

    metrics = {"intent_acc": 95.0, "slot_f1": 90.0, "sentence_acc": 80.0}

    def report(diff: float, agreement: float) -> CandidateReport:
        parity = {
            "max_abs_logit_diff": diff,
            "intent_argmax_agreement": agreement,
            "tag_argmax_agreement": 100.0,
        }
        return CandidateReport(
            test=metrics, dev=metrics, batch1_p50_ms=2.0, parity_dev_vs_torch=parity
        )

    reports = {"plain": report(0.0, 100.0), "optimized": report(0.0, 100.0)}
    reports["optimized.fp16"] = report(0.01, 100.0)
    assert choose_variants(reports, 0.3) == {"fp32": "optimized", "fp16": "optimized.fp16"}
    for diff, agreement in ((0.2, 100.0), (0.01, 99.0)):
        reports["optimized.fp16"] = report(diff, agreement)
        with caplog.at_level(logging.WARNING, logger="export.onnx"):
            assert choose_variants(reports, 0.3) == {"fp32": "optimized"}
        assert "fails its parity gate on dev" in caplog.text
        assert "the bundle holds no fp16 graph" in caplog.text
        caplog.clear()


def test_when_no_int8_graph_passes_the_bundle_serves_fp32(tiny_model, tmp_path, caplog):
    """A gate no int8 graph can pass (a negative drop) still writes a bundle: fp32 only, named as
    the served variant, with a warning naming the drops; the engine serves it by default."""
    from service.runtime import Engine
    from service.settings import EngineSettings

    with caplog.at_level(logging.WARNING, logger="export.onnx"):
        config = build_bundle(tiny_model, tmp_path, max_int8_drop=-1.0)
    assert "no int8 graph within -1.0 points of fp32" in caplog.text
    assert "no int8 recipe passed the gate: the bundle serves fp32" in caplog.text
    assert config.served_variant == "fp32" and list(config.variants) == ["fp32", "fp16"]
    assert not (tmp_path / "model.int8.onnx").exists()
    engine = Engine(tmp_path, settings=EngineSettings(intra_op_threads=1))
    assert engine.variant == "fp32" and engine.parse(["list airlines"])[0].intent
    with pytest.raises(BundleError, match="holds only fp32"):
        Engine(tmp_path, settings=EngineSettings(variant="int8"))


def test_a_bundle_whose_int8_graph_passes_serves_int8(tiny_bundle):
    assert load_bundle(tiny_bundle).config.served_variant == "int8"


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def test_verify_catches_a_flipped_byte(bundle_copy, capsys):
    path = bundle_copy / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: sha256 does not match"):
        load_bundle(bundle_copy)
    assert bundle_main([str(bundle_copy)]) == 1
    assert "model.int8.onnx" in capsys.readouterr().err


def test_verify_catches_a_missing_file(bundle_copy):
    (bundle_copy / "labels.json").unlink()
    with pytest.raises(BundleError, match=r"labels\.json: missing"):
        verify(bundle_copy)


def test_a_bundle_from_another_format_version_is_refused_naming_it(bundle_copy):
    path = bundle_copy / "config.json"
    config = json.loads(path.read_text())
    config["format_version"] = 2
    path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"config\.json: format_version 2 is not one"):
        load_bundle(bundle_copy)


def test_a_config_missing_a_field_is_refused_naming_it(bundle_copy):
    path = bundle_copy / "config.json"
    config = json.loads(path.read_text())
    del config["temperature"]
    path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"config\.json: not a valid bundle config \(temperature"):
        load_bundle(bundle_copy)


def test_verify_cli_accepts_an_intact_bundle(tiny_bundle, capsys):
    assert bundle_main([str(tiny_bundle)]) == 0
    assert "OK" in capsys.readouterr().out


def test_bundle_crf_parameters_round_trip(tiny_encoder, small_atis, tmp_path):
    from export.artifacts import load_artifacts
    from export.train import TrainConfig, train

    model_dir = tmp_path / "model"
    train(
        TrainConfig(
            data=str(small_atis),
            out=str(model_dir),
            encoder=str(tiny_encoder),
            epochs=1,
            threads=1,
            crf=True,
            limit_train=64,
        )
    )
    build_bundle(model_dir, tmp_path / "bundle", max_int8_drop=100.0)
    bundle = load_bundle(tmp_path / "bundle")
    expected = load_artifacts(model_dir).model.crf.numpy_params()
    assert bundle.crf is not None
    for got, want in zip(bundle.crf, expected, strict=True):
        np.testing.assert_allclose(got, want)


def test_retrieval_index_finds_each_training_utterance_first(tiny_bundle, small_atis):
    from export.data import read_dataset
    from service.contract.retrieval import load_index

    index = load_index(tiny_bundle)
    train = read_dataset(small_atis).splits["train"]
    assert index is not None and len(index.examples) == len(train) == len(index.embeddings)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-2)
    first = index.examples[0]
    assert first.text == train[0].text and first.intent == train[0].intent
    assert {s["name"] for s in first.slots} <= {t[2:] for t in train[0].tags if t != "O"}
    hits = index.nearest(index.embeddings[5], k=3)
    assert (len(hits) == 3 and hits[0].text == train[5].text) or np.allclose(
        index.embeddings[index.examples.index(hits[0])], index.embeddings[5], atol=1e-3
    )


def test_a_slim_bundle_holds_one_variant_and_verifies(tiny_bundle, tmp_path, capsys):
    from export.slim import main as slim_main
    from service.runtime import Engine
    from service.settings import EngineSettings

    out = tmp_path / "slim"
    assert slim_main(["--bundle", str(tiny_bundle), "--variant", "int8", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "labels.json",
        "model.int8.onnx",
        "oos",  # the out-of-scope reference data always travels
        "tokenizer.json",
    ]
    bundle = load_bundle(out)
    assert list(bundle.config.variants) == ["int8"]
    assert bundle.config.derived_from == verify(tiny_bundle)[1]
    full = Engine(tiny_bundle, settings=EngineSettings(intra_op_threads=1))
    slim = Engine(out, settings=EngineSettings(intra_op_threads=1))
    (a,), (b,) = slim.parse(["list airlines"]), full.parse(["list airlines"])
    assert (a.intent, a.confidence, a.slots) == (b.intent, b.confidence, b.slots)
    with pytest.raises(BundleError, match="holds only int8"):
        Engine(out, settings=EngineSettings(variant="fp32"))
    (out / "model.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: sha256 does not match"):
        load_bundle(out)


def test_int8_graphs_about_as_fast_are_ranked_by_their_drop_not_by_timing_noise():
    from export.onnx import choose_variants
    from service.contract.bundle import CandidateReport

    def report(ms: float, intent: float) -> CandidateReport:
        metrics = {"intent_acc": intent, "slot_f1": 90.0, "sentence_acc": 80.0}
        return CandidateReport(test=metrics, dev=metrics, batch1_p50_ms=ms)

    reports = {
        "plain": report(2.0, 95.0),
        "optimized": report(1.8, 95.0),
        "plain.int8": report(0.9, 94.8),  # the fastest, 0.2 lost: within the gate
        "optimized.int8pc": report(0.95, 95.0),  # 5 % slower: as fast, and nothing lost
        "optimized.int8": report(1.5, 95.0),
    }
    assert choose_variants(reports, 0.3) == {"fp32": "optimized", "int8": "optimized.int8pc"}
    pinned = {"fp32": "plain", "int8": "plain.int8"}
    assert choose_variants(reports, 0.3, pinned) == pinned
    with pytest.raises(ValueError, match=r"pinned int8 graph 'plain\.int8'"):
        choose_variants(reports, 0.1, {"int8": "plain.int8"})  # loses 0.2: fails this gate
    reports["optimized.int8pc"] = report(1.2, 95.0)  # now clearly slower
    assert choose_variants(reports, 0.3)["int8"] == "plain.int8"


def test_the_choice_reads_dev_and_the_fp32_graph_does_not_flip_with_timing_noise():
    from export.onnx import choose_variants
    from service.contract.bundle import CandidateReport

    def report(ms: float, dev_intent: float, test_intent: float) -> CandidateReport:
        other = {"slot_f1": 90.0, "sentence_acc": 80.0}
        return CandidateReport(
            dev={"intent_acc": dev_intent, **other},
            test={"intent_acc": test_intent, **other},
            batch1_p50_ms=ms,
        )

    reports = {
        "plain": report(1.9, 95.0, 95.0),  # 5 % faster than optimized: noise, not a ranking
        "optimized": report(2.0, 95.0, 95.0),
        "plain.int8": report(0.9, 94.5, 95.0),  # loses 0.5 on dev (nothing on test): refused
        "optimized.int8pc": report(1.0, 95.0, 94.0),  # nothing lost on dev: chosen
    }
    choice = choose_variants(reports, 0.3)
    assert choice == {"fp32": "optimized", "int8": "optimized.int8pc"}
    assert reports["optimized.int8pc"].dev_drop_vs_fp32["intent_acc"] == 0.0
    assert reports["optimized.int8pc"].drop_vs_fp32["intent_acc"] == 1.0  # reported only
    reports["plain"] = report(1.5, 95.0, 95.0)  # 25 % faster: clearly
    assert choose_variants(reports, 0.3)["fp32"] == "plain"
