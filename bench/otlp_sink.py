"""An OTLP/gRPC trace receiver that counts spans and keeps none: the far end of a traced bench.

`python -m bench.otlp_sink 4317` listens on 127.0.0.1:4317 until SIGTERM or SIGINT, then
prints how many spans and export calls it received. Run the bench with
`PAYMESH_OTEL_ENDPOINT=http://127.0.0.1:4317` to measure tracing on (bench/README.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts what it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self.calls = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Counts the request's spans."""
        count = sum(
            len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
        )
        with self._lock:
            self.spans += count
            self.calls += 1
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    """Serves on the port given until stopped."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4317
    sink = Sink()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1)
    print(f"otlp sink: {sink.spans} spans in {sink.calls} export calls")


if __name__ == "__main__":
    main()
