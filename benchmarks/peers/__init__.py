"""The peers the `peers` suite serves the same bundle through (each run in its own virtual
environment, `make peer-venvs`): Triton Inference Server (`triton_server.py`, via PyTriton) and
MLServer (`mlserver_runtime.py`). Both run the service's own Engine per batch, so what differs is
the serving stack: protocol, batching, the Python around the model."""
