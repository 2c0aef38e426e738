"""The nlu.v1 client library (`NluClient`, blocking; `AsyncNluClient`, asyncio) and its command
line.

    from service.client import NluClient
    with NluClient("localhost:50051", token="s3cret") as nlu:
        answer = nlu.parse("book a flight from boston to denver")
        print(answer.intent, [(s.name, s.value) for s in answer.slots])

Every call has a deadline (`timeout_s`); a call refused with UNAVAILABLE or RESOURCE_EXHAUSTED
is retried with exponential backoff (RETRIES times, within the deadline), waiting at least the
server's retry hint (google.rpc.RetryInfo) when it sends one. Channels carry the shipped
service config (SERVICE_CONFIG: round_robin over every address a `dns:///` target resolves to,
health checking, transparent UNAVAILABLE retries).

python -m service.client parse "book a flight to denver" --target localhost:50051
python -m service.client batch utterances.txt        # one utterance per line → JSON lines
python -m service.client info
python -m service.client health
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.nlu.v1 import nlu_pb2, nlu_pb2_grpc

POLICIES = {
    "default": nlu_pb2.ROUTING_POLICY_DEFAULT,
    "encoder": nlu_pb2.ROUTING_POLICY_ENCODER_ONLY,
    "generator": nlu_pb2.ROUTING_POLICY_GENERATOR_ONLY,
}


SERVICE = nlu_pb2.DESCRIPTOR.services_by_name["NluService"].full_name
# The shipped client configuration (a gRPC service config), what makes a rollout invisible to
# callers: calls spread over every address the target resolves to (`dns:///nlu-service-grpc.nlu:
# 50051` names every pod of the headless Service; `ipv4:10.0.0.1:50051,10.0.0.2:50051` a static
# list), a server leaves the rotation as soon as its health turns NOT_SERVING (a drain starts),
# and a call refused with UNAVAILABLE (a server stopping, not loaded yet, unreachable) is sent
# again, to another server, with backoff. Every nlu.v1 method is idempotent, so a retry is safe;
# retry throttling stops retries from multiplying load when most calls fail.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": SERVICE},
    "methodConfig": [
        {
            "name": [{"service": SERVICE}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}
CHANNEL_OPTIONS = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
RETRIES = 3  # library-level attempts after the first, beyond the channel's own
BACKOFF_S, MAX_BACKOFF_S = 0.05, 2.0
T = TypeVar("T")


def retry_hint_s(error: grpc.RpcError) -> float | None:
    """The server's google.rpc.RetryInfo delay, when the status carries one (blocking and
    asyncio errors alike: both carry it in the `grpc-status-details-bin` trailer)."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToTimedelta().total_seconds()
    return None


def next_wait_s(
    error: grpc.RpcError, attempt: int, remaining_s: float, retries: int = RETRIES
) -> float | None:
    """How long to wait before attempt `attempt + 1`, or None when the call should fail now
    (not retryable, out of `retries`, or the wait would pass the deadline)."""
    if error.code() not in RETRYABLE or attempt >= retries:
        return None
    backoff = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0)
    wait = max(backoff, retry_hint_s(error) or 0.0)
    return wait if wait < remaining_s else None


def request(
    text: str,
    request_id: str = "",
    top_k: int = 0,
    policy: str = "default",
    threshold: float | None = None,
) -> nlu_pb2.ParseRequest:
    routing = nlu_pb2.RoutingOptions(policy=POLICIES[policy])
    if threshold is not None:
        routing.confidence_threshold = threshold
    return nlu_pb2.ParseRequest(text=text, request_id=request_id, top_k=top_k, routing=routing)


def as_dict(message) -> dict:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


@dataclass(frozen=True)
class Credentials:
    """How to reach a server that needs TLS, a client certificate or a bearer token."""

    tls_ca: Path | None = None  # PEM CA that signed the server's certificate: TLS when set
    tls_cert: Path | None = None  # PEM client certificate (mutual TLS), with tls_key
    tls_key: Path | None = None
    token: str | None = None

    def channel(self, target: str, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        if self.tls_ca is None and self.tls_cert is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, self.ssl_credentials(), options=options)

    def aio_channel(
        self, target: str, options: list[tuple[str, object]] | None = None
    ) -> grpc.aio.Channel:
        if self.tls_ca is None and self.tls_cert is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self.ssl_credentials(), options=options)

    def ssl_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes() if self.tls_ca else None,
            private_key=self.tls_key.read_bytes() if self.tls_key else None,
            certificate_chain=self.tls_cert.read_bytes() if self.tls_cert else None,
        )

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []


