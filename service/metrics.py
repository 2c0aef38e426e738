"""Every Prometheus metric of the service, `nlu_` prefixed, in one registry.

Under a supervisor (`service.workers`) each worker writes its values to prometheus_client's
multiprocess files and the supervisor serves their sum; each gauge says how its workers'
values combine (ignored by a lone server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

REGISTRY = CollectorRegistry()
# Sub-millisecond to 30 s: the encoder path lives around 1 ms, a CPU generator at 2-15 s.
LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REQUESTS = Counter(
    "nlu_requests_total",
    "RPCs answered, by method and status code",
    ["method", "code"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "nlu_request_duration_seconds",
    "RPC wall-clock time",
    ["method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "nlu_stage_duration_seconds",
    "Time per pipeline stage (tokenize, queue, inference, decode); batch stages once per batch, "
    "queue once per utterance",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "nlu_batch_size",
    "Utterances per inference batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "nlu_queue_depth",
    "Utterances waiting for a batch",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
ROUTES = Counter("nlu_route_total", "Answers by source", ["source"], registry=REGISTRY)
FAILURES = Counter(
    "nlu_request_failure_total",
    "Failed utterances or RPCs by reason",
    ["reason"],
    registry=REGISTRY,
)
GENERATOR_DURATION = Histogram(
    "nlu_generator_duration_seconds",
    "Generator backend call time (answers only)",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
GENERATOR_FAILURES = Counter(
    "nlu_generator_failure_total",
    "Routed utterances answered by the encoder instead, by reason",
    ["reason"],
    registry=REGISTRY,
)
GENERATOR_READY = Gauge(
    "nlu_generator_ready",
    "1 once the generator backend has loaded (0 while it loads in the background, or when "
    "loading failed); absent without a generator",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
OUT_OF_SCOPE = Counter(
    "nlu_out_of_scope_total", "Answers flagged out-of-scope by the encoder", registry=REGISTRY
)
EXTENSION_ANSWERS = Counter(
    "nlu_extension_answer_total", "Answers given by an extension intent", registry=REGISTRY
)
EXTENSION_RELOADS = Counter(
    "nlu_extension_reload_total",
    "Extension-intent file loads by result (ok: swapped in; error: refused, previous set kept)",
    ["result"],
    registry=REGISTRY,
)
EXTENSION_INTENTS = Gauge(
    "nlu_extension_intents",
    "Extension intents live now",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
MODEL_INFO = Gauge(
    "nlu_model_info",
    "Always 1; labels describe the bundle being served",
    ["model_version", "encoder", "dataset", "variant", "provider"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)


def only_metrics(registry: CollectorRegistry) -> Callable:
    """The exposition at GET /metrics and nothing else: prometheus_client answers every path
    and method with the metrics, which an on-call engineer would not expect of a port."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics is served on this port\n"]
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        return exposition(environ, start_response)

    return app


class QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_metrics(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose GET /metrics of `registry` on its own HTTP port (a daemon thread)."""
    if port:
        server = make_server("", port, only_metrics(registry), ThreadingWSGIServer, QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
