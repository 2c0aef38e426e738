"""The int8 recipe for when no fully quantised graph passes: the encoder layers that quantisation
moves most, measured on dev, stay fp32."""

from __future__ import annotations

import onnx

from export.artifacts import load_artifacts
from export.onnx import (
    evaluation_splits,
    export_candidates,
    input_names,
    int8_keeping_sensitive_layers,
)
from export.quantization import layer_groups


def test_the_most_sensitive_layer_stays_fp32_and_the_rest_is_quantised(tiny_model, tmp_path):
    artifacts = load_artifacts(tiny_model, attn_implementation="eager")
    names = input_names(artifacts.model)
    splits = evaluation_splits(artifacts, None, 40)
    candidates, _ = export_candidates(artifacts, tmp_path, names)
    groups = layer_groups(candidates["optimized"])
    assert len(groups) >= 2 and all(groups.values())

    name, path = int8_keeping_sensitive_layers(
        artifacts, candidates["optimized"], tmp_path, splits, names, max_drop=1000.0
    )  # any drop passes: the fewest layers, one, are kept
    kept = name.removeprefix("optimized.int8pc+fp32:").split("+")
    assert len(kept) == 1 and kept[0] in groups
    float_matmuls = {
        n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("MatMul", "Gemm")
    }
    assert set(groups[kept[0]]) <= float_matmuls
    quantised = {n for layer, nodes in groups.items() if layer != kept[0] for n in nodes}
    assert not quantised & float_matmuls