class ClientBase(ABC):
    """What both clients take: where, how long a call may take, credentials (or just a bearer
    `token`), and how many library-level retries (0: the channel's own only); each flavour
    opens its channels in `connect`."""

    def __init__(
        self,
        target: str = "localhost:50051",
        timeout_s: float = 10.0,
        credentials: Credentials | None = None,
        token: str | None = None,
        retries: int = RETRIES,
    ) -> None:
        self.credentials = credentials or Credentials(token=token)
        self.target, self.timeout_s, self.retries = target, timeout_s, retries
        self.metadata = self.credentials.metadata()
        self.connect()

    @abstractmethod
    def connect(self) -> None:
        """Open the channels and stubs this flavour calls through."""


class NluClient(ClientBase):
    """Blocking client. nlu.v1 calls go through one channel with the shipped service config
    (SERVICE_CONFIG); health checks through a plain one, which reaches a server that is not
    SERVING (the balanced channel takes such a server out of rotation, so it could not ask)."""

    def connect(self) -> None:
        self.channel = self.credentials.channel(self.target, CHANNEL_OPTIONS)
        self.health_channel = self.credentials.channel(self.target)
        self.stub = nlu_pb2_grpc.NluServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.health_channel)

    def __enter__(self) -> NluClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Callable[..., T], message: object) -> T:
        """`method(message)` within the deadline, retried as the module docstring says."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(message, timeout=max(remaining, 0.001), metadata=self.metadata)
            except grpc.RpcError as error:
                wait = next_wait_s(error, attempt, deadline - time.monotonic(), self.retries)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    def parse(self, text: str, **options) -> nlu_pb2.ParseResponse:
        return self.call(self.stub.Parse, request(text, **options))

    def parse_batch(self, texts: list[str], **options) -> list[nlu_pb2.ParseResponse]:
        batch = nlu_pb2.ParseBatchRequest(requests=[request(t, **options) for t in texts])
        return list(self.call(self.stub.ParseBatch, batch).responses)

    def parse_stream(self, texts: Iterable[str]) -> Iterator[nlu_pb2.ParseResponse]:
        """Answers in request order (request_id: the position); a refused item carries its
        `error`. A stream is not retried: it may have been partly answered."""
        return self.stub.ParseStream(
            (request(t, request_id=str(i)) for i, t in enumerate(texts)), metadata=self.metadata
        )

    def info(self) -> nlu_pb2.ModelInfo:
        return self.call(self.stub.GetModelInfo, nlu_pb2.GetModelInfoRequest())

    def health(self, service: str = "") -> str:
        response = self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()
        self.health_channel.close()


class AsyncNluClient(ClientBase):
    """The asyncio flavour of NluClient (grpc.aio), with the same deadlines and retries."""

    def connect(self) -> None:
        self.channel = self.credentials.aio_channel(self.target, CHANNEL_OPTIONS)
        self.stub = nlu_pb2_grpc.NluServiceStub(self.channel)

    async def __aenter__(self) -> AsyncNluClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: Callable, message: object):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            try:
                return await method(message, timeout=max(remaining, 0.001), metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                wait = next_wait_s(error, attempt, deadline - loop.time(), self.retries)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    async def parse(self, text: str, **options) -> nlu_pb2.ParseResponse:
        return await self.call(self.stub.Parse, request(text, **options))

    async def parse_batch(self, texts: list[str], **options) -> list[nlu_pb2.ParseResponse]:
        batch = nlu_pb2.ParseBatchRequest(requests=[request(t, **options) for t in texts])
        return list((await self.call(self.stub.ParseBatch, batch)).responses)

    async def parse_stream(self, texts: Iterable[str]) -> AsyncIterator[nlu_pb2.ParseResponse]:
        call = self.stub.ParseStream(
            (request(t, request_id=str(i)) for i, t in enumerate(texts)), metadata=self.metadata
        )
        async for response in call:
            yield response

    async def info(self) -> nlu_pb2.ModelInfo:
        return await self.call(self.stub.GetModelInfo, nlu_pb2.GetModelInfoRequest())

    async def close(self) -> None:
        await self.channel.close()


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def connection_options(suppress: bool) -> argparse.ArgumentParser:
    """Where and how to connect: accepted before or after the subcommand (after it, a flag
    overrides one given before; SUPPRESS keeps an absent one from resetting it)."""
    p = argparse.ArgumentParser(add_help=False)
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    p.add_argument("--target", default=default("localhost:50051"))
    p.add_argument("--timeout", type=float, default=default(10.0), help="seconds per call")
    p.add_argument("--tls-ca", type=Path, default=default(None), help="PEM CA (TLS)")
    p.add_argument("--tls-cert", type=Path, default=default(None), help="client cert (mTLS)")
    p.add_argument("--tls-key", type=Path, default=default(None), help="key of --tls-cert")
    p.add_argument("--token-file", type=Path, default=default(None), help="bearer token file")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service.client",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
        parents=[connection_options(suppress=False)],
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = [connection_options(suppress=True)]
    parse = sub.add_parser("parse", help="parse one utterance", parents=common)
    parse.add_argument("text")
    batch = sub.add_parser(
        "batch",
        help="parse every line of FILE ('-': stdin); request_id = its line number; blank "
        "lines skipped (named on stderr); sent in ParseBatch calls of --batch-size",
        parents=common,
    )
    batch.add_argument("file")
    batch.add_argument(
        "--batch-size", type=positive, default=256, help="lines per call (the server's limit)"
    )
    for sp in (parse, batch):
        sp.add_argument("--top-k", type=non_negative, default=0)
        sp.add_argument("--policy", choices=sorted(POLICIES), default="default")
        sp.add_argument("--threshold", type=float)
    sub.add_parser("info", help="what the server is serving", parents=common)
    health = sub.add_parser("health", help="grpc.health.v1 status", parents=common)
    health.add_argument(
        "--wait", type=float, default=0.0, metavar="S",
        help="poll up to S seconds until SERVING (exit 1 if it never is)",
    )  # fmt: skip
    return p


def wait_serving(client: NluClient, seconds: float) -> str:
    """The health status once SERVING, or the last one seen (or the last error) after `seconds`."""
    deadline, status = time.monotonic() + seconds, "UNREACHABLE"
    while True:
        try:
            status = client.health()
        except grpc.RpcError as e:
            status = f"{e.code().name}: {e.details()}"
        if status == "SERVING" or time.monotonic() >= deadline:
            return status
        time.sleep(0.2)


def read_lines(file: str) -> tuple[list[tuple[int, str]], list[int]]:
    """(line number, text) of every non-blank line, and the blank lines' numbers (1-based)."""
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    lines = list(enumerate(text.splitlines(), start=1))
    return [(n, t) for n, t in lines if t.strip()], [n for n, t in lines if not t.strip()]


