from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from export.artifacts import load_artifacts
from export.distill import TeacherError, load_teacher, soft_target_loss
from export.evaluate import main as evaluate_main
from export.inference import run_model
from export.margin import MarginLoss
from export.train import TrainConfig, parse_args, train
from service.contract.labels import LabelSet


def test_training_writes_a_plain_json_model_folder(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    labels = json.loads((tiny_model / "labels.json").read_text())
    assert config["train"]["epochs"] == 2 and config["epochs_run"] == 2
    assert 1 <= config["best_epoch"] <= 2
    assert config["temperature"] > 0
    assert set(config["calibration_dev"]) == {"temperature", "ece_before", "ece_after"}
    assert labels["slot_tags"][0] == "O" and len(labels["intents"]) > 1
    history = [
        json.loads(line) for line in (tiny_model / "train_log.jsonl").read_text().splitlines()
    ]
    assert [h["epoch"] for h in history] == [1, 2]


def test_reloaded_model_reproduces_training_outputs(tiny_model, small_atis):
    from export.data import read_dataset

    artifacts = load_artifacts(tiny_model)
    dev = read_dataset(small_atis).splits["dev"]
    outputs = run_model(artifacts.model, artifacts.tokenizer, [ex.words for ex in dev])
    from export.inference import score

    metrics = score(outputs, dev, artifacts.labels)
    saved = json.loads((tiny_model / "config.json").read_text())["dev"]
    assert {k: metrics[k] for k in saved} == saved


def test_training_is_deterministic(tiny_encoder, small_atis, tmp_path):
    def weights(out):
        train(
            TrainConfig(
                data=str(small_atis),
                out=str(out),
                encoder=str(tiny_encoder),
                epochs=1,
                batch_size=32,
                threads=1,
                limit_train=64,
            )
        )
        return load_artifacts(out).model.state_dict()

    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_cli_writes_json(tiny_model, small_atis, tmp_path, capsys):
    out = tmp_path / "eval.json"
    evaluate_main(
        [
            "--model",
            str(tiny_model),
            "--data",
            str(small_atis),
            "--split",
            "test",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    for key in (
        "intent_acc",
        "slot_f1",
        "sentence_acc",
        "per_intent",
        "worst_slot_types",
        "calibration",
    ):
        assert key in result
    assert 0 <= result["intent_acc"] <= 100
    assert "intent acc" in capsys.readouterr().out


def test_long_utterance_words_past_max_seq_len_are_tagged_o(tiny_model):
    from export.inference import predicted_tags
    from service.contract.text import split_words

    artifacts = load_artifacts(tiny_model)
    words = split_words(" ".join(["boston"] * 200))
    outputs = run_model(artifacts.model, artifacts.tokenizer, [words])
    tags = predicted_tags(outputs.word_logits[0], artifacts.labels)
    max_len = artifacts.config["max_seq_len"]
    assert len(tags) == 200 and set(tags[max_len - 2 :]) == {"O"}
    assert np.isnan(outputs.word_logits[0][max_len - 2 :]).all()


def test_cli_rejects_bad_alpha(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "atis", "--out", "x", "--alpha", "1.5"])
    assert "--alpha must lie in [0, 1]" in capsys.readouterr().err


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    from export.train import main

    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "train" / "seq.in").write_text("fly to boston\n")
    (bad / "train" / "seq.out").write_text("O O\n")
    (bad / "train" / "label").write_text("flight\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(bad), "--out", str(tmp_path / "out")])
    assert str(exit_info.value) == f"error: {bad}/train/seq.out:1: 2 tags for 3 words"


def test_margin_loss_trains_and_leaves_the_saved_model_as_without_it(
    tiny_encoder, small_atis, tmp_path
):
    """The prototypes serve training only: the saved folder loads as a plain joint model."""
    config = train(
        TrainConfig(
            data=str(small_atis),
            out=str(tmp_path / "m"),
            encoder=str(tiny_encoder),
            epochs=1,
            batch_size=32,
            threads=1,
            limit_train=64,
            margin_weight=1.0,
        )
    )
    assert config["train"]["margin_weight"] == 1.0
    assert not any(
        k.startswith("margin") for k in load_artifacts(tmp_path / "m").model.state_dict()
    )


def test_margin_loss_prefers_the_own_prototype_by_the_margin():
    loss = MarginLoss(3, 4, scale=10.0, margin=0.3)
    with torch.no_grad():
        loss.prototypes.copy_(torch.eye(3, 4))
    on_own = loss(torch.eye(3, 4), torch.arange(3))
    on_other = loss(torch.eye(3, 4), torch.tensor([1, 2, 0]))
    assert on_own < on_other


def test_cli_rejects_negative_margin_weight(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "atis", "--out", "x", "--margin-weight", "-1"])
    assert "--margin-weight" in capsys.readouterr().err


def train_small(tiny_encoder, small_atis, out, **overrides) -> dict:
    """One epoch of the tiny encoder on 64 examples."""
    settings = dict(epochs=1, batch_size=32, threads=1, limit_train=64) | overrides
    return train(
        TrainConfig(data=str(small_atis), out=str(out), encoder=str(tiny_encoder), **settings)
    )


def test_distillation_learns_from_the_teacher_and_saves_a_plain_shallow_model(
    tiny_encoder, small_atis, tmp_path
):
    teacher = tmp_path / "teacher"
    train_small(tiny_encoder, small_atis, teacher)
    train_small(tiny_encoder, small_atis, tmp_path / "alone", layers=1)
    config = train_small(
        tiny_encoder, small_atis, tmp_path / "taught", layers=1, distill_from=str(teacher)
    )
    assert config["train"]["distill_from"] == str(teacher)
    alone = load_artifacts(tmp_path / "alone").model
    taught = load_artifacts(tmp_path / "taught").model
    assert taught.encoder.config.num_hidden_layers == 1
    weights, taught_weights = alone.state_dict(), taught.state_dict()
    assert weights.keys() == taught_weights.keys()  # the teacher is not saved with the student
    assert not all(torch.equal(weights[k], taught_weights[k]) for k in weights)
    tokens = train_small(  # without a CRF the soft targets are the labelled sub-tokens
        tiny_encoder,
        small_atis,
        tmp_path / "tokens",
        layers=1,
        crf=False,
        distill_from=str(teacher),
    )
    assert tokens["train"]["crf"] is False and load_artifacts(tmp_path / "tokens").model.crf is None


def test_soft_target_loss_is_zero_on_agreement_and_pulls_the_student_to_the_teacher():
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    assert soft_target_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    soft_target_loss(student, teacher, 2.0).backward()
    assert (student.grad.argmin(dim=-1) == teacher.argmax(dim=-1)).all()  # descent raises them


def test_a_teacher_with_other_labels_tokens_or_length_is_refused(tiny_model, tmp_path):
    artifacts = load_artifacts(tiny_model)
    tokens, seq_len = tiny_model / "tokenizer.json", artifacts.config["max_seq_len"]

    def teach(labels=artifacts.labels, tokenizer=tokens, max_seq_len=seq_len):
        return load_teacher(tiny_model, labels, tokenizer, max_seq_len, [], 2.0, 0.5)

    fewer = LabelSet(artifacts.labels.intents[1:], artifacts.labels.slot_tags)
    with pytest.raises(TeacherError, match="intents and slot tags differ"):
        teach(labels=fewer)
    other = tmp_path / "tokenizer.json"
    other.write_text(tokens.read_text().replace('"[UNK]"', '"[unk]"', 1))
    with pytest.raises(TeacherError, match="share the vocabulary"):
        teach(tokenizer=other)
    with pytest.raises(TeacherError, match="keep the same words"):
        teach(max_seq_len=seq_len + 1)


@pytest.mark.parametrize(
    ("flag", "value"), [("--distill-weight", "1.5"), ("--distill-temperature", "0")]
)
def test_cli_rejects_bad_distillation_settings(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "atis", "--out", "x", flag, value])
    assert flag in capsys.readouterr().err


