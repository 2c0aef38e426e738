"""The serving process. gRPC core prints log lines of its own (`E1202 … add_port.cc`, `Handshake
failed`) among the JSON logs unless GRPC_VERBOSITY says otherwise, and reads it once, when grpc
is first imported: so the default is set here, before any module of the package imports grpc
(a value the caller set wins)."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
