"""A minimal OTLP/gRPC trace receiver on the opentelemetry-proto stubs: what the tracing test
checks spans against and what the serve suite's traced row exports to (a collector's place)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, and the service names of their resources."""

    def __init__(self) -> None:
        self.spans: list = []
        self.services: set[str] = set()
        self.lock = threading.Lock()
        self.server: grpc.Server | None = None
        self.port = 0

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.services.add(attribute.value.string_value)
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list:
        with self.lock:
            return [s for s in self.spans if s.trace_id.hex() == trace_id]

    def start(self) -> SpanSink:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)

    def environment(self) -> dict[str, str]:
        """The OTEL_* variables that send a server's spans here, promptly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