def test_distillation_skips_a_word_the_tokenizer_drops_mid_sentence(
    tiny_encoder, small_atis, tmp_path
):
    """A word of characters the tokenizer removes ("\ufffd") has no sub-token: the student sees
    the words around it, and the teacher's targets must be those words (SNIPS has one), with
    and without a CRF; the losses stay finite."""
    data = shutil.copytree(small_atis, tmp_path / "data")
    train_dir = data / "train"
    texts, tags = ((train_dir / n).read_text().splitlines() for n in ("seq.in", "seq.out"))
    words, word_tags = texts[0].split(), tags[0].split()
    texts[0] = " ".join([*words[:2], "\ufffd\ufffd", *words[2:]])
    tags[0] = " ".join([*word_tags[:2], "O", *word_tags[2:]])
    (train_dir / "seq.in").write_text("\n".join(texts) + "\n")
    (train_dir / "seq.out").write_text("\n".join(tags) + "\n")
    teacher = tmp_path / "teacher"
    train_small(tiny_encoder, data, teacher)
    for crf in (True, False):
        out = tmp_path / f"taught-crf-{crf}"
        train_small(tiny_encoder, data, out, layers=1, crf=crf, distill_from=str(teacher))
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        assert all(math.isfinite(row["loss"]) for row in log), log


def test_a_non_finite_loss_stops_training_naming_the_epoch(tiny_encoder, small_atis, tmp_path):
    """A teacher whose weights hold NaN gives NaN soft targets: training stops at the first
    batch with a CLI error, no model is written."""
    from safetensors.torch import load_file, save_file

    from export.train import main as train_main

    teacher = tmp_path / "teacher"
    train_small(tiny_encoder, small_atis, teacher)
    weights = load_file(teacher / "model.safetensors")
    weights["intent_head.bias"] = torch.full_like(weights["intent_head.bias"], float("nan"))
    save_file(weights, teacher / "model.safetensors")
    out = tmp_path / "student"
    args = ["--data", str(small_atis), "--out", str(out), "--encoder", str(tiny_encoder)]
    args += ["--epochs", "1", "--threads", "1", "--limit-train", "64", "--layers", "1"]
    with pytest.raises(SystemExit, match=r"error: epoch 1: the loss is nan on the batch of \["):
        train_main([*args, "--distill-from", str(teacher)])
    assert not (out / "model.safetensors").exists()
