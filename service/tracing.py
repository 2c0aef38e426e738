"""OpenTelemetry tracing, off unless the standard `OTEL_*` variables configure an exporter.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
`OTEL_TRACES_EXPORTER=otlp` (`none` turns it off whatever else is set): spans go over OTLP/gRPC,
batched, configured by the SDK's own variables (endpoint, headers, `OTEL_SERVICE_NAME`, default
`nlu-service`, `OTEL_BSP_*`). Spans:

- one per RPC from the official gRPC server instrumentation and one per HTTP call from the ASGI
  middleware, both continuing the caller's W3C `traceparent`;
- `queue` per utterance (enqueued → its batch starts), a child of its call's span;
- one `batch` span per inference batch with `tokenize`, `infer` and `decode` children, linked
  from every utterance it carried (a batch serves many traces, so it belongs to none);
- `route`, and `generate` around the generator call, whose HTTP request (httpx instrumentation)
  carries the trace on to an OpenAI-compatible server.

Attributes carry sizes, intents and sources, never the request text. When off, `ENABLED` is
False and the stage code does not touch OpenTelemetry at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context, trace

ENABLED = False
TRACER_NAME = "nlu-service"
SPAN_NAMES = {"inference": "infer"}  # batch stage (its metric label) → span name


def wanted(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or exporter == "otlp"


def configure() -> bool:
    """Install the SDK, the OTLP exporter and the httpx client instrumentation when wanted;
    whether tracing is on. Called once, before the servers are built."""
    global ENABLED
    if not wanted():
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": TRACER_NAME}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    ENABLED = True
    return True


def shutdown() -> None:
    """Flush the spans still batched (a drain's last step)."""
    if ENABLED:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current() -> context.Context | None:
    """The calling request's context, to carry with a queued utterance (None when off)."""
    return context.get_current() if ENABLED else None


@contextmanager
def span(name: str, **attributes: object) -> Iterator[trace.Span | None]:
    """A span around a stage of the current request; nothing when off."""
    if not ENABLED:
        yield None
        return
    with tracer().start_as_current_span(name, attributes=attributes) as current_span:
        yield current_span


def record_batch(
    parents: Sequence[context.Context | None],
    enqueued_ns: Sequence[int],
    stage_ns: dict[str, tuple[int, int]],
    size: int,
) -> None:
    """After a batch: each utterance's `queue` span under its request, and the `batch` span
    with its stages, linked from every request (times are wall-clock nanoseconds)."""
    if not ENABLED:
        return
    tr = tracer()
    started = min(start for start, _ in stage_ns.values())
    ended = max(end for _, end in stage_ns.values())
    links = []
    for parent, enqueued in zip(parents, enqueued_ns, strict=True):
        queued = tr.start_span("queue", context=parent, start_time=enqueued)
        queued.end(end_time=started)
        links.append(trace.Link(queued.get_span_context()))
    batch = tr.start_span(
        "batch", context=context.Context(), links=links, start_time=started,
        attributes={"nlu.batch_size": size},
    )  # fmt: skip
    inside = trace.set_span_in_context(batch)
    for stage, (start, end) in stage_ns.items():
        name = SPAN_NAMES.get(stage, stage)
        tr.start_span(name, context=inside, start_time=start).end(end_time=end)
    batch.end(end_time=ended)
