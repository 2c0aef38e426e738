"""The bundle behind MLServer (Seldon's KServe-v2 server, adaptive batching), in `.venv-mlserver`.

    .venv-mlserver/bin/python -m benchmarks.peers.mlserver_runtime --bundle bundles/atis \
        --grpc-port 8081 --http-port 8080 --metrics-port 8082

Writes a model repository (settings.json, model-settings.json) into a temporary folder and runs
`mlserver start` on it. Model `nlu`: input `text` (BYTES, one utterance per row), output `frame`
(BYTES: the answer's JSON), as the Triton peer's. Adaptive batching and workers:
`benchmarks.peers.batching.MLSERVER`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from benchmarks.peers.batching import MLSERVER
from benchmarks.peers.model import answer, load_engine, server_arguments


class NluRuntime(MLModel):
    async def load(self) -> bool:
        self.engine = load_engine(Path(self.settings.parameters.uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])  # (B,) once batched
        frames = [frame.decode("utf-8") for frame in answer(self.engine, texts)]
        return InferenceResponse(
            model_name=self.name, outputs=[StringCodec.encode_output("frame", frames)]
        )


def main() -> None:
    args = server_arguments(__doc__)
    repository = Path(tempfile.mkdtemp(prefix="mlserver-"))
    server = {
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "metrics_port": args.metrics_port,
        "parallel_workers": MLSERVER["parallel_workers"],
        "metrics_dir": str(repository / "metrics"),
        "debug": False,
    }
    model = {
        "name": "nlu",
        "implementation": "benchmarks.peers.mlserver_runtime.NluRuntime",
        "max_batch_size": MLSERVER["max_batch_size"],
        "max_batch_time": MLSERVER["max_batch_time_s"],
        "parameters": {"uri": str(args.bundle.resolve())},
    }
    (repository / "settings.json").write_text(json.dumps(server))
    (repository / "model-settings.json").write_text(json.dumps(model))
    mlserver = Path(sys.executable).with_name("mlserver")
    os.execv(mlserver, [str(mlserver), "start", str(repository)])


if __name__ == "__main__":
    main()
