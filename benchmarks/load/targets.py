"""What one call is, per protocol: an async `send(text) -> (code, details)` on a connection a
target opens. Codes are gRPC code names ("OK", "UNAVAILABLE", ...) for every protocol (HTTP
errors give the JSON error's `status`), so the tallies read alike.

- `NluGrpc`: nlu.v1 `Parse` (TLS, mTLS and a bearer token: `service.client.Credentials`);
- `NluHttp`: `POST /v1/parse`, one keep-alive connection per caller;
- `KServeGrpc`: the KServe v2 `ModelInfer` that Triton and MLServer serve, one utterance as a
  BYTES tensor of shape (1, 1).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import httpx

from service.client import Credentials, request
from service.gen.nlu.v1 import nlu_pb2_grpc

Send = Callable[[str], Awaitable[tuple[str, str]]]
TIMEOUT_S = 10.0
# Every channel its own TCP connection: grpc otherwise shares one between channels to the same
# address, and a server of several processes on one port (SO_REUSEPORT) spreads connections.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Target(Protocol):
    """Where the load goes: `connect()` opens one connection and yields its `send`."""

    per_caller: bool  # a connection per caller (HTTP/1.1), else a few shared by all (HTTP/2)

    def connect(self) -> contextlib.AbstractAsyncContextManager[Send]: ...


def rpc_error(e: grpc.aio.AioRpcError) -> tuple[str, str]:
    return e.code().name, e.details() or ""


@dataclass(frozen=True)
class NluGrpc:
    address: str
    credentials: Credentials = field(default_factory=Credentials)
    per_caller = False

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        metadata = self.credentials.metadata() or None
        async with self.credentials.aio_channel(self.address, OWN_CONNECTION) as channel:
            stub = nlu_pb2_grpc.NluServiceStub(channel)

            async def send(text: str) -> tuple[str, str]:
                try:
                    await stub.Parse(request(text), timeout=TIMEOUT_S, metadata=metadata)
                except grpc.aio.AioRpcError as e:
                    return rpc_error(e)
                return "OK", ""

            yield send


def http_error_status(answer: httpx.Response) -> str:
    """The gRPC code name the JSON error carries (Google's error model), else UNKNOWN."""
    try:
        return answer.json()["error"]["status"]
    except (ValueError, KeyError, TypeError):
        return "UNKNOWN"


@dataclass(frozen=True)
class NluHttp:
    url: str
    credentials: Credentials = field(default_factory=Credentials)
    per_caller = True

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        token = self.credentials.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: ssl.SSLContext | bool = True
        if self.credentials.tls_ca is not None:
            verify = ssl.create_default_context(cafile=str(self.credentials.tls_ca))
            if self.credentials.tls_cert is not None:
                verify.load_cert_chain(self.credentials.tls_cert, self.credentials.tls_key)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, limits=limits, timeout=TIMEOUT_S, verify=verify
        ) as http:

            async def send(text: str) -> tuple[str, str]:
                try:
                    answer = await http.post("/v1/parse", json={"text": text})
                except httpx.TimeoutException:
                    return "DEADLINE_EXCEEDED", "client timeout"
                except httpx.TransportError as e:
                    return "UNAVAILABLE", str(e)
                if answer.status_code == 200:
                    return "OK", ""
                return http_error_status(answer), answer.text[:200]

            yield send


def kserve_request(text: str, model: str):
    """One utterance as KServe v2 `ModelInfer`: a BYTES tensor `text` of shape (1, 1)."""
    from benchmarks.gen.inference import predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1, 1],
        contents=pb.InferTensorContents(bytes_contents=[text.encode()]),
    )  # fmt: skip
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


@dataclass(frozen=True)
class KServeGrpc:
    address: str
    model: str = "nlu"
    per_caller = False

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        from benchmarks.gen.inference import predict_v2_pb2_grpc as pb_grpc

        async with grpc.aio.insecure_channel(self.address, OWN_CONNECTION) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def send(text: str) -> tuple[str, str]:
                try:
                    await stub.ModelInfer(kserve_request(text, self.model), timeout=TIMEOUT_S)
                except grpc.aio.AioRpcError as e:
                    return rpc_error(e)
                return "OK", ""

            yield send
