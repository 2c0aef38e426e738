"""int8 recipes for an fp32 ONNX graph: dynamic quantisation of its MatMuls, per tensor or per
output channel, optionally keeping whole encoder layers in fp32.

Which layers to keep is measured, not guessed (`rank_layers`): each layer is quantised alone and
ranked by how far that moves the graph's outputs on a dev sample; `export.onnx` keeps the most
sensitive ones in fp32 only when no fully quantised graph passes its gate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

LAYER = re.compile(r"/layers?\.(\d+)/")


def quantize(
    src: Path, dst: Path, *, per_channel: bool = False, keep_fp32: Iterable[str] = ()
) -> None:
    """Dynamic int8 weights (activations scaled at run time), except the nodes in `keep_fp32`.
    onnxruntime's quantizer advises "pre-processing" on the root logger for every graph: advice
    for static calibration that does not apply here, so it is silenced."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=list(keep_fp32),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def layer_groups(graph: Path) -> dict[str, list[str]]:
    """The MatMul/Gemm nodes of each encoder layer ("layer.0", ...), named as in the graph."""
    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(graph), load_external_data=False).graph.node:
        found = LAYER.search(node.name)
        if node.op_type in ("MatMul", "Gemm") and found:
            groups.setdefault(f"layer.{found.group(1)}", []).append(node.name)
    return groups


def rank_layers(
    fp32: Path,
    work: Path,
    groups: dict[str, list[str]],
    divergence: Callable[[Path], float],
) -> list[tuple[str, float]]:
    """Layers, most sensitive first, with how far `divergence` (of a graph from fp32's outputs)
    moves when that layer alone is quantised (per channel)."""
    every = {n for nodes in groups.values() for n in nodes}
    ranked = []
    for name, nodes in groups.items():
        path = work / f"only-{name}.int8.onnx"
        quantize(fp32, path, per_channel=True, keep_fp32=every - set(nodes))
        ranked.append((name, round(divergence(path), 5)))
        path.unlink()
    return sorted(ranked, key=lambda item: -item[1])
