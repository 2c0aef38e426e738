"""The bundle behind Triton Inference Server (PyTriton: the real `tritonserver` binary, its
dynamic batcher, and a Python handler bound to it), in `.venv-triton`.

    .venv-triton/bin/python -m benchmarks.peers.triton_server --bundle bundles/atis \
        --grpc-port 8001 --http-port 8000 --metrics-port 8002

Model `nlu`: input `text` (BYTES, one utterance per row), output `frame` (BYTES: the answer's
JSON). Batching: `benchmarks.peers.batching.TRITON`; one handler instance (the engine runs its
own threads over the cores).
"""

from __future__ import annotations

import signal

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peers.batching import TRITON
from benchmarks.peers.model import answer, load_engine, server_arguments


def main() -> None:
    args = server_arguments(__doc__)
    engine = load_engine(args.bundle)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:  # text: (B, 1) bytes
        frames = answer(engine, [row[0].decode("utf-8") for row in text])
        return {"frame": np.array(frames, dtype=np.object_).reshape(-1, 1)}  # (B, 1)

    config = TritonConfig(
        grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="nlu",
            infer_func=[infer] * TRITON["instances"],
            inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="frame", dtype=bytes, shape=(1,))],
            config=ModelConfig(
                max_batch_size=TRITON["max_batch_size"],
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=TRITON["max_queue_delay_microseconds"]
                ),
            ),
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())  # nohup ignores SIGINT
        triton.serve()


if __name__ == "__main__":
    main()
