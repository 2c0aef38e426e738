"""How far the engine is from what these cores can do: the work per utterance, the machine's
peak for it, and the kernels ONNX Runtime actually runs. Part of the engine suite's result.

- MACs per utterance of a BERT encoder at T tokens (L layers, hidden H, intermediate F):
  L · (4·T·H² projections + 2·T·H·F feed-forward + 2·T²·H attention), averaged over the real
  token counts (T² makes the mean of the lengths the wrong input).
- Nominal peak from the CPU's flags: per core and cycle, fp32 FMA lanes × 2 FMA pipes (AVX2: 8
  lanes, AVX-512: 16); int8 with VNNI (`vpdpbusd`: 4 MACs per 32-bit lane), else AVX2's
  `vpmaddubsw` path (2 per lane); times the cores and the clock `/proc/cpuinfo` reports.
- Practical fp32 peak: a large float32 matrix product through numpy's BLAS on the same cores.
- Kernels: ONNX Runtime's own profile of a pass over the utterances, time per operator type.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract.graph import OUTPUTS, onnx_feeds
from service.runtime import Engine

FMA_PIPES = 2


def macs_per_utterance(config: dict, token_counts: list[int]) -> float:
    layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    inner = config["intermediate_size"]
    t = np.asarray(token_counts, dtype=np.float64)
    per_layer = 4 * t * hidden**2 + 2 * t * hidden * inner + 2 * t**2 * hidden
    return float(np.mean(layers * per_layer))


def cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (`flags`, `cpu MHz`, ...)."""
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first CPU's block is over
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def nominal_peak(flags: set[str], mhz: float | None, cores: int) -> dict:
    """MACs per second the flags allow (None without a clock to multiply by)."""
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fp32 = lanes * FMA_PIPES  # MACs per core per cycle
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    int8 = lanes * FMA_PIPES * (4 if vnni else 2)
    hz = mhz * 1e6 * cores if mhz else None
    return {
        "isa": ("avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse")
        + (" + vnni" if vnni else ""),
        "fp32_macs_per_cycle_per_core": fp32,
        "int8_macs_per_cycle_per_core": int8,
        "mhz": mhz,
        "fp32_gmacs": round(fp32 * hz / 1e9, 1) if hz else None,
        "int8_gmacs": round(int8 * hz / 1e9, 1) if hz else None,
    }


def gemm_gmacs(size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 GEMM through numpy's BLAS (all cores): a practical fp32 ceiling."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return round(size**3 / best / 1e9, 1)


def kernel_profile(engine: Engine, texts: list[str]) -> dict[str, float]:
    """Share of ONNX Runtime's node time per operator type (one profiled session, batch 1)."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        options.intra_op_num_threads = engine.intra_op_threads
        session = ort.InferenceSession(
            str(engine.bundle.model_file(engine.variant)), options, providers=engine.providers
        )
        for text in texts:
            session.run(
                list(OUTPUTS), onnx_feeds(engine.encode([text]), engine.bundle.config.inputs)
            )
        events = json.loads(Path(session.end_profiling()).read_text())
    time_per_op: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            time_per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(time_per_op.values()) or 1
    return {op: round(100 * us / total, 1) for op, us in time_per_op.most_common(8)}


def token_counts(engine: Engine, texts: list[str]) -> list[int]:
    """Tokens the engine feeds its graph per utterance (special tokens included)."""
    return [int(engine.encode([t]).attention_mask.sum()) for t in texts]


def machine_limits(cores: int) -> dict:
    """What these cores can do, whatever the model: measured once per run."""
    info = cpuinfo()
    mhz = float(info["cpu MHz"]) if "cpu MHz" in info else None
    return {
        "nominal_peak": nominal_peak(set(info.get("flags", "").split()), mhz, cores),
        "numpy_fp32_gemm_gmacs": gemm_gmacs(),
    }


def limit_report(
    engine: Engine, encoder_config: dict, texts: list[str], tokens: list[int], machine: dict
) -> dict:
    """One variant against the machine: `tokens` are `texts`' counts (`token_counts`)."""
    macs = macs_per_utterance(encoder_config, tokens)
    precision = "int8" if engine.variant == "int8" else "fp32"
    ceiling = machine["nominal_peak"][f"{precision}_gmacs"]
    return {
        "variant": engine.variant,
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "gmacs_per_utterance": float(f"{macs / 1e9:.4g}"),
        **machine,
        "nominal_limit_utt_per_s": round(ceiling * 1e9 / macs) if ceiling else None,
        "ort_kernel_time_pct": kernel_profile(engine, texts[:200]),
    }