def parse_file(client: NluClient, file: str, batch_size: int, **options) -> Iterator[dict]:
    """Every line's answer, in order, with its line number as request_id, `batch_size` lines
    per call; the blank lines skipped are named on stderr."""
    lines, blank = read_lines(file)
    if blank:
        shown = ", ".join(map(str, blank[:20])) + (" ..." if len(blank) > 20 else "")
        print(f"skipped {len(blank)} blank line(s): {shown}", file=sys.stderr)
    for start in range(0, len(lines), batch_size):
        chunk = lines[start : start + batch_size]
        batch = nlu_pb2.ParseBatchRequest(
            requests=[request(t, request_id=str(n), **options) for n, t in chunk]
        )
        for response in client.call(client.stub.ParseBatch, batch).responses:
            yield as_dict(response)


def run(client: NluClient, args: argparse.Namespace) -> None:
    options = {"top_k": getattr(args, "top_k", 0), "policy": getattr(args, "policy", "default")}
    options["threshold"] = getattr(args, "threshold", None)
    if args.command == "parse":
        print(json.dumps(as_dict(client.parse(args.text, **options)), indent=2))
    elif args.command == "batch":
        for answer in parse_file(client, args.file, args.batch_size, **options):
            print(json.dumps(answer), flush=True)
    elif args.command == "info":
        print(json.dumps(as_dict(client.info()), indent=2))
    else:
        status = wait_serving(client, args.wait) if args.wait else client.health()
        print(status)
        if status != "SERVING":
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together (the client certificate and its key)")
    try:
        token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else None
        credentials = Credentials(args.tls_ca, args.tls_cert, args.tls_key, token)
        client = NluClient(args.target, args.timeout, credentials)
    except OSError as e:
        p.exit(2, f"{p.prog}: error: {e.filename}: {e.strerror}\n")
    try:
        run(client, args)
    except OSError as e:
        p.exit(2, f"{p.prog}: error: {e.filename}: {e.strerror}\n")
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
