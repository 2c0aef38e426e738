"""What one call is, per protocol: an async `send(text) -> (code, details)` on a connection a
target opens. Codes are gRPC code names ("OK", "UNAVAILABLE", ...) for every protocol (HTTP
statuses map through the JSON error's `status`), so the tallies read alike.

- `NluGrpc`: nlu.v1 `Parse` (TLS, mTLS and a bearer token as `service.client` takes them);
- `NluHttp`: `POST /v1/parse`, one keep-alive connection per caller;
- `KServeGrpc`: the KServe v2 `ModelInfer` that Triton and MLServer serve, one utterance as a
  BYTES tensor of shape (1, 1).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from service.client import request
from service.gen.nlu.v1 import nlu_pb2_grpc

Send = Callable[[str], Awaitable[tuple[str, str]]]
TIMEOUT_S = 10.0


def rpc_error(e: grpc.aio.AioRpcError) -> tuple[str, str]:
    return e.code().name, e.details() or ""


@dataclass(frozen=True)
class Tls:
    ca_file: Path | None = None  # verify the server against this CA (TLS on when set)
    cert_file: Path | None = None  # mTLS: this client's certificate and key
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca_file is None:
            return None
        chain = self.cert_file.read_bytes() if self.cert_file else None
        key = self.key_file.read_bytes() if self.key_file else None
        return grpc.ssl_channel_credentials(self.ca_file.read_bytes(), key, chain)


def grpc_channel(address: str, tls: Tls) -> grpc.aio.Channel:
    credentials = tls.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


@dataclass(frozen=True)
class NluGrpc:
    address: str
    tls: Tls = Tls()
    token: str | None = None
    name: str = "nlu"
    per_caller = False  # one HTTP/2 channel shared by every caller

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        async with grpc_channel(self.address, self.tls) as channel:
            stub = nlu_pb2_grpc.NluServiceStub(channel)

            async def send(text: str) -> tuple[str, str]:
                try:
                    await stub.Parse(request(text), timeout=TIMEOUT_S, metadata=metadata)
                except grpc.aio.AioRpcError as e:
                    return rpc_error(e)
                return "OK", ""

            yield send


HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED",
              503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


@dataclass(frozen=True)
class NluHttp:
    url: str
    tls: Tls = Tls()
    token: str | None = None
    name: str = "nlu-http"
    per_caller = True  # one keep-alive connection per caller, as HTTP/1.1 clients do

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        verify: object = True
        if self.tls.ca_file is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_file))
            if self.tls.cert_file is not None:
                context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            verify = context
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
                return HTTP_CODES.get(answer.status_code, "UNKNOWN"), answer.text[:200]

            yield send


@dataclass(frozen=True)
class KServeGrpc:
    address: str
    model: str = "nlu"
    name: str = "kserve"
    per_caller = False

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Send]:
        from benchmarks.gen.inference import predict_v2_pb2 as pb
        from benchmarks.gen.inference import predict_v2_pb2_grpc as pb_grpc

        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def send(text: str) -> tuple[str, str]:
                tensor = pb.ModelInferRequest.InferInputTensor(
                    name="text", datatype="BYTES", shape=[1, 1],
                    contents=pb.InferTensorContents(bytes_contents=[text.encode()]),
                )  # fmt: skip
                try:
                    await stub.ModelInfer(
                        pb.ModelInferRequest(model_name=self.model, inputs=[tensor]),
                        timeout=TIMEOUT_S,
                    )
                except grpc.aio.AioRpcError as e:
                    return rpc_error(e)
                return "OK", ""

            yield send
